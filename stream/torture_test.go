package stream_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// acks records the ids the log has acknowledged, so that subscribers can
// start from real ids and a live subscriber can be checked against what was
// acknowledged before it subscribed.
type acks struct {
	mu   sync.Mutex
	ids  []store.ID // of the torture stream, in acknowledgement order
	max  store.ID
	tick chan struct{} // closed and replaced on every acknowledgement
	done chan struct{} // closed when publishing is over
}

func newAcks() *acks { return &acks{tick: make(chan struct{}), done: make(chan struct{})} }

func (a *acks) add(ids []store.ID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ids = append(a.ids, ids...)
	if last := ids[len(ids)-1]; last.Compare(a.max) > 0 {
		a.max = last
	}
	close(a.tick)
	a.tick = make(chan struct{})
}

func (a *acks) snapshot() (n int, max store.ID, tick <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.ids), a.max, a.tick
}

func (a *acks) random(rng *rand.Rand) store.ID {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.ids) == 0 {
		return store.ID{}
	}
	return a.ids[rng.IntN(len(a.ids))]
}

// waitAcks waits until n events have been acknowledged, publishing is over
// or stop is closed.
func (a *acks) waitAcks(n int, stop <-chan struct{}) {
	for {
		got, _, tick := a.snapshot()
		if got >= n {
			return
		}
		select {
		case <-tick:
		case <-a.done:
			return
		case <-stop:
			return
		}
	}
}

type subResult struct {
	live   bool
	start  store.ID // with live unset: the id the subscription starts after
	acked  store.ID // newest id acknowledged before a live Subscribe
	bound  store.ID // LastID right after a live Subscribe
	events []sseEvent
	err    error
}

// TestTorture races publishers against subscribers that start at random
// moments from random points and read at random paces (some stall until the
// tail has moved past them). Every subscriber must see exactly the stream's
// events after its start, in order, once each. The tail is cut by its own
// limits, or by a tail budget shared with a second followed stream: by fair
// shares, or, when the budget is smaller than a share, by emptying tails.
func TestTorture(t *testing.T) {
	tests := []struct {
		name string
		opts stream.Options
	}{
		{"tail_len", stream.Options{TailLen: 16, PageSize: 7}},
		{"fair_share", stream.Options{TailBudget: 2 * stream.MinTailShare, PageSize: 7}},
		{"tiny_budget", stream.Options{TailBudget: 1000, PageSize: 7}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { torture(t, tc.opts) })
	}
}

