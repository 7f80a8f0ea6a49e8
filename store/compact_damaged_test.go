package store_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/sselog/sselog/store"
)

// TestCompactDamagedLeavesNothing: when bbolt panics while copying a
// damaged source, Compact answers ErrCorrupt and removes its half-written
// output, which would otherwise be a valid database holding part of the
// data.
func TestCompactDamagedLeavesNothing(t *testing.T) {
	_, files := damaged(t)
	for _, inPlace := range []bool{false, true} {
		name := map[bool]string{false: "to-dst", true: "in-place"}[inPlace]
		t.Run(name, func(t *testing.T) {
			src := files["leaf"]
			b, _ := os.ReadFile(src)
			src = filepath.Join(t.TempDir(), "leaf.db")
			if err := os.WriteFile(src, b, 0o600); err != nil {
				t.Fatal(err)
			}
			dst, left := filepath.Join(filepath.Dir(src), "out.db"), ""
			if inPlace {
				dst = src
				left = src + ".compacting"
			} else {
				left = dst
			}
			_, err := store.Compact(dst, src)
			if !errors.Is(err, store.ErrCorrupt) {
				t.Fatalf("Compact of a damaged file: %v, want ErrCorrupt", err)
			}
			if _, statErr := os.Stat(left); statErr == nil {
				t.Errorf("Compact failed but left %s behind", filepath.Base(left))
			}
		})
	}
}
