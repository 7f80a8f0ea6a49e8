package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

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

// eventsOnlyFile writes, with bbolt directly, the file a killed
// `compact --out` used to leave: a valid bbolt database holding part of a
// stream's events and no meta or streams bucket.
func eventsOnlyFile(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sselog.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		events, err := tx.CreateBucket([]byte("events"))
		if err != nil {
			return err
		}
		s, err := events.CreateBucket([]byte("s"))
		if err != nil {
			return err
		}
		id := store.MinIDAt(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		for i := range n {
			id[15] = byte(i)
			// Stored form: version 1, no type, the data.
			if err := s.Put(id[:], fmt.Appendf([]byte{1, 0}, `{"n":%d}`, i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestServeRefusesForeignFile: `sselog serve` on a bbolt file that is not
// an sselog database exits non-zero, naming the file and what it lacks,
// serves nothing and leaves the file as it was. (It used to add the
// missing buckets and serve the partial events as a whole log.)
func TestServeRefusesForeignFile(t *testing.T) {
	t.Parallel()
	path := eventsOnlyFile(t, 200)
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c := startChild(t, "serve", "--addr", "127.0.0.1:0", "--db", path)
	err = c.wait(t, startTimeout)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("serve on a foreign file: %v, want a non-zero exit status", err)
	}
	stderr := c.stderr.String()
	t.Logf("stderr: %s", stderr)
	for _, want := range []string{path, "not an sselog database", `lacks bucket "streams", bucket "meta"`} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr %q does not say %q", stderr, want)
		}
	}
	if strings.Contains(c.stdout.String(), "serving") {
		t.Errorf("serve claimed to serve: %q", c.stdout)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
		t.Error("the refused file was changed")
	}
	// The other commands refuse it too, with the same sentinel.
	for _, cmd := range []string{"check", "inspect"} {
		if _, _, err := runQuick(t, cmd, "--db", path); !errors.Is(err, store.ErrNotLog) {
			t.Errorf("%s: %v, want store.ErrNotLog", cmd, err)
		}
	}
}

// TestCheckCountersMismatch: `sselog check` compares every stream's
// counters with the events it holds and exits non-zero when they disagree,
// as on the file a server made of a partial copy: counters for one event
// over many. (It used to say "ok, 1 streams, 1 events".)
func TestCheckCountersMismatch(t *testing.T) {
	t.Parallel()
	path := tightDatabase(t, 300)
	c := startChild(t, "check", "--db", path)
	if err := c.wait(t, startTimeout); err != nil {
		t.Fatalf("check of a good file: %v\nstderr:\n%s", err, c.stderr)
	}
	if !strings.Contains(c.stdout.String(), "ok, 1 streams, 300 events") {
		t.Fatalf("check of a good file said %q", c.stdout)
	}

	// The counters of one event, over the 300 stored.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		st := tx.Bucket([]byte("streams"))
		v := bytes.Clone(st.Get([]byte("s")))
		binary.BigEndian.PutUint64(v, 1)
		return st.Put([]byte("s"), v)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	c = startChild(t, "check", "--db", path)
	err = c.wait(t, startTimeout)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("check of mismatched counters: %v, want a non-zero exit status\nstdout: %s", err, c.stdout)
	}
	stderr := c.stderr.String()
	t.Logf("stderr: %s", stderr)
	for _, want := range []string{path, "damaged", "stream s: its counters say 1 events", "it holds 300"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr %q does not say %q", stderr, want)
		}
	}
	if strings.Contains(c.stdout.String(), "ok") {
		t.Errorf("check said %q", c.stdout)
	}
}
