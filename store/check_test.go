package store_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/sselog/sselog/store"
)

// damaged writes variants of a real database file, each broken in one way.
func damaged(t *testing.T) (good []byte, files map[string]string) {
	t.Helper()
	dir := t.TempDir()
	l := mustOpen(t, filepath.Join(dir, "src.db"), store.Options{InitialMmapSize: 1 << 20})
	for i := range 20 {
		mustAppend(t, l, "s", makeEvents("", 100, i*100)...)
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
