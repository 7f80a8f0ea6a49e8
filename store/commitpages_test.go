package store

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// commitCost is what bbolt did for one commit, averaged: pages allocated
// (and so written; the meta page is counted apart), write calls, nodes
// materialised and spilled.
type commitCost struct {
	pages, writes, nodes, spills float64
	bytes                        float64 // pages and the meta page, as written
}

func (c commitCost) String() string {
	return fmt.Sprintf("%4.2f pages + meta, %5.0f bytes, %4.2f writes, %4.2f nodes, %4.2f spills",
		c.pages, c.bytes, c.writes, c.nodes, c.spills)
}

// measureCommits runs commit warm times, then n times, and returns bbolt's
// per-commit cost over the n.
func measureCommits(t *testing.T, db *bolt.DB, warm, n int, commit func()) commitCost {
	t.Helper()
	for range warm {
		commit()
	}
	before := db.Stats().TxStats
	for range n {
		commit()
	}
	after := db.Stats().TxStats
	d := func(a, b int64) float64 { return float64(a-b) / float64(n) }
	return commitCost{
		pages:  d(after.GetPageCount(), before.GetPageCount()),
		writes: d(after.GetWrite(), before.GetWrite()),
		nodes:  d(after.GetNodeCount(), before.GetNodeCount()),
		spills: d(after.GetSpill(), before.GetSpill()),
		bytes:  d(after.GetPageAlloc(), before.GetPageAlloc()) + float64(db.Info().PageSize),
	}
}

// TestCommitPages counts, deterministically, what one commit writes: the
// raw one-put-per-transaction loop of BenchmarkAppendVsRaw against a lone
// Append, and the Append taken apart (without meta/last_id, without the
// stream's counters), with one stream and with 100 (where the streams
// bucket no longer fits inline in the root page). Run with -v to see the
// table; it asserts only that meta/last_id costs no page, which is why the
// newest id is written every commit rather than recovered at open.
func TestCommitPages(t *testing.T) {
	if testing.Short() {
		t.Skip("fsyncs a few thousand commits")
	}
	const warm, n = 300, 200
	value := fmt.Appendf(nil, `{"user":"u-%06d","action":"page_view","path":"/articles/%06d","ref":"newsletter","ok":true,"seq":%d}`, 1, 1, 1)

	raw := func() commitCost {
		db, err := bolt.Open(filepath.Join(t.TempDir(), "raw.db"), 0o600, &bolt.Options{
			Timeout:         time.Second,
			InitialMmapSize: DefaultInitialMmapSize,
			FreelistType:    bolt.FreelistMapType,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		bucket := []byte("events")
		if err := db.Update(func(tx *bolt.Tx) error {
			_, err := tx.CreateBucketIfNotExists(bucket)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		i := 0
		return measureCommits(t, db, warm, n, func() {
			var key [16]byte
			binary.BigEndian.PutUint64(key[:8], uint64(time.Now().UnixMilli()))
			binary.BigEndian.PutUint64(key[8:], uint64(i))
			i++
			if err := db.Update(func(tx *bolt.Tx) error {
				bk := tx.Bucket(bucket)
				bk.FillPercent = 1.0
				return bk.Put(key[:], value)
			}); err != nil {
				t.Fatal(err)
			}
		})
	}

	// logCase opens a log holding streams streams of one event each and
	// measures commit on it. Commits that bypass the writer run while it
	// waits on its queue, with a generator of their own.
	logCase := func(streams int, commit func(l *Log, gen *generator) error) commitCost {
		l, err := Open(filepath.Join(t.TempDir(), "log.db"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		for i := range streams {
			if _, err := l.Append(t.Context(), fmt.Sprintf("s%03d", i), []Event{{Type: "page_view", Data: value}}); err != nil {
				t.Fatal(err)
			}
		}
		gen := &generator{last: l.LastID(), now: time.Now}
		return measureCommits(t, l.db, warm, n, func() {
			if err := commit(l, gen); err != nil {
				t.Fatal(err)
			}
		})
	}
	appendOne := func(l *Log, _ *generator) error {
		_, err := l.Append(t.Context(), "s000", []Event{{Type: "page_view", Data: value}})
		return err
	}
	var arena []byte
	withoutLastID := func(l *Log, gen *generator) error {
		r := &appendOp{stream: "s000", events: []Event{{Stream: "s000", Type: "page_view", Data: value}}}
		return l.db.Update(func(tx *bolt.Tx) error {
			r.events[0].ID = gen.next()
			arena = arena[:0]
			return putEvents(tx, r, &arena)
		})
	}
	eventOnly := func(l *Log, gen *generator) error {
		return l.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketEvents).Bucket([]byte("s000"))
			b.FillPercent = 1.0
			id := gen.next()
			return b.Put(id[:], value)
		})
	}

	rows := []struct {
		name string
		cost commitCost
	}{
		{"raw bbolt, one put", raw()},
		{"Append, 1 stream", logCase(1, appendOne)},
		{"  without meta/last_id", logCase(1, withoutLastID)},
		{"  without last_id, counters", logCase(1, eventOnly)},
		{"Append, 100 streams", logCase(100, appendOne)},
		{"  without meta/last_id", logCase(100, withoutLastID)},
		{"  without last_id, counters", logCase(100, eventOnly)},
	}
	for _, r := range rows {
		t.Logf("%-30s %v", r.name, r.cost)
	}
	for _, i := range []int{1, 4} {
		if with, without := rows[i].cost, rows[i+1].cost; with.pages != without.pages || with.bytes != without.bytes {
			t.Errorf("%s: meta/last_id costs pages: %v with it, %v without", rows[i].name, with, without)
		}
	}
}
