package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

// TestAppendOnceCommitFailure: a group whose commit fails (a key in the
// events bucket that is not a stream's bucket makes it fail) takes the
// keyed appends down with it: none is stored or indexed, and the retry is
// a first request, stored once.
func TestAppendOnceCommitFailure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	l := testkit.OpenAt(t, path, store.Options{})
	mustAppend(t, l, "s", makeEvents("t", 1, 0)...)
	mustClose(t, l)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("events")).Put([]byte("bad"), []byte("x")) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	l = testkit.OpenAt(t, path, store.Options{})
	release := holdWriter(t, l)
	errs := make(chan error, 3)
	go func() {
		_, _, err := l.AppendOnce(context.Background(), "s", key("k", "a"), makeEvents("t", 1, 1))
		errs <- err
	}()
	testkit.WaitFor(t, "1 queued", func() bool { return l.QueuedAppends() >= 1 })
	go func() {
		_, _, err := l.AppendOnce(context.Background(), "s", key("k", "a"), makeEvents("t", 1, 1))
		errs <- err
	}()
	testkit.WaitFor(t, "2 queued", func() bool { return l.QueuedAppends() >= 2 })
	go func() { _, err := l.Append(context.Background(), "bad", makeEvents("t", 1, 2)); errs <- err }()
	testkit.WaitFor(t, "3 queued", func() bool { return l.QueuedAppends() >= 3 })
	release()
	for range 3 {
		if err := <-errs; !errors.Is(err, store.ErrWrite) {
			t.Errorf("err %v, want ErrWrite", err)
		}
	}
	if n := l.IdempotencyKeys(); n != 0 {
		t.Errorf("index holds %d keys after a failed commit", n)
	}
	_, replayed := mustAppendOnce(t, l, "s", key("k", "a"), makeEvents("t", 1, 1)...)
	_, replayed2 := mustAppendOnce(t, l, "s", key("k", "a"), makeEvents("t", 1, 1)...)
	if replayed || !replayed2 {
		t.Errorf("retry replayed=%v, second retry replayed=%v", replayed, replayed2)
	}
	if n := len(readAll(t, l, "s")); n != 2 {
		t.Errorf("s holds %d events, want 2", n)
	}
}