func torture(t *testing.T, opts stream.Options) {
	const (
		name        = "t"
		publishers  = 4
		perPub      = 120 // appends per publisher, of 1-5 events each
		subscribers = 16
	)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	l, h := newHub(t, opts)
	// A subscriber to the other stream the publishers write to shares the
	// tail budget, and must get every event of its stream too.
	other, err := h.SubscribeAfter("other", store.ID{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	otherDone := make(chan struct{})
	var otherGot []sseEvent
	var otherErr error
	otherEnd := make(chan store.ID, 1)
	go func() {
		defer close(otherDone)
		otherGot, _, otherErr = pull(other, <-otherEnd, testkit.Wait)
	}()
	a := newAcks()
	stop := make(chan struct{})
	var stopOnce sync.Once
	abort := func() { stopOnce.Do(func() { close(stop) }) }
	defer abort()

	results := make(chan subResult, subscribers)
	subscriber := func(rng *rand.Rand, end <-chan store.ID) {
		var r subResult
		defer func() { results <- r }()
		var sub *stream.Subscription
		switch rng.IntN(3) {
		case 0:
			r.live = true
			_, r.acked, _ = a.snapshot()
			sub, r.err = h.SubscribeLive(name)
			r.bound = l.LastID()
		case 1:
			sub, r.err = h.SubscribeAfter(name, store.ID{})
		default:
			r.start = a.random(rng)
			sub, r.err = h.SubscribeAfter(name, r.start)
		}
		if r.err != nil {
			return
		}
		defer sub.Close()
		var last store.ID
		for {
			select {
			case last = <-end:
			default:
			}
			if !last.IsZero() && sub.Cursor().Compare(last) >= 0 {
				return
			}
			// Now and then stall until many events have gone by, so that
			// the tail leaves this subscriber behind.
			if rng.IntN(20) == 0 {
				n, _, _ := a.snapshot()
				a.waitAcks(n+40, stop)
			}
			frames, wake, err := sub.Next()
			if err != nil {
				r.err = err
				return
			}
			for _, f := range frames {
				events, _, _ := parseSSE(f)
				r.events = append(r.events, events...)
			}
			if len(frames) > 0 {
				continue
			}
			select {
			case <-wake:
			case last = <-end:
			case <-stop:
				r.err = fmt.Errorf("stopped at cursor %s", sub.Cursor())
				return
			}
		}
	}

	// Each subscriber learns the final id from its own buffered channel.
	ends := make([]chan store.ID, subscribers)
	for i := range ends {
		ends[i] = make(chan store.ID, 1)
	}
	var subsStarted sync.WaitGroup
	subsStarted.Add(subscribers)
	pubErrs := make(chan error, publishers+1)
	var pubs sync.WaitGroup
	for p := range publishers {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(p)))
			for i := range perPub {
				// Publisher 0 starts the subscribers at random moments.
				if p == 0 && i%(perPub/subscribers) == 0 && i/(perPub/subscribers) < subscribers {
					k := i / (perPub / subscribers)
					srng := rand.New(rand.NewPCG(seed, uint64(1000+k)))
					go subscriber(srng, ends[k])
					subsStarted.Done()
				}
				target := name
				if rng.IntN(5) == 0 {
					target = "other"
				}
				batch := make([]store.Event, 1+rng.IntN(5))
				for j := range batch {
					batch[j] = store.Event{Data: fmt.Appendf(nil, "p%d\ni%d\r\nj%d", p, i, j)}
					if rng.IntN(2) == 0 {
						batch[j].Type = fmt.Sprintf("type%d", p)
					}
				}
				ids, err := l.Append(context.Background(), target, batch)
				if err != nil {
					pubErrs <- err
					abort()
					return
				}
				if target == name {
					a.add(ids)
				}
			}
		}()
	}
	pubs.Wait()
	close(a.done)
	close(pubErrs)
	for err := range pubErrs {
		t.Fatal(err)
	}
	// Every subscriber has subscribed once publisher 0 is done; the final
	// event is committed after that, so even a live one must see it.
	subsStarted.Wait()
	final, err := l.Append(context.Background(), name, []store.Event{{Type: "end", Data: []byte("end")}})
	if err != nil {
		t.Fatal(err)
	}
	otherFinal, err := l.Append(context.Background(), "other", []store.Event{{Type: "end", Data: []byte("end")}})
	if err != nil {
		t.Fatal(err)
	}
	otherEnd <- otherFinal[0]
	for _, end := range ends {
		end <- final[0]
	}

	timeout := time.NewTimer(testkit.Wait)
	defer timeout.Stop()
	all := readAfter(t, l, name, store.ID{})
	for i := range subscribers {
		var r subResult
		select {
		case r = <-results:
		case <-timeout.C:
			abort()
			t.Fatalf("subscriber %d of %d did not finish", i, subscribers)
		}
		if r.err != nil {
			t.Errorf("subscriber: %v", r.err)
			continue
		}
		if err := checkSubscriber(r, all); err != nil {
			t.Errorf("subscriber (live %v, start %s): %v", r.live, r.start, err)
		}
	}
	select {
	case <-otherDone:
	case <-timeout.C:
		abort()
		t.Fatal("the other stream's subscriber did not finish")
	}
	if otherErr != nil {
		t.Fatalf("other stream: %v", otherErr)
	}
	if err := testkit.DiffEvents(otherGot, readAfter(t, l, "other", store.ID{})); err != nil {
		t.Errorf("other stream: %v", err)
	}
	budget := opts.TailBudget
	if budget == 0 {
		budget = stream.DefaultTailBudget
	}
	if u := h.Usage().TailBytes; u > budget {
		t.Errorf("tails hold %d bytes, over the budget of %d", u, budget)
	}
}

// checkSubscriber compares what one subscriber got with the stream's events
// all. A live subscriber's start is not known exactly: it is some point
// after every event acknowledged before it subscribed, and no later than
// the newest id committed right after.
func checkSubscriber(r subResult, all []store.Event) error {
	start := 0
	if r.live {
		if len(r.events) == 0 {
			return fmt.Errorf("live subscriber got nothing")
		}
		for start < len(all) && all[start].ID.String() != r.events[0].ID {
			start++
		}
		if start == len(all) {
			return fmt.Errorf("first event %s is not in the stream", r.events[0].ID)
		}
		if all[start].ID.Compare(r.acked) <= 0 {
			return fmt.Errorf("got %s, acknowledged before the subscribe (%s)", all[start].ID, r.acked)
		}
		if start > 0 && all[start-1].ID.Compare(r.bound) > 0 {
			return fmt.Errorf("missed %s, committed after the subscribe (bound %s)", all[start-1].ID, r.bound)
		}
	} else {
		for start < len(all) && all[start].ID.Compare(r.start) <= 0 {
			start++
		}
	}
	return testkit.DiffEvents(r.events, all[start:])
}
