package store_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

func requireFlock(t *testing.T) {
	t.Helper()
	if !store.HaveFlock {
		t.Skip("no flock here: a leftover temporary file is refused, not taken over")
	}
}

// TestCreateTemp: a leftover nobody holds is taken over and emptied; one a
// live writer holds is refused with ErrBusy and left as it is; a shared
// lock lets a reader in and still keeps writers out. A second open of the
// file in this process conflicts like another process would: flock locks
// belong to open files.
func TestCreateTemp(t *testing.T) {
	requireFlock(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "out.db.tmp")
	if err := os.WriteFile(path, bytes.Repeat([]byte("dead writer "), 1000), 0o600); err != nil {
		t.Fatal(err)
	}

	live, err := store.CreateTemp(path)
	if err != nil {
		t.Fatalf("take over a leftover: %v", err)
	}
	defer live.Close()
	if st, err := live.Stat(); err != nil || st.Size() != 0 {
		t.Fatalf("the leftover was not emptied: %v, %v", st.Size(), err)
	}
	// A real database, so that Inspect can read it after Share.
	src := testkit.OpenAt(t, filepath.Join(dir, "src.db"), store.Options{})
	mustAppend(t, src, "s", makeEvents("", 3, 0)...)
	if _, err := src.Backup(live, nil); err != nil {
		t.Fatal(err)
	}
	written, _ := os.ReadFile(path)

	second, err := store.CreateTemp(path)
	if err == nil {
		second.Close()
		t.Fatal("a second writer was let in beside a live one")
	}
	if !errors.Is(err, store.ErrBusy) || !strings.Contains(err.Error(), path) {
		t.Fatalf("second writer: %v, want ErrBusy naming %s", err, path)
	}
	if err := live.Share(); err != nil {
		t.Fatalf("share: %v", err)
	}
	if r, err := store.Inspect(path); err != nil || len(r.Streams) != 1 {
		t.Fatalf("Inspect under a shared lock: %+v, %v", r, err)
	}
	if _, err := store.CreateTemp(path); !errors.Is(err, store.ErrBusy) {
		t.Fatalf("a writer beside a shared lock: %v, want ErrBusy", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, written) {
		t.Fatal("a refused writer changed the live writer's file")
	}

	// Remove takes the name away before the lock goes: the next writer
	// starts a new, empty file.
	if err := live.Remove(); err != nil {
		t.Fatal(err)
	}
	next, err := store.CreateTemp(path)
	if err != nil {
		t.Fatalf("after the live writer removed its file: %v", err)
	}
	defer next.Remove()
	if st, _ := next.Stat(); st.Size() != 0 {
		t.Fatalf("new temporary file has %d bytes", st.Size())
	}
}

// compactSource writes a database to compact and returns its path and what
// Inspect says of it.
func compactSource(t *testing.T, dir string) (string, store.Report) {
	t.Helper()
	src := filepath.Join(dir, "src.db")
	l := testkit.OpenAt(t, src, store.Options{})
	for i := range 20 {
		mustAppend(t, l, "s", makeEvents("", 100, 100*i)...)
	}
	if _, err := l.Trim("s", store.Cut{MaxEvents: 500}, 10000); err != nil {
		t.Fatal(err)
	}
	mustClose(t, l)
	r, err := store.Inspect(src)
	if err != nil {
		t.Fatal(err)
	}
	return src, r
}

// TestCompactTakesOverLeftover: what a killed Compact left under its
// temporary name, early (bbolt's first 16 KiB, or less) or late (a valid
// bbolt file with part of the events and no meta or streams bucket), does
// not block the next run, which replaces it.
func TestCompactTakesOverLeftover(t *testing.T) {
	requireFlock(t)
	leftovers := map[string]func(t *testing.T, path string){
		"16 KiB of nothing": func(t *testing.T, path string) {
			if err := os.WriteFile(path, make([]byte, 16<<10), 0o600); err != nil {
				t.Fatal(err)
			}
		},
		"partial copy": func(t *testing.T, path string) {
			writeBolt(t, path, func(tx *bolt.Tx) error { return putRawEvents(tx, "s", 300) })
		},
	}
	for name, leave := range leftovers {
		for _, inPlace := range []bool{false, true} {
			t.Run(name+map[bool]string{false: " out", true: " in place"}[inPlace], func(t *testing.T) {
				dir := t.TempDir()
				src, want := compactSource(t, dir)
				dst := filepath.Join(dir, "small.db")
				if inPlace {
					dst = src
				}
				leave(t, dst+".compacting")
				if _, err := store.Compact(dst, src); err != nil {
					t.Fatalf("Compact beside a leftover: %v", err)
				}
				if _, err := os.Stat(dst + ".compacting"); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("the temporary file is still there: %v", err)
				}
				if err := store.Check(dst); err != nil {
					t.Fatalf("Check of the copy: %v", err)
				}
				got, err := store.Inspect(dst)
				if err != nil {
					t.Fatal(err)
				}
				if len(got.Streams) != 1 || got.Streams[0] != want.Streams[0] || got.LastID != want.LastID {
					t.Fatalf("the copy holds %+v, last id %s; want %+v, %s", got.Streams, got.LastID, want.Streams, want.LastID)
				}
			})
		}
	}
}

