package store_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

// writeBolt creates a bbolt file at path holding what fill puts in it,
// without store: another program's database, or a partial copy.
func writeBolt(t *testing.T, path string, fill func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fill); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// putRawEvents stores n untyped events in stream s of the events bucket,
// encoded as store encodes them (version 1, no type, the data), with ids
// from one millisecond of 2026.
func putRawEvents(tx *bolt.Tx, s string, n int) error {
	events, err := tx.CreateBucketIfNotExists([]byte("events"))
	if err != nil {
		return err
	}
	b, err := events.CreateBucketIfNotExists([]byte(s))
	if err != nil {
		return err
	}
	id := store.MinIDAt(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	for i := range n {
		binary.BigEndian.PutUint32(id[12:], uint32(i+1))
		if err := b.Put(id[:], append([]byte{1, 0}, payload(i)...)); err != nil {
			return err
		}
	}
	return nil
}

// TestOpenRefusesForeignLayout: a bbolt file that holds buckets but not
// sselog's layout is refused by Open (and by Inspect, Check and Compact)
// with ErrNotLog, naming the file and what is missing, and is never
// changed. The first case is what a killed `compact --out` used to leave:
// 349,282 events and no meta or streams bucket, which a server then served
// as a whole log and published into.
func TestOpenRefusesForeignLayout(t *testing.T) {
	tests := []struct {
		name string
		fill func(tx *bolt.Tx) error
		want []string // in the error, besides the path
	}{
		{
			name: "events only",
			fill: func(tx *bolt.Tx) error { return putRawEvents(tx, "s", 500) },
			want: []string{`holds bucket "events" and lacks bucket "streams", bucket "meta", a layout version`},
		},
		{
			name: "no meta",
			fill: func(tx *bolt.Tx) error {
				if _, err := tx.CreateBucket([]byte("streams")); err != nil {
					return err
				}
				return putRawEvents(tx, "s", 5)
			},
			want: []string{`lacks bucket "meta", a layout version`},
		},
		{
			name: "no version",
			fill: func(tx *bolt.Tx) error {
				for _, name := range []string{"streams", "meta", "retention"} {
					if _, err := tx.CreateBucket([]byte(name)); err != nil {
						return err
					}
				}
				return putRawEvents(tx, "s", 5)
			},
			want: []string{"lacks a layout version"},
		},
		{
			name: "another program's database",
			fill: func(tx *bolt.Tx) error {
				b, err := tx.CreateBucket([]byte("users"))
				if err != nil {
					return err
				}
				return b.Put([]byte("alice"), []byte("admin"))
			},
			want: []string{`holds bucket "users" and lacks bucket "events"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "sselog.db")
			writeBolt(t, path, tt.fill)
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			requireNotLog := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, store.ErrNotLog) || !strings.Contains(err.Error(), path) {
					t.Fatalf("%s: %v, want ErrNotLog naming %s", what, err, path)
				}
				for _, w := range tt.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s: %v, want it to say %q", what, err, w)
					}
				}
			}

			l, err := store.Open(path, store.Options{})
			if err == nil {
				l.Close()
				t.Fatal("Open accepted the file")
			}
			t.Logf("Open: %v", err)
			requireNotLog("Open", err)
			_, err = store.Inspect(path)
			requireNotLog("Inspect", err)
			requireNotLog("Check", store.Check(path))
			_, err = store.Compact(filepath.Join(dir, "out.db"), path)
			requireNotLog("Compact", err)

			after, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(before, after) {
				t.Fatalf("the refused file changed: %v", err)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				t.Errorf("directory holds %v, want the refused file alone", entries)
			}
		})
	}
}

// TestOpenBoltWithoutBuckets: a bbolt file with no bucket at all (made by
// bbolt, or by a run killed before its first commit) is a new log.
func TestOpenBoltWithoutBuckets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sselog.db")
	writeBolt(t, path, func(*bolt.Tx) error { return nil })
	l := testkit.OpenAt(t, path, store.Options{})
	ids := mustAppend(t, l, "s", makeEvents("", 3, 0)...)
	mustClose(t, l)
	if err := store.Check(path); err != nil {
		t.Fatalf("Check after the first appends: %v", err)
	}
	l = testkit.OpenAt(t, path, store.Options{})
	if got := idsOf(readAll(t, l, "s")); !equalIDs(got, ids) {
		t.Fatalf("reopened: %v, want %v", got, ids)
	}
}

// counterDB writes a database whose streams have been through what changes
// counters: appends, a trim, a deletion, a deletion then a new publish. It
// returns the file's bytes.
func counterDB(t *testing.T) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "good.db")
	l := testkit.OpenAt(t, path, store.Options{})
	mustAppend(t, l, "a", makeEvents("x", 10, 0)...)
	mustAppend(t, l, "b", makeEvents("", 5, 10)...)
	mustAppend(t, l, "c", makeEvents("", 4, 20)...)
	mustAppend(t, l, "d", makeEvents("", 4, 30)...)
	if _, err := l.Trim("b", store.Cut{MaxEvents: 3}, 100); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"c", "d"} {
		if _, err := l.DeleteStream(t.Context(), s); err != nil {
			t.Fatal(err)
		}
	}
	mustAppend(t, l, "d", makeEvents("", 2, 40)...)
	mustClose(t, l)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// editCounters rewrites stream's entry in the streams bucket with edit,
// which gets a copy: count at [0:8], bytes at [8:16], the low-water mark at
// [16:32], the deletion flag at [32].
func editCounters(tx *bolt.Tx, stream string, edit func(c []byte)) error {
	st := tx.Bucket([]byte("streams"))
	c := bytes.Clone(st.Get([]byte(stream)))
	edit(c)
	return st.Put([]byte(stream), c)
}

// firstID is the oldest id stored in stream.
func firstID(tx *bolt.Tx, stream string) []byte {
	k, _ := tx.Bucket([]byte("events")).Bucket([]byte(stream)).Cursor().First()
	return bytes.Clone(k)
}

// TestCheckComparesCounters: Check compares each stream's counters with
// the events it holds, and the newest issued id with every stored id, and
// reports a disagreement as ErrCorrupt naming the stream. Every page of
// these files checks out; only the comparison finds the damage.
func TestCheckComparesCounters(t *testing.T) {
	good := counterDB(t)
	add := func(delta int64) func(c []byte) {
		return func(c []byte) { binary.BigEndian.PutUint64(c, uint64(int64(binary.BigEndian.Uint64(c))+delta)) }
	}
	tests := []struct {
		name string
		edit func(tx *bolt.Tx) error
		want string
	}{
		{
			name: "count one too many",
			edit: func(tx *bolt.Tx) error { return editCounters(tx, "a", add(1)) },
			want: "stream a: its counters say 11 events",
		},
		{
			// The kill-test file after a server accepted a publish: the
			// counters of one new event over hundreds of old ones.
			name: "counters rebuilt over older events",
			edit: func(tx *bolt.Tx) error { return editCounters(tx, "a", add(-9)) },
			want: "stream a: its counters say 1 events",
		},
		{
			name: "bytes off",
			edit: func(tx *bolt.Tx) error {
				return editCounters(tx, "b", func(c []byte) { c[15]-- })
			},
			want: "stream b: its counters say 3 events",
		},
		{
			name: "no counters",
			edit: func(tx *bolt.Tx) error { return tx.Bucket([]byte("streams")).Delete([]byte("a")) },
			want: "stream a holds 10 events",
		},
		{
			name: "events gone, counters kept",
			edit: func(tx *bolt.Tx) error { return tx.Bucket([]byte("events")).DeleteBucket([]byte("b")) },
			want: "stream b: its counters say 3 events of 318 bytes, it holds 0 of 0 bytes",
		},
		{
			name: "deleted but holding events",
			edit: func(tx *bolt.Tx) error {
				return editCounters(tx, "d", func(c []byte) { c[32] = 1 })
			},
			want: "stream d is marked deleted but holds 2 events",
		},
		{
			name: "event at the low-water mark",
			edit: func(tx *bolt.Tx) error {
				first := firstID(tx, "a")
				return editCounters(tx, "a", func(c []byte) { copy(c[16:32], first) })
			},
			want: "at or below its low-water mark",
		},
		{
			name: "events after the newest issued id",
			edit: func(tx *bolt.Tx) error {
				return tx.Bucket([]byte("meta")).Put([]byte("last_id"), firstID(tx, "a"))
			},
			want: "after the newest issued id",
		},
	}
	path := filepath.Join(t.TempDir(), "good.db")
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := store.Check(path); err != nil {
		t.Fatalf("Check of the untouched file: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.db")
			if err := os.WriteFile(path, good, 0o600); err != nil {
				t.Fatal(err)
			}
			writeBolt(t, path, tt.edit)
			err := store.Check(path)
			t.Logf("Check: %v", err)
			if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Check: %v, want ErrCorrupt naming %s and saying %q", err, path, tt.want)
			}
		})
	}
}
