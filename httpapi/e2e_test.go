package httpapi_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// progress tracks what publishers have had acknowledged: how many events,
// and the newest id.
type progress struct {
	mu   sync.Mutex
	n    int
	max  store.ID
	ids  []store.ID
	tick chan struct{} // closed and replaced on every acknowledgement
}

func (p *progress) add(ids []store.ID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n += len(ids)
	p.ids = append(p.ids, ids...)
	for _, id := range ids {
		if id.Compare(p.max) > 0 {
			p.max = id
		}
	}
	close(p.tick)
	p.tick = make(chan struct{})
}

func (p *progress) get() (int, store.ID, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n, p.max, p.tick
}

// wait blocks until n events are acknowledged or ctx ends.
func (p *progress) wait(ctx context.Context, n int) error {
	for {
		got, _, tick := p.get()
		if got >= n {
			return nil
		}
		select {
		case <-tick:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// e2eRun is what the subscribers of one end-to-end run share.
type e2eRun struct {
	s            *testServer
	name         string
	p            *progress
	firstConnect chan struct{} // one send per subscriber, at its first stream or failure
	finalKnown   chan struct{} // closed once finalID is set
	finalID      store.ID
}

// e2eSubscriber is one client's whole history of connections.
type e2eSubscriber struct {
	live  bool
	start store.ID // with live unset: the id it first resumed after
	// For a live subscriber: the newest id acknowledged before it first
	// connected, and the newest id committed once its stream had begun.
	acked, bound store.ID
	got          []testkit.SSEEvent
	connects     int
}

// TestEndToEnd is the core guarantee over real HTTP: publishers send single
// events and batches while subscribers connect, read a random number of
// events, drop the connection and resume with Last-Event-ID, again and
// again. Each must see exactly the stream's events after its first start,
// in order, once each.
func TestEndToEnd(t *testing.T) {
	for _, b := range testBackends {
		t.Run(b.name, func(t *testing.T) {
			l, _ := b.open(t, t.TempDir())
			testEndToEnd(t, l)
		})
	}
}

func testEndToEnd(t *testing.T, l testLog) {
	const (
		name        = "e2e"
		total       = 3000 // events published before the final one
		preload     = 300  // published before any subscriber starts
		publishers  = 4
		subscribers = 8
	)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	// A small tail makes reconnects and slow readers use the log as well.
	s := newServerOn(t, l, httpapi.Options{Heartbeat: 100 * time.Millisecond}, stream.Options{TailLen: 64, PageSize: 50})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	p := &progress{tick: make(chan struct{})}
	preloadBody := "[" + strings.Repeat(`{"type":"pre","data":{"pre":true}},`, preload-1) + `{"data":{"pre":true}}]`
	p.add(s.mustPublish(t, name, preloadBody))

	// Publishers share the remaining events; each request is a single
	// event or a batch of 1-10.
	var leftMu sync.Mutex
	left := total - preload
	take := func(want int) int {
		leftMu.Lock()
		defer leftMu.Unlock()
		n := min(want, left)
		left -= n
		return n
	}
	pubErr := make(chan error, publishers)
	var pubs sync.WaitGroup
	for w := range publishers {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for seq := 0; ; seq++ {
				single := rng.IntN(3) == 0
				n := 1
				if !single {
					n = 1 + rng.IntN(10)
				}
				if n = take(n); n == 0 {
					return
				}
				events := make([]string, n)
				for i := range events {
					typ := ""
					if rng.IntN(2) == 0 {
						typ = fmt.Sprintf(`"type":"w%d",`, w)
					}
					events[i] = fmt.Sprintf(`{%s"data":{"w":%d,"seq":%d,"i":%d,"text":"line\nbreak"}}`, typ, w, seq, i)
				}
				body := events[0]
				if !single {
					body = "[" + strings.Join(events, ",") + "]"
				}
				ids, err := s.publish(name, body)
				if err != nil {
					pubErr <- err
					cancel()
					return
				}
				p.add(ids)
			}
		}()
	}

	run := &e2eRun{
		s:            s,
		name:         name,
		p:            p,
		firstConnect: make(chan struct{}, subscribers),
		finalKnown:   make(chan struct{}),
	}
	subs := make([]*e2eSubscriber, subscribers)
	subErr := make(chan error, subscribers)
	var wg sync.WaitGroup
	// Runs before the server's cleanup, even after a t.Fatal: no
	// subscriber outlives the test.
	defer func() {
		cancel()
		wg.Wait()
	}()
	for i := range subs {
		sub := &e2eSubscriber{live: i%3 == 0}
		subs[i] = sub
		rng := rand.New(rand.NewPCG(seed, uint64(100+i)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Start at a random point of the publishing.
			if err := p.wait(ctx, preload+rng.IntN(total-preload)/2); err != nil {
				subErr <- err
				run.firstConnect <- struct{}{}
				return
			}
			if i%3 == 2 {
				// From a middle id: any event acknowledged so far.
				p.mu.Lock()
				sub.start = p.ids[rng.IntN(len(p.ids))]
				p.mu.Unlock()
			}
			if err := sub.run(ctx, run, rng); err != nil {
				subErr <- fmt.Errorf("subscriber %d (live %v, start %s) after %d events, %d connections: %w", i, sub.live, sub.start, len(sub.got), sub.connects, err)
				cancel()
			}
		}()
	}

	pubs.Wait()
	close(pubErr)
	for err := range pubErr {
		t.Fatal(err)
	}
	// The final event goes out once every subscriber has connected once, so
	// that even the live ones must get it.
	for range subscribers {
		select {
		case <-run.firstConnect:
		case <-ctx.Done():
			t.Fatal("subscribers did not connect")
		}
	}
	ids := s.mustPublish(t, name, `{"type":"end","data":"end"}`)
	run.finalID = ids[0]
	close(run.finalKnown)
	wg.Wait()
	close(subErr)
	for err := range subErr {
		t.Error(err)
	}
	if t.Failed() {
		return
	}

	all := s.readAll(t, name)
	if len(all) != total+1 {
		t.Fatalf("stream has %d events, want %d", len(all), total+1)
	}
	for i, sub := range subs {
		t.Logf("subscriber %d: live %v, start %s, %d events over %d connections", i, sub.live, sub.start, len(sub.got), sub.connects)
		if err := sub.check(all); err != nil {
			t.Errorf("subscriber %d (live %v, start %s, %d connections): %v", i, sub.live, sub.start, sub.connects, err)
		}
	}
}

// run connects, reads a random number of events, drops the connection and
// resumes after the last event it got, until it has the final event.
func (sub *e2eSubscriber) run(ctx context.Context, run *e2eRun, rng *rand.Rand) error {
	url := run.s.URL + "/v1/streams/" + run.name + "/events"
	last := ""
	if !sub.live {
		last = sub.start.String()
	}
	_, sub.acked, _ = run.p.get()
	for {
		c, err := testkit.DialSSE(ctx, run.s.client, url, last)
		if err != nil {
			if sub.connects == 0 {
				run.firstConnect <- struct{}{}
			}
			return err
		}
		// Every stream opens with the retry hint, sent after the
		// subscription exists.
		b, err := c.Next()
		if err != nil || b.Retry == "" {
			c.Close()
			if sub.connects == 0 {
				run.firstConnect <- struct{}{}
			}
			return fmt.Errorf("first block %+v, %v; want the retry hint", b, err)
		}
		if sub.connects == 0 {
			sub.bound = run.s.api.LastID()
			run.firstConnect <- struct{}{}
		}
		sub.connects++
		for n := 1 + rng.IntN(200); n > 0; n-- {
			e, err := c.NextEvent()
			if err != nil {
				c.Close()
				return err
			}
			sub.got = append(sub.got, e)
			last = e.ID
			if e.Type == "end" {
				c.Close()
				select {
				case <-run.finalKnown:
					if e.ID != run.finalID.String() {
						return fmt.Errorf("end event %s, want %s", e.ID, run.finalID)
					}
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		c.Close()
	}
}

// check compares what the subscriber got with the stream's events all. A
// live subscriber's start is known only within bounds: after every event
// acknowledged before it connected, and no later than the newest id
// committed once its stream had begun.
func (sub *e2eSubscriber) check(all []store.Event) error {
	start := 0
	if sub.live {
		if len(sub.got) == 0 {
			return fmt.Errorf("got nothing")
		}
		for start < len(all) && all[start].ID.String() != sub.got[0].ID {
			start++
		}
		if start == len(all) {
			return fmt.Errorf("first event %s is not in the stream", sub.got[0].ID)
		}
		if all[start].ID.Compare(sub.acked) <= 0 {
			return fmt.Errorf("got %s, acknowledged before it connected (%s)", all[start].ID, sub.acked)
		}
		if start > 0 && all[start-1].ID.Compare(sub.bound) > 0 {
			return fmt.Errorf("missed %s, committed after its stream began (bound %s)", all[start-1].ID, sub.bound)
		}
	} else {
		for start < len(all) && all[start].ID.Compare(sub.start) <= 0 {
			start++
		}
	}
	return testkit.DiffEvents(sub.got, all[start:])
}
