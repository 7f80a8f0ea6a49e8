package jetstream

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sselog/sselog/store"
)

// BenchmarkAppend publishes single events from 32 goroutines through one
// node of a three-node cluster in this process (all on this machine's
// cores and disk), as `sselog bench publish -c 32` does over HTTP.
func BenchmarkAppend32(b *testing.B) { benchmarkAppend(b, 32, 1) }

// BenchmarkAppend1 is one publisher: the latency of a write.
func BenchmarkAppend1(b *testing.B) { benchmarkAppend(b, 1, 1) }

// BenchmarkAppendBatch100 is 8 publishers of batches of 100 events.
func BenchmarkAppendBatch100(b *testing.B) { benchmarkAppend(b, 8, 100) }

func benchmarkAppend(b *testing.B, publishers, batch int) {
	benchmarkAppendCopies(b, publishers, batch, 1)
}

// benchmarkAppendCopies publishes through node 0 with a local copy on the
// first copies nodes.
func benchmarkAppendCopies(b *testing.B, publishers, batch, copies int) {
	c := startTestCluster(b, 3)
	dir := b.TempDir()
	for i := 1; i < copies; i++ {
		openTestLog(b, connect(b, c.servers[i].ClientURL()), filepath.Join(dir, fmt.Sprintf("r%d.db", i)), 3)
	}
	l := openTestLog(b, connect(b, c.servers[0].ClientURL()), filepath.Join(dir, "r0.db"), 3)
	events := make([]store.Event, batch)
	for i := range events {
		events[i] = store.Event{Data: []byte(fmt.Sprintf(`{"n":%d,"pad":"%090d"}`, i, 0))}
	}
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	per := b.N/publishers + 1
	for range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				if _, err := l.Append(b.Context(), "bench", events); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(per*publishers*batch)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkAppend1Batch32 is one publisher of batches of 32 events: the
// cost of an atomic batch the size of a busy group.
func BenchmarkAppend1Batch32(b *testing.B) { benchmarkAppend(b, 1, 32) }

// BenchmarkAppend32ThreeCopies is BenchmarkAppend32 with a local copy on
// every node, as three `sselog serve` nodes have: each write is applied,
// and fsynced, three times.
func BenchmarkAppend32ThreeCopies(b *testing.B) { benchmarkAppendCopies(b, 32, 1, 3) }
