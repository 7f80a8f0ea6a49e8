package httpapi_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// soak makes TestSoak run for a minute instead of a few seconds:
//
//	go test -race -run '^TestSoak$' ./httpapi/ -soak
var soak = flag.Bool("soak", false, "run TestSoak for a minute instead of a few seconds")

// TestSoak runs 200 subscribers over 4 streams against 4 publishers. Each
// subscriber starts from the beginning of its stream, drops its connection
// after a random number of events and comes back with the last id it saw,
// in the Last-Event-ID header or the query, in upper or lower case, until
// it has the stream's final event. Each must have seen exactly its stream's
// log: no gap, no duplicate, in order. Once everyone has left, the
// goroutines and the heap come back to where they were before.
func TestSoak(t *testing.T) {
	const (
		subscribers = 200
		publishers  = 4
		streams     = 4
		pace        = 20 * time.Millisecond // between one publisher's requests
	)
	duration := 3 * time.Second
	if *soak {
		duration = time.Minute
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %v", seed, duration)

	// A tail shorter than what a subscriber misses between connections
	// sends some reconnections to the log and others to the tail.
	s := newServer(t, httpapi.Options{Heartbeat: 200 * time.Millisecond}, stream.Options{TailLen: 256, PageSize: 64})
	// The baseline is the server at rest after its first request: its
	// own goroutines (the listener's, the log's writer) and the log's
	// state are not what this test looks for.
	s.mustPublish(t, "warm-up", `{"data":0}`)
	s.client.Transport.(*http.Transport).CloseIdleConnections()
	baseGoroutines, baseHeap := settledGoroutines(), heapInuse()
	// Subscribers close with a reset, as a client that vanishes does, and
	// so leave no TIME_WAIT behind: a minute of reconnections would
	// otherwise use up the ephemeral ports.
	tr := &http.Transport{
		MaxIdleConnsPerHost: publishers,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				err = c.(*net.TCPConn).SetLinger(0)
			}
			return c, err
		},
	}
	client := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	names := make([]string, streams)
	for i := range names {
		names[i] = fmt.Sprintf("soak-%d", i)
	}

	ctx, cancel := context.WithTimeout(t.Context(), duration+2*time.Minute)
	defer cancel()
	var subWG, pubWG sync.WaitGroup
	// Runs before the server's cleanup, even after a t.Fatal: no
	// goroutine of the test outlives it.
	defer func() {
		cancel()
		pubWG.Wait()
		subWG.Wait()
	}()

	// Publishers: single events and batches of up to 5, to random streams,
	// until the time is up.
	stop := make(chan struct{})
	pubErr := make(chan error, publishers)
	var acked sync.Map // id -> stream, every acknowledged event
	for w := range publishers {
		pubWG.Add(1)
		go func() {
			defer pubWG.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			tick := time.NewTicker(pace)
			defer tick.Stop()
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				name := names[rng.IntN(streams)]
				n := 1 + rng.IntN(5)
				events := make([]string, n)
				for i := range events {
					typ := ""
					if rng.IntN(2) == 0 {
						typ = fmt.Sprintf(`"type":"p%d",`, w)
					}
					events[i] = fmt.Sprintf(`{%s"data":{"p":%d,"seq":%d,"i":%d,"text":"two\nlines"}}`, typ, w, seq, i)
				}
				body := events[0]
				if n > 1 || rng.IntN(2) == 0 {
					body = "[" + strings.Join(events, ",") + "]"
				}
				ids, err := s.publish(name, body)
				if err != nil {
					pubErr <- err
					cancel()
					return
				}
				for _, id := range ids {
					acked.Store(id, name)
				}
			}
		}()
	}

	type subscriber struct {
		stream   string
		got      []testkit.SSEEvent
		connects int
		err      error
	}
	subs := make([]*subscriber, subscribers)
	for i := range subs {
		sub := &subscriber{stream: names[i%streams]}
		subs[i] = sub
		subWG.Add(1)
		go func() {
			defer subWG.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(1000+i)))
			base := s.URL + "/v1/streams/" + sub.stream + "/events"
			last := zeroID
			for {
				id := last
				if rng.IntN(4) == 0 {
					// A ULID is case-insensitive.
					id = strings.ToLower(id)
				}
				url, header := base, id
				if rng.IntN(4) == 0 {
					url, header = base+"?last_event_id="+id, ""
				}
				c, err := testkit.DialSSE(ctx, client, url, header)
				if err != nil {
					sub.err = fmt.Errorf("connection %d: %w", sub.connects+1, err)
					return
				}
				sub.connects++
				if b, err := c.Next(); err != nil || b.Retry == "" {
					c.Close()
					sub.err = fmt.Errorf("connection %d starts with %+v, %v; want the retry hint", sub.connects, b, err)
					return
				}
				for n := 1 + rng.IntN(60); n > 0; n-- {
					e, err := c.NextEvent()
					if err != nil {
						c.Close()
						sub.err = fmt.Errorf("connection %d, after %d events: %w", sub.connects, len(sub.got), err)
						return
					}
					sub.got = append(sub.got, e)
					last = e.ID
					if e.Type == "end" {
						c.Close()
						return
					}
				}
				c.Close()
			}
		}()
	}

	select {
	case <-time.After(duration):
	case <-ctx.Done():
	}
	close(stop)
	pubWG.Wait()
	close(pubErr)
	for err := range pubErr {
		t.Fatal(err)
	}
	for _, name := range names {
		s.mustPublish(t, name, `{"type":"end","data":"end"}`)
	}
	subWG.Wait()
	var events, connects int
	for i, sub := range subs {
		if sub.err != nil {
			t.Errorf("subscriber %d (%s): %v", i, sub.stream, sub.err)
		}
	}
	if t.Failed() {
		return
	}

	logged := map[string][]store.Event{}
	total := 0
	for _, name := range names {
		logged[name] = s.readAll(t, name)
		total += len(logged[name])
	}
	acked.Range(func(k, v any) bool {
		id, name := k.(store.ID), v.(string)
		for _, e := range logged[name] {
			if e.ID == id {
				return true
			}
		}
		t.Errorf("acknowledged %s in %s is not in the log", id, name)
		return true
	})
	for i, sub := range subs {
		events += len(sub.got)
		connects += sub.connects
		if err := testkit.DiffEvents(sub.got, logged[sub.stream]); err != nil {
			t.Errorf("subscriber %d (%s, %d connections): %v", i, sub.stream, sub.connects, err)
		}
	}
	t.Logf("%d events published; subscribers received %d over %d connections", total, events, connects)
	if t.Failed() {
		return
	}

	// Everyone has left: what they held must be let go.
	subs, logged = nil, nil
	tr.CloseIdleConnections()
	s.client.Transport.(*http.Transport).CloseIdleConnections()
	const goroutineSlack = 2
	deadline := time.Now().Add(testkit.Wait)
	for {
		n := runtime.NumGoroutine()
		if n <= baseGoroutines+goroutineSlack {
			t.Logf("goroutines: %d before, %d after", baseGoroutines, n)
			break
		}
		if time.Now().After(deadline) {
			var stacks bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
			t.Fatalf("%d goroutines %v after everyone left, %d before:\n%s", n, testkit.Wait, baseGoroutines, stacks.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s.hub.Following() != 0 {
		t.Errorf("the hub still follows %d streams", s.hub.Following())
	}
	// The tails and the connections' buffers are gone; what stays is the
	// log's and the server's own state. The heap may only have grown by
	// a little, whatever the soak's length.
	const heapSlack = 4 << 20
	var h uint64
	testkit.WaitFor(t, fmt.Sprintf("heap in use to come back within %d KiB of its %d KiB before", heapSlack>>10, baseHeap>>10), func() bool {
		h = heapInuse()
		return h <= baseHeap+heapSlack
	})
	t.Logf("heap in use: %d KiB before, %d KiB after", baseHeap>>10, h>>10)
}

// settledGoroutines is the number of goroutines once the count has held
// still for a moment: what earlier tests left winding down is not counted.
func settledGoroutines() int {
	n := runtime.NumGoroutine()
	for range 100 {
		time.Sleep(10 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m == n {
			return n
		}
		n = m
	}
	return n
}

// heapInuse collects garbage and returns the bytes of heap spans in use.
// It collects twice: what sync.Pools hold survives one collection.
func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}
