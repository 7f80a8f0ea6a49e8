package store

import (
	"context"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestKeyIndexStress runs duplicates of colliding keys, through both of
// AppendOnce's paths, against a concurrent expiry, over rounds that reuse
// the keys past their window: every duplicate gets one answer, and each
// key is stored once per window.
func TestKeyIndexStress(t *testing.T) {
	for iter := range 20 {
		var mu sync.Mutex
		now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
		clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		l, err := Open(filepath.Join(t.TempDir(), fmt.Sprint(iter, ".db")), Options{Now: clock, IdempotencyWindow: time.Minute, MaxStreams: 4})
		if err != nil {
			t.Fatal(err)
		}
		l.keys.sum = func(string, string) uint64 { return 7 }
		ctx := context.Background()
		const nk, dup = 8, 25
		stored := map[string][][]ID{}
		var smu sync.Mutex
		round := func(ver int) {
			var wg sync.WaitGroup
			stop := make(chan struct{})
			var exp atomic.Int64
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					select {
					case <-stop:
						return
					default:
					}
					n, _, err := l.ExpireKeys(clock(), 3)
					if err != nil {
						t.Error(err)
						return
					}
					exp.Add(int64(n))
				}
			}()
			answers := make([][][]ID, nk)
			for k := range nk {
				answers[k] = make([][]ID, dup)
				for d := range dup {
					wg.Go(func() {
						name := fmt.Sprint("k", k)
						kk := Key{Name: name, Digest: sha256.Sum256(fmt.Append(nil, ver))}
						var ids []ID
						var rep bool
						var err error
						if d%2 == 0 {
							ids, rep, err = l.AppendOnce(ctx, "s", kk, []Event{{Data: []byte(`1`)}})
						} else {
							ids, rep, err = l.AppendOnceQueued(ctx, "s", kk, []Event{{Data: []byte(`1`)}})
						}
						if err != nil {
							t.Error(err)
							return
						}
						answers[k][d] = ids
						if !rep {
							smu.Lock()
							stored[name] = append(stored[name], ids)
							smu.Unlock()
						}
					})
				}
			}
			wg.Wait()
			close(stop)
			<-done
			for k := range nk {
				for d := range dup {
					if !slices.Equal(answers[k][d], answers[k][0]) {
						t.Fatalf("iter %d ver %d k%d: answer %d %v != %v", iter, ver, k, d, answers[k][d], answers[k][0])
					}
				}
			}
		}
		round(1)
		mu.Lock()
		now = now.Add(time.Minute)
		mu.Unlock()
		round(2)
		round(2)
		mu.Lock()
		now = now.Add(30 * time.Second)
		mu.Unlock()
		round(2)
		for k := range nk {
			if n := len(stored[fmt.Sprint("k", k)]); n != 2 {
				t.Fatalf("iter %d k%d stored %d times", iter, k, n)
			}
		}
		l.Close()
	}
}
