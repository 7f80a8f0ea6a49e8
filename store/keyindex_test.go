package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestKeyIndexCollisions makes every key share one hash: keys must still
// be told apart by their records, stored once each, replayed exactly,
// refused for another digest, and expired one by one.
func TestKeyIndexCollisions(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	l, err := Open(filepath.Join(t.TempDir(), "log.db"), Options{Now: clock, IdempotencyWindow: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.keys.sum = func(string, string) uint64 { return 42 }
	ctx := context.Background()
	key := func(name string, body int) Key {
		return Key{Name: name, Digest: sha256.Sum256(fmt.Append(nil, body))}
	}
	ev := []Event{{Data: []byte(`1`)}}
	first := map[string][]ID{}
	for i := range 20 {
		name := fmt.Sprint("k", i)
		ids, replayed, err := l.AppendOnce(ctx, "s", key(name, i), ev)
		if err != nil || replayed {
			t.Fatalf("%s: %v replayed=%v", name, err, replayed)
		}
		first[name] = ids
		if i%5 == 4 {
			advance(time.Second) // records of several milliseconds
		}
	}
	if n := l.IdempotencyKeys(); n != 20 {
		t.Fatalf("index holds %d keys, want 20", n)
	}
	for name, ids := range first {
		var i int
		fmt.Sscanf(name, "k%d", &i)
		again, replayed, err := l.AppendOnce(ctx, "s", key(name, i), ev)
		if err != nil || !replayed || !slices.Equal(again, ids) {
			t.Fatalf("%s repeated: %v %v %v, want %v", name, again, replayed, err, ids)
		}
		if _, _, err := l.AppendOnce(ctx, "s", key(name, i+100), ev); !errors.Is(err, ErrKeyReused) {
			t.Fatalf("%s with another digest: %v", name, err)
		}
	}
	// The same name in another stream is another key.
	if _, replayed, err := l.AppendOnce(ctx, "t", key("k3", 3), ev); err != nil || replayed {
		t.Fatalf("k3 in another stream: %v replayed=%v", err, replayed)
	}
	// The first five keys' window ends; k0 is used again, then expiry
	// removes the old records and leaves k0's new one.
	advance(time.Minute - 4*time.Second)
	k0, replayed, err := l.AppendOnce(ctx, "s", key("k0", 7), ev)
	if err != nil || replayed {
		t.Fatalf("k0 after its window: %v replayed=%v", err, replayed)
	}
	n, more, err := l.ExpireKeys(clock(), 100)
	if err != nil || n != 5 || more {
		t.Fatalf("expire: %d %v %v, want 5", n, more, err)
	}
	if got := l.IdempotencyKeys(); got != 21-5+1 {
		t.Fatalf("index holds %d keys after expiry, want 17", got)
	}
	if again, replayed, err := l.AppendOnce(ctx, "s", key("k0", 7), ev); err != nil || !replayed || !slices.Equal(again, k0) {
		t.Fatalf("k0's new record: %v %v %v", again, replayed, err)
	}
	if again, replayed, err := l.AppendOnce(ctx, "s", key("k9", 9), ev); err != nil || !replayed || !slices.Equal(again, first["k9"]) {
		t.Fatalf("k9 within its window: %v %v %v", again, replayed, err)
	}
}

// TestKeyIndexMemory measures what a key costs the index (the README
// states the figure it logs, 37.7 bytes at a million keys) and holds it
// to at most 64.
func TestKeyIndexMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("fills an index of a million keys")
	}
	const n = 1_000_000
	x := newKeyIndex()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		x.add(x.hash("stream", fmt.Sprint("key-", i)), uint64(i)+1, 0)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.1f bytes a key at %d keys", per, x.len())
	if per > 64 {
		t.Errorf("%.1f bytes a key, want at most 64", per)
	}
	runtime.KeepAlive(x)
}
