package stream_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

func BenchmarkAppendFrame(b *testing.B) {
	data := []byte(`{"user":"u-1029","action":"update","item":{"id":4711,"price":12.5,"tags":["a","b"]},"ok":true}`)
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		buf = stream.AppendFrame(buf[:0], frameID, "update", data)
	}
}

// BenchmarkReplay measures a subscriber catching up from the log: the cost
// a reconnecting client with an old Last-Event-ID puts on the server.
func BenchmarkReplay(b *testing.B) {
	const total = 100_000
	l, h := newHub(b, stream.Options{})
	batch := make([]store.Event, 1000)
	var last store.ID
	for i := 0; i < total; i += len(batch) {
		for j := range batch {
			batch[j] = store.Event{Type: "update", Data: fmt.Appendf(nil, `{"n":%d,"payload":"0123456789abcdef0123456789abcdef"}`, i+j)}
		}
		ids, err := l.Append(context.Background(), "s", batch)
		if err != nil {
			b.Fatal(err)
		}
		last = ids[len(ids)-1]
	}
	b.ReportAllocs()
	runs := 0
	for b.Loop() {
		sub, err := h.SubscribeAfter("s", store.ID{})
		if err != nil {
			b.Fatal(err)
		}
		bytes := 0
		for sub.Cursor() != last {
			frames, _, err := sub.Next()
			if err != nil {
				b.Fatal(err)
			}
			if len(frames) == 0 {
				b.Fatalf("idle at %s before the last event", sub.Cursor())
			}
			for _, f := range frames {
				bytes += len(f)
			}
		}
		sub.Close()
		b.SetBytes(int64(bytes))
		runs++
	}
	b.ReportMetric(float64(runs*total)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkReplayMerged is BenchmarkReplay for a merged subscriber over
// ten streams holding the same 100,000 events between them, interleaved
// in runs of 100: the k-way merge of the streams' cursors against the one
// cursor of BenchmarkReplay. The target is at least half its events/s.
func BenchmarkReplayMerged(b *testing.B) {
	b.Run("runs of 100", func(b *testing.B) { benchReplayMerged(b, 100) })
	// One event of each stream in turn, the merge's worst case: every
	// event moves the heap. Committed concurrently, one goroutine a
	// stream, so that group commit interleaves them.
	b.Run("interleaved", func(b *testing.B) { benchReplayMerged(b, 1) })
}

func benchReplayMerged(b *testing.B, run int) {
	const total, streams = 100_000, 10
	l, h := newHub(b, stream.Options{})
	names := make([]string, streams)
	for i := range names {
		names[i] = fmt.Sprint("s", i)
	}
	event := func(n int) store.Event {
		return store.Event{Type: "update", Data: fmt.Appendf(nil, `{"n":%d,"payload":"0123456789abcdef0123456789abcdef"}`, n)}
	}
	if run > 1 {
		batch := make([]store.Event, run)
		for i := 0; i < total; i += run {
			for j := range batch {
				batch[j] = event(i + j)
			}
			if _, err := l.Append(context.Background(), names[(i/run)%streams], batch); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		var wg sync.WaitGroup
		for s := range streams {
			wg.Go(func() {
				for i := range total / streams {
					if _, err := l.Append(context.Background(), names[s], []store.Event{event(i)}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	last := l.LastID()
	sel := store.Selection{Names: names}
	match := func(s string) bool { return slices.Contains(names, s) }
	b.ReportAllocs()
	runs := 0
	for b.Loop() {
		m, err := h.SubscribeMerged(stream.MergedOptions{Selection: sel, Match: match, Start: stream.MergedResume})
		if err != nil {
			b.Fatal(err)
		}
		bytes := 0
		for m.Cursor() != last {
			frames, _, err := m.Next()
			if err != nil {
				b.Fatal(err)
			}
			if len(frames) == 0 {
				b.Fatalf("idle at %s before the last event", m.Cursor())
			}
			for _, f := range frames {
				bytes += len(f)
			}
		}
		m.Close()
		b.SetBytes(int64(bytes))
		runs++
	}
	b.ReportMetric(float64(runs*total)/b.Elapsed().Seconds(), "events/s")
}
