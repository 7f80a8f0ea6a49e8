package testkit

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/sselog/sselog/store"
)

// Open opens a fresh log in tb's temp dir with default options and closes
// it when the test ends.
func Open(tb testing.TB) *store.Log {
	tb.Helper()
	return OpenAt(tb, filepath.Join(tb.TempDir(), "events.db"), store.Options{})
}

// OpenAt opens the log at path and closes it when the test ends. A test
// that closes the log itself (to reopen it, or to test Close) is fine: the
// cleanup tolerates ErrClosed. Opening a database a stopped server left
// also proves that server released it: a held one fails after the
// store's open timeout.
func OpenAt(tb testing.TB, path string, opts store.Options) *store.Log {
	tb.Helper()
	l, err := store.Open(path, opts)
	if err != nil {
		tb.Fatalf("open %s: %v", path, err)
	}
	tb.Cleanup(func() {
		if err := l.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			tb.Errorf("close %s: %v", path, err)
		}
	})
	return l
}
