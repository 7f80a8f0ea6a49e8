package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

// TestObserveCommit: each commit is reported with the events it stored,
// and a failed one as failed with none (a key in the events bucket that
// is not a stream's bucket makes the commit to that name fail).
func TestObserveCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	l := testkit.OpenAt(t, path, store.Options{})
	mustAppend(t, l, "s", makeEvents("t", 1, 0)...)
	mustClose(t, l)
	db, err = bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("events")).Put([]byte("bad"), []byte("x")) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	var mu sync.Mutex
	var seen []store.CommitStats
	l = testkit.OpenAt(t, path, store.Options{ObserveCommit: func(st store.CommitStats) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, st)
	}})
	mustAppend(t, l, "s", makeEvents("t", 3, 0)...)
	if _, err := l.Append(context.Background(), "bad", makeEvents("t", 1, 0)); !errors.Is(err, store.ErrWrite) {
		t.Fatalf("append to the broken name: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[0].Events != 3 || seen[0].Failed || seen[0].Took <= 0 || !seen[1].Failed || seen[1].Events != 0 {
		t.Fatalf("observed %+v, want a commit of 3 events, then a failed one", seen)
	}
}
