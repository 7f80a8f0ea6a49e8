package httpapi_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// The HTTP publish benchmarks measure the whole acknowledged path over
// loopback: request parsing, validation, group commit with fsync, answer.
// The load generator shares the machine's cores with the server.

const benchEvent = `{"type":"order.created","data":{"order":12345,"customer":"c-0042","total":"99.95","items":["sku-1","sku-2"]}}`

func benchPublish(b *testing.B, callers, batch int) {
	s := newServer(b, httpapi.Options{}, stream.Options{})
	body := benchEvent
	if batch > 1 {
		body = "[" + strings.Repeat(benchEvent+",", batch-1) + benchEvent + "]"
	}
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		failed  atomic.Value
		latency = make([][]time.Duration, callers)
		commits atomic.Int64
	)
	s.log.OnCommit(func([]store.Event) { commits.Add(1) })
	b.ResetTimer()
	for c := 0; c < callers; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				start := time.Now()
				if _, err := s.publish("bench", body); err != nil {
					failed.Store(err)
					return
				}
				latency[c] = append(latency[c], time.Since(start))
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if err, ok := failed.Load().(error); ok {
		b.Fatal(err)
	}
	var all []time.Duration
	for _, l := range latency {
		all = append(all, l...)
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(percentile(all, 0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(b.N*batch)/float64(max(commits.Load(), 1)), "events/commit")
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func BenchmarkPublishHTTP(b *testing.B) {
	for _, tc := range []struct{ callers, batch int }{{1, 1}, {32, 1}, {8, 100}} {
		b.Run(fmt.Sprintf("callers=%d/batch=%d", tc.callers, tc.batch), func(b *testing.B) {
			benchPublish(b, tc.callers, tc.batch)
		})
	}
}
