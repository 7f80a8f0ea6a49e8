package store_test

import (
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
	bolt "go.etcd.io/bbolt"
)

// reportEvents adds the figure every benchmark here is compared on.
func reportEvents(b *testing.B, events int) {
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkAppendSingle is the latency floor: one caller, so every Append is
// its own fsynced transaction. Compare with BenchmarkRawBoltPutPerTx.
func BenchmarkAppendSingle(b *testing.B) {
	l := testkit.OpenAt(b, filepath.Join(b.TempDir(), "log.db"), store.Options{})
	evs := []store.Event{{Type: "page_view", Data: payload(1)}}
	ctx := b.Context()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := l.Append(ctx, "bench", evs); err != nil {
			b.Fatal(err)
		}
	}
	reportEvents(b, b.N)
}

// BenchmarkAppendParallel32 is what group commit is for: 32 callers share
// transactions, one event per Append. Exactly 32 goroutines on any
// GOMAXPROCS, so results compare across machines.
func BenchmarkAppendParallel32(b *testing.B) {
	b.Run("plain", func(b *testing.B) { benchAppendParallel(b, false) })
	// Each call with a key of its own: the cost of idempotency on the
	// path every keyed publish takes.
	b.Run("keyed", func(b *testing.B) { benchAppendParallel(b, true) })
}

