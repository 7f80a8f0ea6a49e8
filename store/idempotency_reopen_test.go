package store_test

import (
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sselog/sselog/store"
)

// TestAppendOnceReopenTwoRecords: a key reused after its window has two
// records until expiry removes the first. If, at Open, both are within
// the window (the window was raised, or the wall clock stepped back), the
// newer one must answer: a retry of the second request is replayed, not
// refused for the first one's digest.
func TestAppendOnceReopenTwoRecords(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	path := filepath.Join(t.TempDir(), "log.db")
	l, err := store.Open(path, store.Options{Now: clock, IdempotencyWindow: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	mustAppendOnce(t, l, "s", key("k", "A"), makeEvents("t", 1, 0)...)
	mu.Lock()
	now = now.Add(2 * time.Hour)
	mu.Unlock()
	second, replayed := mustAppendOnce(t, l, "s", key("k", "B"), makeEvents("t", 1, 1)...)
	if replayed {
		t.Fatal("reuse after the window replayed")
	}
	l.Close()

	l, err = store.Open(path, store.Options{Now: clock, IdempotencyWindow: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ids, replayed, err := l.AppendOnce(t.Context(), "s", key("k", "B"), makeEvents("t", 1, 1))
	if err != nil || !replayed || !slices.Equal(ids, second) {
		t.Fatalf("retry of the second request after reopen: ids %v replayed %v err %v; want %v replayed", ids, replayed, err, second)
	}
}

// TestAppendOnceReopenOlderExpires: the same, once the older record has
// left the (new) window but before a retention pass removes it: the retry
// of the second request is replayed, not stored a second time.
func TestAppendOnceReopenOlderExpires(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	path := filepath.Join(t.TempDir(), "log.db")
	l, err := store.Open(path, store.Options{Now: clock, IdempotencyWindow: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	mustAppendOnce(t, l, "s", key("k", "A"), makeEvents("t", 1, 0)...)
	advance(2 * time.Hour)
	second, _ := mustAppendOnce(t, l, "s", key("k", "B"), makeEvents("t", 1, 1)...)
	l.Close()

	l, err = store.Open(path, store.Options{Now: clock, IdempotencyWindow: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	advance(23 * time.Hour) // A's record: 25h old (expired); B's: 23h (live)
	ids, replayed, err := l.AppendOnce(t.Context(), "s", key("k", "B"), makeEvents("t", 1, 1))
	if err != nil || !replayed || !slices.Equal(ids, second) {
		t.Errorf("retry of B: ids %v replayed %v err %v; want %v replayed", ids, replayed, err, second)
	}
	if n := len(readAll(t, l, "s")); n != 2 {
		t.Errorf("stream holds %d events, want 2", n)
	}
}
