package store_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

func key(name, body string) store.Key {
	return store.Key{Name: name, Digest: sha256.Sum256([]byte(body))}
}

func mustAppendOnce(tb testing.TB, l *store.Log, stream string, k store.Key, evs ...store.Event) ([]store.ID, bool) {
	tb.Helper()
	ids, replayed, err := l.AppendOnce(tb.Context(), stream, k, evs)
	if err != nil {
		tb.Fatalf("append once %s/%s: %v", stream, k.Name, err)
	}
	return ids, replayed
}

func TestAppendOnceReplays(t *testing.T) {
	l := testkit.Open(t)
	first, replayed := mustAppendOnce(t, l, "s", key("k1", "a"), makeEvents("t", 3, 0)...)
	if replayed || len(first) != 3 {
		t.Fatalf("first call: ids %v replayed %v", first, replayed)
	}
	// The repeat carries other events: it must store none of them.
	again, replayed := mustAppendOnce(t, l, "s", key("k1", "a"), makeEvents("t", 5, 100)...)
	if !replayed || !slices.Equal(again, first) {
		t.Fatalf("repeat: ids %v replayed %v, want %v replayed", again, replayed, first)
	}
	// The same key names another request in another stream.
	other, replayed := mustAppendOnce(t, l, "s2", key("k1", "b"), makeEvents("t", 1, 0)...)
	if replayed || len(other) != 1 {
		t.Fatalf("same key in another stream: ids %v replayed %v", other, replayed)
	}
	_, _, err := l.AppendOnce(t.Context(), "s", key("k1", "b"), makeEvents("t", 3, 0))
	if !errors.Is(err, store.ErrKeyReused) {
		t.Fatalf("same key, other digest: err %v, want ErrKeyReused", err)
	}
	if got := idsOf(readAll(t, l, "s")); !slices.Equal(got, first) {
		t.Fatalf("stream holds %v, want only %v", got, first)
	}
	// Plain appends are untouched by keys.
	mustAppend(t, l, "s", makeEvents("t", 1, 9)...)
	if n := len(readAll(t, l, "s")); n != 4 {
		t.Fatalf("stream holds %d events, want 4", n)
	}
}

func TestAppendOnceInvalidKey(t *testing.T) {
	l := testkit.Open(t)
	long := string(make([]byte, store.MaxKeyLen+1))
	for _, name := range []string{"", "a b", "tab\t", "é", "nul\x00", "\x7f", long} {
		_, _, err := l.AppendOnce(t.Context(), "s", key(name, "a"), makeEvents("t", 1, 0))
		if !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("key %q: err %v, want ErrInvalidKey", name, err)
		}
	}
	ok := make([]byte, store.MaxKeyLen)
	for i := range ok {
		ok[i] = byte('!' + i%94)
	}
	if _, replayed := mustAppendOnce(t, l, "s", key(string(ok), "a"), makeEvents("t", 1, 0)...); replayed {
		t.Fatal("a fresh 255-character key was replayed")
	}
	if n := len(readAll(t, l, "s")); n != 1 {
		t.Fatalf("stream holds %d events, want 1 (refused keys store nothing)", n)
	}
}

// TestAppendOnceConcurrent sends many calls with one key while the writer
// is busy, so that they meet in the writer (none is committed when they
// look the key up), and more while the first commit runs.
func TestAppendOnceConcurrent(t *testing.T) {
	l := testkit.Open(t)
	release := holdWriter(t, l)
	const n = 40
	var wg sync.WaitGroup
	got := make([][]store.ID, n)
	errs := make([]error, n)
	replays := make([]bool, n)
	for i := range n {
		wg.Go(func() {
			got[i], replays[i], errs[i] = l.AppendOnce(context.Background(), "s", key("dup", "a"), makeEvents("t", 2, 0))
		})
	}
	testkit.WaitFor(t, "the duplicates to queue", func() bool { return l.QueuedAppends() >= n/2 })
	release()
	wg.Wait()
	stored := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("call %d: %v", i, errs[i])
		}
		if !slices.Equal(got[i], got[0]) {
			t.Fatalf("call %d got ids %v, call 0 got %v", i, got[i], got[0])
		}
		if !replays[i] {
			stored++
		}
	}
	if stored != 1 {
		t.Fatalf("%d calls stored, want exactly 1", stored)
	}
	if evs := readAll(t, l, "s"); len(evs) != 2 {
		t.Fatalf("stream holds %d events, want 2", len(evs))
	}
}

func TestAppendOnceSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	l := testkit.OpenAt(t, path, store.Options{})
	first, _ := mustAppendOnce(t, l, "s", key("k", "a"), makeEvents("t", 2, 0)...)
	mustClose(t, l)
	l = testkit.OpenAt(t, path, store.Options{})
	again, replayed := mustAppendOnce(t, l, "s", key("k", "a"), makeEvents("t", 2, 0)...)
	if !replayed || !slices.Equal(again, first) {
		t.Fatalf("after restart: ids %v replayed %v, want %v replayed", again, replayed, first)
	}
	if err := store.Check(path); err == nil {
		t.Fatal("Check of an open database succeeded") // sanity: it is locked
	}
	mustClose(t, l)
	if err := store.Check(path); err != nil {
		t.Fatalf("check: %v", err)
	}
}

