package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestBoltHeaderLayout pins check.go's copy of bbolt's file header to what
// the bbolt in go.mod writes. checkFile reads the header by hand, before
// bbolt maps the file; if an upgrade moved a field or changed a constant,
// every file would look damaged (or, worse, a damaged one would look
// whole) and nothing else would say why.
func TestBoltHeaderLayout(t *testing.T) {
	tests := []struct {
		name string
		opts bolt.Options
	}{
		{"default", bolt.Options{}},
		{"16 KiB pages", bolt.Options{PageSize: 16384}},
		{"no stored freelist", bolt.Options{NoFreelistSync: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bolt.db")
			db, err := bolt.Open(path, 0o600, &tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			// Several commits, so that the two meta pages differ, with
			// values that span pages and enough keys for branch pages.
			big := bytes.Repeat([]byte("x"), 3*db.Info().PageSize)
			for n := range 5 {
				err := db.Update(func(tx *bolt.Tx) error {
					b, err := tx.CreateBucketIfNotExists([]byte("b"))
					if err != nil {
						return err
					}
					for i := range 500 {
						if err := b.Put(fmt.Appendf(nil, "key %03d", i), []byte("small")); err != nil {
							return err
						}
					}
					return b.Put(fmt.Appendf(nil, "big %d", n), big)
				})
				if err != nil {
					t.Fatal(err)
				}
			}

			err = db.View(func(tx *bolt.Tx) error {
				file, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				pageSize := db.Info().PageSize
				m0, ok0 := readMeta(file)
				m1, ok1 := readMeta(file[pageSize:])
				if !ok0 || !ok1 {
					t.Fatalf("readMeta does not accept bbolt's meta pages (magic %#x, version %d, checksum): first %v, second %v",
						boltMagic, boltVersion, ok0, ok1)
				}
				newest, older := m0, m1
				if m1.txid > m0.txid {
					newest, older = m1, m0
				}
				if want := uint64(tx.ID()); newest.txid != want || older.txid != want-1 {
					t.Errorf("txids read %d and %d, bbolt's newest is %d", newest.txid, older.txid, want)
				}
				if int(newest.pageSize) != pageSize || int(older.pageSize) != pageSize {
					t.Errorf("page sizes read %d and %d, bbolt uses %d", newest.pageSize, older.pageSize, pageSize)
				}
				if got := int64(newest.pgid) * int64(newest.pageSize); got != tx.Size() {
					t.Errorf("size from the header %d, bbolt's %d", got, tx.Size())
				}
				if got := int64(len(file)); got < tx.Size() {
					t.Errorf("file is %d bytes, shorter than bbolt's size %d", got, tx.Size())
				}

				// Every page bbolt holds has the flags check.go expects
				// where it reads them.
				flagOf := map[string]uint16{"branch": branchPageFlag, "leaf": leafPageFlag, "freelist": freelistPageFlag}
				seen := map[string]int{}
				for id := 0; ; {
					info, err := tx.Page(id)
					if err != nil {
						return err
					}
					if info == nil {
						if uint64(id) != newest.pgid {
							t.Errorf("bbolt's pages end at %d, the header's pgid is %d", id, newest.pgid)
						}
						break
					}
					seen[info.Type]++
					off := id * pageSize
					if got := binary.NativeEndian.Uint64(file[off:]); got != uint64(id) && info.Type != "free" {
						t.Errorf("page %d (%s): header holds id %d", id, info.Type, got)
					}
					if want, ok := flagOf[info.Type]; ok {
						if got := binary.NativeEndian.Uint16(file[off+8:]); got != want {
							t.Errorf("page %d is a %s page to bbolt; its flags are %#x, check.go expects %#x", id, info.Type, got, want)
						}
					}
					if id < 2 && info.Type != "meta" {
						t.Errorf("page %d is a %s page, want a meta page", id, info.Type)
					}
					if info.Type == "free" {
						// Freed one by one, overflow and all; the header
						// may be stale.
						id++
					} else {
						id += 1 + info.OverflowCount
					}
				}
				if seen["branch"] == 0 || seen["leaf"] == 0 {
					t.Errorf("pages seen %v: the test wants branch and leaf pages", seen)
				}

				if info, err := tx.Page(int(newest.root)); err != nil || info == nil || (info.Type != "branch" && info.Type != "leaf") {
					t.Errorf("root page %d read from the header is %+v (%v), want a bucket page", newest.root, info, err)
				}
				if tt.opts.NoFreelistSync {
					if newest.freelist != noFreelist {
						t.Errorf("freelist page %d read from the header, want none (%#x)", newest.freelist, noFreelist)
					}
				} else if info, err := tx.Page(int(newest.freelist)); err != nil || info == nil || info.Type != "freelist" {
					t.Errorf("freelist page %d read from the header is %+v (%v)", newest.freelist, info, err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			if err := checkFile(path); err != nil {
				t.Errorf("checkFile refuses bbolt's own file: %v", err)
			}
		})
	}
}
