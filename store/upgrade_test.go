package store_test

import (
	"encoding/binary"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

// TestUpgradeLayout1 opens a file in the first layout (16-byte counters, no
// retention bucket, version 1), written here with bbolt directly: its
// events read back, it takes new ones, and it is marked version 2, which a
// version-1 binary refuses instead of dropping the low-water marks.
func TestUpgradeLayout1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	id := store.MinIDAt(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	id[15] = 1
	err = db.Update(func(tx *bolt.Tx) error {
		events, _ := tx.CreateBucket([]byte("events"))
		s, _ := events.CreateBucket([]byte("s"))
		value := append([]byte{1, 0}, `{"v":1}`...) // version, no type, data
		if err := s.Put(id[:], value); err != nil {
			return err
		}
		counters := make([]byte, 16)
		binary.BigEndian.PutUint64(counters, 1)
		binary.BigEndian.PutUint64(counters[8:], uint64(len(value)))
		streams, _ := tx.CreateBucket([]byte("streams"))
		if err := streams.Put([]byte("s"), counters); err != nil {
			return err
		}
		meta, _ := tx.CreateBucket([]byte("meta"))
		if err := meta.Put([]byte("version"), []byte{1}); err != nil {
			return err
		}
		return meta.Put([]byte("last_id"), id[:])
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	l := testkit.OpenAt(t, path, store.Options{})
	info := mustStream(t, l, "s")
	if info.Count != 1 || info.FirstID != id || !info.LowWater.IsZero() || l.LastID() != id {
		t.Fatalf("upgraded stream %+v, last id %s", info, l.LastID())
	}
	next := mustAppend(t, l, "s", makeEvents("", 1, 0)...)
	if next[0].Compare(id) <= 0 {
		t.Fatalf("new id %s not above %s", next[0], id)
	}
	mustClose(t, l)
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte("meta")).Get([]byte("version")); len(v) != 1 || v[0] != 2 {
			t.Errorf("layout version %v after upgrade, want 2", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
