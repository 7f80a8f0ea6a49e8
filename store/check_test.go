package store_test

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

var updateCorrupt = flag.Bool("update-corrupt", false, "rewrite the damaged database files in ../testdata/corrupt")

// damaged writes variants of a real database file, each broken in one way.
func damaged(t *testing.T) (good []byte, files map[string]string) {
	return damagedOf(t, 2000)
}

func damagedOf(t *testing.T, events int) (good []byte, files map[string]string) {
	t.Helper()
	dir := t.TempDir()
	l := testkit.OpenAt(t, filepath.Join(dir, "src.db"), store.Options{InitialMmapSize: 1 << 20})
	for i := 0; i < events; i += 100 {
		mustAppend(t, l, "s", makeEvents("", 100, i)...)
	}
	mustClose(t, l)
	if _, err := store.Compact(filepath.Join(dir, "good.db"), filepath.Join(dir, "src.db")); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(filepath.Join(dir, "good.db"))
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(good)
	for i := 4 * 4096; i < len(flipped); i += 4096 {
		flipped[i+8] ^= 0xff // page flags: no page is what it claims
	}
	// One page in the middle: only a full check reads it.
	leaf := bytes.Clone(good)
	mid := (len(leaf) / 4096 / 2) * 4096
	leaf[mid+8] ^= 0xff
	torn := bytes.Clone(good)
	torn[16], torn[4096+16] = 0, 0 // both meta pages' magic
	variants := map[string][]byte{
		"empty":     {},
		"short":     good[:100],
		"truncated": good[:len(good)/2],
		"garbage":   bytes.Repeat([]byte("not a database "), 1000),
		"torn":      torn,
		"flipped":   flipped,
		"leaf":      leaf,
	}
	files = map[string]string{}
	for name, b := range variants {
		p := filepath.Join(dir, name+".db")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		files[name] = p
	}
	files["good"] = filepath.Join(dir, "good.db")
	return good, files
}

// TestDamagedFiles: a damaged file is refused with ErrCorrupt by Open and
// Check, and is never changed; a good one passes Check.
func TestDamagedFiles(t *testing.T) {
	_, files := damaged(t)
	if err := store.Check(files["good"]); err != nil {
		t.Fatalf("Check of a good file: %v", err)
	}
	for name, path := range files {
		if name == "good" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			before, _ := os.ReadFile(path)
			if name == "leaf" {
				// Open reads the header, the root and the freelist; damage
				// elsewhere is found by Check (sselog check).
				l, err := store.Open(path, store.Options{})
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				l.Close()
				// Opening it wrote a transaction; what follows must not.
				before, _ = os.ReadFile(path)
			} else {
				l, err := store.Open(path, store.Options{})
				if err == nil {
					l.Close()
					t.Fatal("Open succeeded")
				}
				if !errors.Is(err, store.ErrCorrupt) || !bytes.Contains([]byte(err.Error()), []byte(path)) {
					t.Fatalf("Open: %v, want ErrCorrupt naming the file", err)
				}
			}
			if err := store.Check(path); !errors.Is(err, store.ErrCorrupt) {
				t.Fatalf("Check: %v, want ErrCorrupt", err)
			}
			if _, err := store.Inspect(path); err == nil && name != "leaf" {
				t.Fatal("Inspect succeeded")
			}
			after, _ := os.ReadFile(path)
			if !bytes.Equal(before, after) {
				t.Fatal("the damaged file was changed")
			}
		})
	}
}

// TestCorruptFixtures runs the damaged files kept in ../testdata/corrupt
// (made by this package with -update-corrupt): each is refused with
// ErrCorrupt by Open, or, when the damage is in a page Open does not read
// ("leaf"), by Check; and nothing changes them.
func TestCorruptFixtures(t *testing.T) {
	const dir = "../testdata/corrupt"
	if *updateCorrupt {
		_, files := damagedOf(t, 300)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, path := range files {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name+".db"), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) < 7 {
		t.Fatalf("%d fixtures in %s, want the 7 damaged variants and the good file", len(entries), dir)
	}
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".db")
		t.Run(name, func(t *testing.T) {
			orig, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			// A copy: Open may write to a file it accepts.
			path := filepath.Join(t.TempDir(), e.Name())
			if err := os.WriteFile(path, orig, 0o600); err != nil {
				t.Fatal(err)
			}
			checkErr := store.Check(path)
			switch name {
			case "good":
				if checkErr != nil {
					t.Fatalf("Check: %v", checkErr)
				}
				l := testkit.OpenAt(t, path, store.Options{})
				if info := mustStream(t, l, "s"); info.Count != 300 {
					t.Fatalf("good fixture holds %+v", info)
				}
				return
			case "leaf":
				if !errors.Is(checkErr, store.ErrCorrupt) {
					t.Fatalf("Check: %v, want ErrCorrupt", checkErr)
				}
				return
			}
			if !errors.Is(checkErr, store.ErrCorrupt) {
				t.Fatalf("Check: %v, want ErrCorrupt", checkErr)
			}
			l, err := store.Open(path, store.Options{})
			if err == nil {
				l.Close()
				t.Fatal("Open accepted a damaged file")
			}
			if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Open: %v, want ErrCorrupt naming the file", err)
			}
			f, _ := os.Open(path)
			after, _ := io.ReadAll(f)
			f.Close()
			if !bytes.Equal(after, orig) {
				t.Fatal("the damaged file was changed")
			}
		})
	}
}
