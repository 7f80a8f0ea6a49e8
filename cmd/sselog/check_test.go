package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sselog/sselog/store"
)

// tightDatabase writes a database of n events with no slack past its last
// page, so that cutting it anywhere truncates real pages.
func tightDatabase(t *testing.T, n int) string {
	t.Helper()
	dir := t.TempDir()
	l, err := store.Open(filepath.Join(dir, "src.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	events := make([]store.Event, n)
	for i := range events {
		events[i] = store.Event{Data: bytes.Repeat([]byte("x"), 200)}
	}
	if _, err := l.Append(context.Background(), "s", events); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "sselog.db")
	if _, err := store.Compact(path, filepath.Join(dir, "src.db")); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCheckCommand(t *testing.T) {
	t.Parallel()
	path := tightDatabase(t, 1000)
	stdout, _, err := runQuick(t, "check", "--db", path)
	if err != nil || !strings.Contains(stdout, "ok, 1 streams, 1000 events") {
		t.Fatalf("check of a good file: %q, %v", stdout, err)
	}
	good, _ := os.ReadFile(path)
	if err := os.WriteFile(path, good[:len(good)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = runQuick(t, "check", "--db", path)
	if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), "truncated") || !strings.Contains(err.Error(), path) {
		t.Fatalf("check of a truncated file: %v", err)
	}
	if _, _, err := runQuick(t, "check", "--db", filepath.Join(t.TempDir(), "missing.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("check of a missing file: %v", err)
	}
}

// TestServeRefusesDamagedDatabase: the server does not start on a damaged
// file (the copies in testdata/corrupt), says which file and what is wrong,
// and leaves it as it was.
func TestServeRefusesDamagedDatabase(t *testing.T) {
	t.Parallel()
	const dir = "../../testdata/corrupt"
	for _, name := range []string{"empty", "short", "truncated", "garbage", "torn", "flipped"} {
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(dir, name+".db"))
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(t.TempDir(), "sselog.db")
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err = runQuick(t, "serve", "--addr", "127.0.0.1:0", "--db", p)
			if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), p) {
				t.Fatalf("serve on a %s file: %v, want ErrCorrupt naming it", name, err)
			}
			after, _ := os.ReadFile(p)
			if !bytes.Equal(after, b) {
				t.Fatal("the damaged file was changed")
			}
			// sselog check says the same.
			if _, _, err := runQuick(t, "check", "--db", p); !errors.Is(err, store.ErrCorrupt) {
				t.Fatalf("check of a %s file: %v", name, err)
			}
		})
	}
}
