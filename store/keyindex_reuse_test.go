package store

import (
	"context"
	"crypto/sha256"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestKeyReusedSharedPrefix: two keys share a hash and their first use's
// millisecond (so one index prefix). After the window, k is used again:
// the index keeps k2's old prefix p1 and k's new p2. A repeat of k's new
// request, which meets k's old record (expired, not yet removed) under
// p1, must still be answered from the new one.
func TestKeyReusedSharedPrefix(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	l, err := Open(filepath.Join(t.TempDir(), "log.db"), Options{Now: clock, IdempotencyWindow: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.keys.sum = func(string, string) uint64 { return 42 }
	ctx := context.Background()
	k := func(name, body string) Key { return Key{Name: name, Digest: sha256.Sum256([]byte(body))} }
	ev := []Event{{Data: []byte(`1`)}}
	for _, name := range []string{"k", "k2"} {
		if _, _, err := l.AppendOnce(ctx, "s", k(name, "a"), ev); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	first, replayed, err := l.AppendOnce(ctx, "s", k("k", "b"), ev)
	if err != nil || replayed {
		t.Fatalf("reuse: %v %v", replayed, err)
	}
	again, replayed, err := l.AppendOnce(ctx, "s", k("k", "b"), ev)
	if err != nil || !replayed || !slices.Equal(again, first) {
		t.Fatalf("repeat: ids %v replayed %v err %v; want %v replayed", again, replayed, err, first)
	}
}