// TestAppendOnceWindow steps an injected clock past the window: the key
// is forgotten at once by AppendOnce, and ExpireKeys removes it in
// bounded chunks, oldest first, without touching a key used again.
func TestAppendOnceWindow(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := newFakeClock(start)
	l := testkit.OpenAt(t, filepath.Join(t.TempDir(), "log.db"), store.Options{Now: clock.Now, IdempotencyWindow: time.Hour})
	if l.IdempotencyWindow() != time.Hour {
		t.Fatalf("window %v", l.IdempotencyWindow())
	}
	for i := range 5 {
		mustAppendOnce(t, l, "s", key(fmt.Sprint("k", i), "a"), makeEvents("t", 1, i)...)
	}
	// Just inside the window: remembered, nothing to expire.
	clock.Set(start.Add(time.Hour - time.Millisecond))
	if _, replayed := mustAppendOnce(t, l, "s", key("k0", "a"), makeEvents("t", 1, 0)...); !replayed {
		t.Fatal("k0 forgotten inside the window")
	}
	if n, more, err := l.ExpireKeys(clock.Now(), 100); err != nil || n != 0 || more {
		t.Fatalf("expire inside the window: %d %v %v", n, more, err)
	}
	// At the window's end: forgotten, even before expiry runs. Using k0
	// again stores anew and starts a new window for it.
	clock.Set(start.Add(time.Hour))
	if _, replayed := mustAppendOnce(t, l, "s", key("k0", "b"), makeEvents("t", 1, 50)...); replayed {
		t.Fatal("k0 replayed at the end of its window")
	}
	k0, _ := mustAppendOnce(t, l, "s", key("k0", "b"), makeEvents("t", 1, 50)...)
	n, more, err := l.ExpireKeys(clock.Now(), 2)
	if err != nil || n != 2 || !more {
		t.Fatalf("first chunk: %d %v %v, want 2 true", n, more, err)
	}
	total := n
	for more {
		if n, more, err = l.ExpireKeys(clock.Now(), 2); err != nil {
			t.Fatal(err)
		}
		total += n
	}
	// Five old entries (k0's first use among them); k0's new record stays.
	if total != 5 {
		t.Fatalf("expired %d entries, want 5", total)
	}
	if again, replayed := mustAppendOnce(t, l, "s", key("k0", "b"), makeEvents("t", 1, 50)...); !replayed || !slices.Equal(again, k0) {
		t.Fatalf("k0's second use was expired with its first: %v %v", again, replayed)
	}
	if _, replayed := mustAppendOnce(t, l, "s", key("k3", "a"), makeEvents("t", 1, 3)...); replayed {
		t.Fatal("k3 replayed after expiry")
	}
	if evs := readAll(t, l, "s"); len(evs) != 7 {
		t.Fatalf("stream holds %d events, want 7", len(evs))
	}
}

// TestAppendOnceOutlivesEvents: a repeat after the events were deleted
// still gets their ids and stores nothing, and does not count as a new
// stream against MaxStreams.
func TestAppendOnceOutlivesEvents(t *testing.T) {
	l := testkit.OpenAt(t, filepath.Join(t.TempDir(), "log.db"), store.Options{MaxStreams: 1})
	first, _ := mustAppendOnce(t, l, "a", key("k", "x"), makeEvents("t", 1, 0)...)
	if _, err := l.DeleteStream(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	// The repeat reaches the writer's own lookup (and admit), as one that
	// raced with the first commit does.
	again, replayed, err := l.AppendOnceQueued(t.Context(), "a", key("k", "x"), makeEvents("t", 1, 0))
	if err != nil || !replayed || !slices.Equal(again, first) {
		t.Fatalf("repeat after deletion: %v %v %v", again, replayed, err)
	}
	if evs := readAll(t, l, "a"); len(evs) != 0 {
		t.Fatalf("deleted stream holds %d events after a repeat", len(evs))
	}
	// Had the repeat counted "a" as created, this would be refused.
	mustAppend(t, l, "b", makeEvents("t", 1, 0)...)
	// With the one slot taken, a repeat to "a" still gets its answer (it
	// creates nothing); a new key there is refused.
	again, replayed, err = l.AppendOnceQueued(t.Context(), "a", key("k", "x"), makeEvents("t", 1, 0))
	if err != nil || !replayed || !slices.Equal(again, first) {
		t.Fatalf("repeat with every stream slot taken: %v %v %v", again, replayed, err)
	}
	if _, _, err := l.AppendOnceQueued(t.Context(), "a", key("k2", "x"), makeEvents("t", 1, 0)); !errors.Is(err, store.ErrTooManyStreams) {
		t.Fatalf("new key to a new stream over the limit: %v, want ErrTooManyStreams", err)
	}
	mustAppend(t, l, "b", makeEvents("t", 1, 1)...)
}