// TestCompactRefusesLiveTemp: a compaction whose temporary file a live run
// holds fails with ErrBusy, leaves that run's file alone, and creates no
// output.
func TestCompactRefusesLiveTemp(t *testing.T) {
	requireFlock(t)
	dir := t.TempDir()
	src, _ := compactSource(t, dir)
	dst := filepath.Join(dir, "small.db")
	live, err := store.CreateTemp(dst + ".compacting")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if _, err := live.WriteString("another run's pages"); err != nil {
		t.Fatal(err)
	}
	_, err = store.Compact(dst, src)
	if !errors.Is(err, store.ErrBusy) || !strings.Contains(err.Error(), dst) {
		t.Fatalf("Compact beside a live run: %v, want ErrBusy naming %s", err, dst)
	}
	if b, _ := os.ReadFile(dst + ".compacting"); string(b) != "another run's pages" {
		t.Fatalf("the live run's file now holds %q", b)
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s exists after a refused compaction: %v", dst, err)
	}
}

// TestCreateTempLinkedLeftover: a writer killed between linking its
// finished file into place and removing the temporary name leaves one file
// under both names. The next writer must not empty it (that would empty
// the finished output): it starts a new file, and moving that one into
// place leaves no temporary name behind.
func TestCreateTempLinkedLeftover(t *testing.T) {
	requireFlock(t)
	dir := t.TempDir()
	out, tmp := filepath.Join(dir, "out.db"), filepath.Join(dir, "out.db.tmp")
	if err := os.WriteFile(out, []byte("the finished backup"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(out, tmp); err != nil {
		t.Fatal(err)
	}
	f, err := store.CreateTemp(tmp)
	if err != nil {
		t.Fatalf("take over a linked leftover: %v", err)
	}
	if b, _ := os.ReadFile(out); string(b) != "the finished backup" {
		t.Fatalf("the finished output now holds %q", b)
	}
	if _, err := f.WriteString("a new backup"); err != nil {
		t.Fatal(err)
	}
	if err := f.Move(out, true); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); string(b) != "a new backup" {
		t.Fatalf("after the move the output holds %q", b)
	}
	if _, err := os.Lstat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the temporary name is still there: %v", err)
	}
}

// TestCreateTempSymlink: a temporary path that is a symbolic link is
// refused; the file it points to is left as it is.
func TestCreateTempSymlink(t *testing.T) {
	requireFlock(t)
	dir := t.TempDir()
	target, tmp := filepath.Join(dir, "precious"), filepath.Join(dir, "out.db.tmp")
	if err := os.WriteFile(target, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, tmp); err != nil {
		t.Fatal(err)
	}
	if f, err := store.CreateTemp(tmp); err == nil {
		f.Close()
		t.Fatal("CreateTemp took a symbolic link")
	}
	if b, _ := os.ReadFile(target); string(b) != "keep me" {
		t.Fatalf("the link's target now holds %q", b)
	}
}