func benchAppendParallel(b *testing.B, keyed bool) {
	const callers = 32
	l := testkit.OpenAt(b, filepath.Join(b.TempDir(), "log.db"), store.Options{})
	var commits atomic.Int64
	l.OnCommit(func([]store.Event) { commits.Add(1) })
	ctx := b.Context()
	var (
		next   atomic.Int64
		wg     sync.WaitGroup
		failed atomic.Pointer[error]
	)
	b.ReportAllocs()
	b.ResetTimer()
	for g := range callers {
		wg.Go(func() {
			evs := []store.Event{{Type: "page_view", Data: payload(g)}}
			stream := []string{"s0", "s1", "s2", "s3"}[g%4]
			var key store.Key
			for {
				n := next.Add(1)
				if n > int64(b.N) {
					return
				}
				var err error
				if keyed {
					// Keys as clients make them: random, like a UUID.
					key.Name = fmt.Sprintf("%016x%016x", rand.Uint64(), rand.Uint64())
					key.Digest[0] = byte(n)
					_, _, err = l.AppendOnce(ctx, stream, key, evs)
				} else {
					_, err = l.Append(ctx, stream, evs)
				}
				if err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	reportEvents(b, b.N)
	b.ReportMetric(float64(b.N)/float64(commits.Load()), "events/commit")
}

func BenchmarkAppendBatch100(b *testing.B) {
	const batch = 100
	l := testkit.OpenAt(b, filepath.Join(b.TempDir(), "log.db"), store.Options{})
	evs := makeEvents("page_view", batch, 0)
	ctx := b.Context()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := l.Append(ctx, "bench", evs); err != nil {
			b.Fatal(err)
		}
	}
	reportEvents(b, b.N*batch)
}

// BenchmarkScanAfter is replay: a subscriber reading a long stream from its
// beginning, a page of 512 per read transaction. One op is one page; at the
// end of the stream the cursor starts over.
func BenchmarkScanAfter(b *testing.B) {
	const (
		total = 100_000
		page  = 512
		fill  = 1000 // events per Append while filling
	)
	l := testkit.OpenAt(b, filepath.Join(b.TempDir(), "log.db"), store.Options{})
	ctx := b.Context()
	for i := 0; i < total; i += fill {
		if _, err := l.Append(ctx, "replay", makeEvents("page_view", fill, i)); err != nil {
			b.Fatal(err)
		}
	}
	var (
		after  store.ID
		events int
		bytes  int
	)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		n := 0
		err := l.ScanAfter("replay", after, page, func(e *store.Event) error {
			// Touch the data as an encoder would; e is only valid in here.
			bytes += len(e.Data)
			after = e.ID
			n++
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		events += n
		if n < page {
			after = store.ID{}
		}
	}
	b.StopTimer()
	if events > 0 && bytes == 0 {
		b.Fatal("scanned events carried no data")
	}
	reportEvents(b, events)
}

// openRaw opens bare bbolt in dir with the log's options and one bucket,
// for the baselines.
func openRaw(b *testing.B, dir string) (*bolt.DB, []byte) {
	db, err := bolt.Open(filepath.Join(dir, "raw.db"), 0o600, &bolt.Options{
		Timeout:         time.Second,
		InitialMmapSize: store.DefaultInitialMmapSize,
		FreelistType:    bolt.FreelistMapType,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	bucket := []byte("events")
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	return db, bucket
}

// BenchmarkRawBoltPutPerTx is the baseline for BenchmarkAppendSingle: bare
// bbolt with the same open options, one 16-byte key and ~100-byte value per
// fsynced Update. The gap between the two is the log's own overhead.
func BenchmarkRawBoltPutPerTx(b *testing.B) {
	db, bucket := openRaw(b, b.TempDir())
	value := payload(1)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		var key [16]byte
		binary.BigEndian.PutUint64(key[:8], uint64(time.Now().UnixMilli()))
		binary.BigEndian.PutUint64(key[8:], uint64(i))
		err := db.Update(func(tx *bolt.Tx) error {
			bk := tx.Bucket(bucket)
			bk.FillPercent = 1.0
			return bk.Put(key[:], value)
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	reportEvents(b, b.N)
}

// BenchmarkAppendVsRaw answers "how close is a lone Append to bare bbolt"
// despite a virtual disk whose fsync latency drifts from second to second:
// it alternates rounds of 50 single-event Appends and 50 one-put raw bbolt
// transactions on two files in the same directory, and reports both rates
// and their ratio over the same stretch of time.
func BenchmarkAppendVsRaw(b *testing.B) {
	dir := b.TempDir()
	l := testkit.OpenAt(b, filepath.Join(dir, "log.db"), store.Options{})
	db, bucket := openRaw(b, dir)
	evs := []store.Event{{Type: "page_view", Data: payload(1)}}
	value := evs[0].Data
	ctx := b.Context()
	const round = 50
	var appendTime, rawTime time.Duration
	n := 0
	for b.Loop() {
		start := time.Now()
		for range round {
			if _, err := l.Append(ctx, "bench", evs); err != nil {
				b.Fatal(err)
			}
		}
		appendTime += time.Since(start)
		start = time.Now()
		for i := range round {
			var key [16]byte
			binary.BigEndian.PutUint64(key[:8], uint64(time.Now().UnixMilli()))
			binary.BigEndian.PutUint64(key[8:], uint64(n*round+i))
			if err := db.Update(func(tx *bolt.Tx) error {
				bk := tx.Bucket(bucket)
				bk.FillPercent = 1.0
				return bk.Put(key[:], value)
			}); err != nil {
				b.Fatal(err)
			}
		}
		rawTime += time.Since(start)
		n++
	}
	appendRate := float64(n*round) / appendTime.Seconds()
	rawRate := float64(n*round) / rawTime.Seconds()
	b.ReportMetric(appendRate, "append/s")
	b.ReportMetric(rawRate, "raw/s")
	b.ReportMetric(100*appendRate/rawRate, "%of-raw")
}

var largeEvents = flag.Int("large-events", 5_000_000, "events in the database BenchmarkOpenLarge opens")

// BenchmarkOpenLarge is start-up on a large database: Open (and the first
// read a server makes, listing streams) must not scan the events. It builds
// a database of -large-events events in batches first, which takes a while,
// and then times Open, Streams and Close of it.
func BenchmarkOpenLarge(b *testing.B) {
	path := filepath.Join(b.TempDir(), "large.db")
	l, err := store.Open(path, store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	batch := make([]store.Event, 1000)
	for i := range batch {
		batch[i] = store.Event{Type: "page_view", Data: payload(i)}
	}
	for n := 0; n < *largeEvents; n += len(batch) {
		if _, err := l.Append(b.Context(), []string{"a", "b", "c", "d"}[n/len(batch)%4], batch); err != nil {
			b.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	if st, err := os.Stat(path); err == nil {
		b.Logf("%d events, file %d MiB", *largeEvents, st.Size()>>20)
	}
	var worst time.Duration
	for b.Loop() {
		start := time.Now()
		l, err := store.Open(path, store.Options{})
		if err != nil {
			b.Fatal(err)
		}
		streams, err := l.Streams()
		if err != nil || len(streams) != 4 {
			b.Fatalf("streams %v, %v", streams, err)
		}
		worst = max(worst, time.Since(start))
		if err := l.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(worst.Microseconds())/1000, "worst-open-ms")
}

// BenchmarkBoltTuning measures the bbolt settings the log uses for an
// append-only workload against bbolt's defaults, one at a time: each
// sub-benchmark appends 200,000 ~100-byte events under 16-byte increasing
// keys in transactions of 1,000 to a fresh file, and reports the rate, the
// file size and the node splits bbolt made.
func BenchmarkBoltTuning(b *testing.B) {
	type tuning struct {
		name     string
		fill     float64
		mmap     int
		freelist bolt.FreelistType
	}
	log := tuning{"log's settings", 1.0, store.DefaultInitialMmapSize, bolt.FreelistMapType}
	for _, tc := range []tuning{
		log,
		{"FillPercent 0.5 (default)", 0.5, log.mmap, log.freelist},
		{"no initial mmap (default)", log.fill, 0, log.freelist},
		{"array freelist (default)", log.fill, log.mmap, bolt.FreelistArrayType},
	} {
		b.Run(tc.name, func(b *testing.B) {
			const total, perTx = 200_000, 1000
			value := payload(1)
			var size, splits int64
			for b.Loop() {
				path := filepath.Join(b.TempDir(), "t.db")
				db, err := bolt.Open(path, 0o600, &bolt.Options{InitialMmapSize: tc.mmap, FreelistType: tc.freelist})
				if err != nil {
					b.Fatal(err)
				}
				for n := 0; n < total; n += perTx {
					err := db.Update(func(tx *bolt.Tx) error {
						bk, err := tx.CreateBucketIfNotExists([]byte("s"))
						if err != nil {
							return err
						}
						bk.FillPercent = tc.fill
						var key [16]byte
						for i := n; i < n+perTx; i++ {
							binary.BigEndian.PutUint64(key[:8], uint64(i/100))
							binary.BigEndian.PutUint64(key[8:], uint64(i))
							if err := bk.Put(key[:], value); err != nil {
								return err
							}
						}
						return nil
					})
					if err != nil {
						b.Fatal(err)
					}
				}
				stats := db.Stats()
				splits = stats.TxStats.GetSplit()
				if fi, err := os.Stat(path); err == nil {
					size = fi.Size()
				}
				if err := db.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*total)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(size)/(1<<20), "file-MiB")
			b.ReportMetric(float64(splits), "splits")
		})
	}
}
