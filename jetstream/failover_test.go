package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// The shape of TestLeaderFailure's run.
const (
	failoverPublishers  = 8
	failoverSubscribers = 16
	// failoverBefore and failoverAfter are the publishes acknowledged
	// before the leader's server is shut down, and after it.
	failoverBefore = 300
	failoverAfter  = 300
	// failoverAttempt is a publisher's own timeout for one attempt: a
	// client that hears nothing for that long sends the same request
	// (same key) to the other front-end, while the first may still be
	// stored.
	failoverAttempt = 3 * time.Second
	// Deadlines, not expectations: for publishing to resume through both
	// front-ends, for one event to be acknowledged (else a publisher
	// reports a hang), and for the subscribers to reach the last event
	// once publishing stopped.
	failoverRecovery = 30 * time.Second
	failoverGiveUp   = 40 * time.Second
	failoverCatchUp  = 20 * time.Second
)

var failoverStreams = []string{"orders", "audit.log", "chat"}

// TestLeaderFailure shuts the JetStream stream leader's server down while
// 8 publishers write through two front-ends, each on its own node (one of
// them the leader's: its connection moves to the other nodes), and 16
// subscribers follow three streams over SSE, dropping their connections at
// random and resuming through either front-end. Afterwards every
// acknowledged event is stored once, at the id it was acknowledged with,
// in order, and nothing else is; every subscriber received exactly its
// stream from where it started, with no reset; publishing resumed through
// both front-ends. The failover window is measured and logged.
func TestLeaderFailure(t *testing.T) {
	if testing.Short() {
		t.Skip("a three-node cluster for several seconds")
	}
	begin := time.Now()
	ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	c := startTestCluster(t, 3)
	dir := t.TempDir()
	// The first front-end creates the stream; the second goes on the
	// leader's node (the next one when that is the first's), so that the
	// shutdown always takes a front-end's node away.
	fes := []*failoverFrontEnd{startFailoverFrontEnd(t, c, 0, filepath.Join(dir, "fe0.db"))}
	waitUntil(t, 20*time.Second, func() error {
		if c.streamLeader(DefaultStream) < 0 {
			return errors.New("no stream leader")
		}
		return nil
	})
	second := max(c.streamLeader(DefaultStream), 1)
	fes = append(fes, startFailoverFrontEnd(t, c, second, filepath.Join(dir, "fe1.db")))
	t.Logf("cluster and front-ends (nodes 0 and %d) ready after %s", second, ms(time.Since(begin)))

	ctx, cancel := context.WithCancel(context.Background())
	rec := &failoverRecord{}
	pubClient, subClient := testkit.Client(t), testkit.Client(t)
	targets := &failoverTargets{set: make(chan struct{})}
	subCtx, subCancel := context.WithCancel(ctx)
	stop := make(chan struct{})
	var pubWG, subWG sync.WaitGroup
	stopPublishers := sync.OnceFunc(func() { close(stop); pubWG.Wait() })
	defer func() { cancel(); stopPublishers(); subWG.Wait() }()

	subs := make([]*failoverSubscriber, failoverSubscribers)
	for i := range subs {
		s := &failoverSubscriber{stream: failoverStreams[i%len(failoverStreams)], fromStart: i%2 == 0}
		subs[i] = s
		subWG.Go(func() {
			if !s.fromStart {
				// A live start at a random moment of the run's first part.
				time.Sleep(time.Duration(rand.IntN(500)) * time.Millisecond)
			}
			s.run(subCtx, fes, subClient, targets, rec)
		})
	}
	for p := range failoverPublishers {
		pubWG.Go(func() { publisher(ctx, p, fes, pubClient, stop, rec) })
	}

	waitUntil(t, 60*time.Second, func() error {
		if n := rec.count(); n < failoverBefore {
			return fmt.Errorf("%d publishes acknowledged, want %d before the shutdown", n, failoverBefore)
		}
		return nil
	})
	leader := c.streamLeader(DefaultStream)
	if leader < 0 {
		t.Fatal("no stream leader to shut down")
	}
	metaLeader := -1
	for i, s := range c.servers {
		if s.NATS().JetStreamIsLeader() {
			metaLeader = i
		}
	}
	before := rec.count()
	shutdown := time.Now()
	c.servers[leader].Shutdown()
	t.Logf("shut down node %d, the stream leader (the meta leader was node %d), after %d acknowledged publishes, in %s",
		leader, metaLeader, before, ms(time.Since(shutdown)))

	deadline := time.Now().Add(failoverRecovery)
	var elected time.Duration
	for {
		if l := c.streamLeader(DefaultStream); elected == 0 && l >= 0 && l != leader {
			elected = time.Since(shutdown)
		}
		total, perFE := rec.acksSince(shutdown)
		if total >= failoverAfter && perFE[0] > 0 && perFE[1] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%s after the shutdown, %d publishes acknowledged since (%v per front-end); want %d, through both", failoverRecovery, total, perFE, failoverAfter)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopPublishers()
	stopped := time.Now()
	t.Logf("new stream leader seen %s after the shutdown; the front-ends' connections are now on %s and %s",
		ms(elected), fes[0].nc.ConnectedServerName(), fes[1].nc.ConnectedServerName())
	rec.mu.Lock()
	acks := slices.Clone(rec.acks)
	rec.mu.Unlock()
	logFailoverWindow(t, rec, acks, shutdown, stopped)

	// The subscribers read up to their stream's last event.
	targets.m = map[string]store.ID{}
	var lastID store.ID
	for _, a := range acks {
		if a.id.Compare(targets.m[a.stream]) > 0 {
			targets.m[a.stream] = a.id
		}
		if a.id.Compare(lastID) > 0 {
			lastID = a.id
		}
	}
	close(targets.set)
	subDone := make(chan struct{})
	go func() { subWG.Wait(); close(subDone) }()
	select {
	case <-subDone:
	case <-time.After(failoverCatchUp):
		subCancel()
		<-subDone
		t.Errorf("the subscribers did not all reach their stream's last event within %s", failoverCatchUp)
	}
	subCancel()
	caughtUp := time.Now()

	for i, fe := range fes {
		waitUntil(t, 20*time.Second, func() error {
			if fe.log.LastID().Compare(lastID) < 0 {
				return fmt.Errorf("front-end %d's copy at %s (position %d), want %s", i, fe.log.LastID(), fe.log.Position(), lastID)
			}
			return nil
		})
	}
	hctx, hcancel := context.WithTimeout(ctx, 30*time.Second)
	defer hcancel()
	histories := map[string][]historyItem{}
	for _, s := range failoverStreams {
		h0, err := readHistory(hctx, pubClient, fes[0].url, s)
		if err != nil {
			t.Fatalf("front-end 0: %v", err)
		}
		h1, err := readHistory(hctx, pubClient, fes[1].url, s)
		if err != nil {
			t.Fatalf("front-end 1: %v", err)
		}
		if err := sameHistory(h0, h1); err != nil {
			t.Errorf("stream %s: the front-ends' histories differ: %v", s, err)
		}
		if err := checkHistory(h0, acks, s); err != nil {
			t.Errorf("stream %s: %v", s, err)
		}
		histories[s] = h0
	}
	checkPublisherOrder(t, acks)
	conns := 0
	for i, s := range subs {
		conns += len(s.conns)
		if s.failed {
			continue // its error is among rec.errs
		}
		if err := checkReceived(s, histories[s.stream]); err != nil {
			t.Errorf("subscriber %d of %s (%d connections): %v", i, s.stream, len(s.conns), err)
		}
	}
	for _, err := range rec.errs {
		t.Error(err)
	}
	t.Logf("%d publishes acknowledged (%d after the shutdown), %d SSE connections; run took %s (shutdown at %s, publishing stopped at %s, subscribers done at %s)",
		len(acks), len(acks)-before, conns, ms(time.Since(begin)), ms(shutdown.Sub(begin)), ms(stopped.Sub(begin)), ms(caughtUp.Sub(begin)))
}

// failoverFrontEnd is an sselog front-end on one node: its own connection
// (its node first, the others after), local copy, hub and HTTP server.
type failoverFrontEnd struct {
	nc  *nats.Conn
	log *Log
	url string
}

func startFailoverFrontEnd(t *testing.T, c *testCluster, node int, path string) *failoverFrontEnd {
	t.Helper()
	urls := []string{c.servers[node].ClientURL()}
	for i, s := range c.servers {
		if i != node {
			urls = append(urls, s.ClientURL())
		}
	}
	// DontRandomize: the pool in the order given, this node first.
	nc, err := nats.Connect(strings.Join(urls, ","), nats.DontRandomize(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if got, want := nc.ConnectedServerName(), c.configs[node].Name; got != want {
		t.Fatalf("the front-end for %s connected to %s", want, got)
	}
	l := openTestLog(t, nc, path, 3)
	hub := stream.NewHub(l, stream.Options{})
	h := httpapi.NewHandler(l, hub, httpapi.Options{})
	srv := testkit.Serve(t, h, testkit.ServeOptions{Config: func(s *http.Server) { s.RegisterOnShutdown(h.Close) }})
	// Runs before the server's Close: ends the SSE handlers it waits for.
	t.Cleanup(hub.Close)
	return &failoverFrontEnd{nc: nc, log: l, url: srv.URL}
}

// failoverAck is one acknowledged publish.
type failoverAck struct {
	began, sent, at time.Time // the event's first attempt, the acknowledged attempt, its answer
	fe              int       // the front-end that answered
	stream          string
	p, n            int // publisher and counter
	id              store.ID
}

// failoverRecord collects what the goroutines see: they never fail the
// test themselves.
type failoverRecord struct {
	mu       sync.Mutex
	acks     []failoverAck
	errs     []error
	failures map[string]int // failed publish attempts, by front-end and kind
}

func (r *failoverRecord) ack(a failoverAck) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.acks = append(r.acks, a)
}

func (r *failoverRecord) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
}

func (r *failoverRecord) failedAttempt(fe int, kind string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failures == nil {
		r.failures = map[string]int{}
	}
	r.failures[fmt.Sprintf("front-end %d %s", fe, kind)]++
}

func (r *failoverRecord) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.acks)
}

// acksSince counts the acknowledgements at or after t, in all and per
// front-end.
func (r *failoverRecord) acksSince(t time.Time) (total int, perFE [2]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range r.acks {
		if !a.at.Before(t) {
			total++
			perFE[a.fe]++
		}
	}
	return total, perFE
}

// errRetry marks a failed publish attempt worth repeating: a 503, a
// network error, or the client's own timeout.
var errRetry = errors.New("retry")

// postEvent sends one keyed publish and returns the id it was stored at.
func postEvent(ctx context.Context, client *http.Client, base, streamName, key, body string) (store.ID, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/streams/"+url.PathEscape(streamName)+"/events", strings.NewReader(body))
	if err != nil {
		return store.ID{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := client.Do(req)
	var b []byte
	if err == nil {
		b, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return store.ID{}, fmt.Errorf("%w: timeout: %w", errRetry, err)
	case err != nil:
		return store.ID{}, fmt.Errorf("%w: network: %w", errRetry, err)
	}
	switch resp.StatusCode {
	case http.StatusCreated:
		var out struct{ ID store.ID }
		if err := json.Unmarshal(b, &out); err != nil || out.ID.IsZero() {
			return store.ID{}, fmt.Errorf("answer %q: %v", b, err)
		}
		return out.ID, nil
	case http.StatusServiceUnavailable:
		return store.ID{}, fmt.Errorf("%w: 503: %s", errRetry, strings.TrimSpace(string(b)))
	default:
		return store.ID{}, fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
}

// publisher publishes numbered events until stop is closed, through the
// two front-ends in turn, each with its own Idempotency-Key, and retries
// the same request on the other front-end after a 503, a network error or
// its own timeout, until it is acknowledged. It stops only between
// events: every event it began was acknowledged.
func publisher(ctx context.Context, p int, fes []*failoverFrontEnd, client *http.Client, stop <-chan struct{}, rec *failoverRecord) {
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		s := failoverStreams[(p+n)%len(failoverStreams)]
		key := fmt.Sprintf("p%d-n%d", p, n)
		body := fmt.Sprintf(`{"data":{"p":%d,"n":%d}}`, p, n)
		fe := (p + n) % len(fes)
		began := time.Now()
		for {
			sent := time.Now()
			actx, cancel := context.WithTimeout(ctx, failoverAttempt)
			id, err := postEvent(actx, client, fes[fe].url, s, key, body)
			cancel()
			if err == nil {
				rec.ack(failoverAck{began: began, sent: sent, at: time.Now(), fe: fe, stream: s, p: p, n: n, id: id})
				break
			}
			if ctx.Err() != nil {
				return
			}
			if !errors.Is(err, errRetry) {
				rec.fail(fmt.Errorf("publisher %d, event %d, front-end %d: %w", p, n, fe, err))
				return
			}
			kind, _, _ := strings.Cut(strings.TrimPrefix(err.Error(), "retry: "), ":")
			rec.failedAttempt(fe, kind)
			if time.Since(began) > failoverGiveUp {
				rec.fail(fmt.Errorf("publisher %d, event %d: not acknowledged in %s: %w", p, n, failoverGiveUp, err))
				return
			}
			fe = (fe + 1) % len(fes)
			time.Sleep(20 * time.Millisecond) // a client's pause before it retries
		}
		time.Sleep(time.Duration(rand.IntN(8)) * time.Millisecond) // pace
	}
}

// failoverSubscriber reads one stream over SSE, dropping its connection
// at random and resuming through a random front-end with Last-Event-ID,
// as EventSource does.
type failoverSubscriber struct {
	stream    string
	fromStart bool     // its first connection asks for since=0; else live
	start     store.ID // the id its first stream started after
	got       []subEvent
	conns     []string // per connection: the front-end and the Last-Event-ID sent
	reached   bool     // it received its stream's last event
	failed    bool     // it recorded an error and stopped
}

// subEvent is an event a subscriber received, with its connection.
type subEvent struct {
	id   store.ID
	data string
	conn int
}

// failoverTargets is each stream's last event, known once publishing
// stopped: set is closed after m is written.
type failoverTargets struct {
	set chan struct{}
	m   map[string]store.ID
}

// run reads until it has received its stream's last event (once targets
// are set) or ctx ends. A reset, or anything the server never sends, is
// recorded as an error and ends it.
func (s *failoverSubscriber) run(ctx context.Context, fes []*failoverFrontEnd, client *http.Client, targets *failoverTargets, rec *failoverRecord) {
	started := false
	var last string // the Last-Event-ID an EventSource would send
	done := func() bool {
		select {
		case <-targets.set:
		default:
			return false
		}
		target := targets.m[s.stream]
		return started && (len(s.got) > 0 && s.got[len(s.got)-1].id.Compare(target) >= 0 || s.start.Compare(target) >= 0)
	}
	fail := func(err error) {
		rec.fail(fmt.Errorf("subscriber of %s: %w", s.stream, err))
		s.failed = true
	}
	for !done() && ctx.Err() == nil {
		fe := rand.IntN(len(fes))
		u := fes[fe].url + "/v1/streams/" + url.PathEscape(s.stream) + "/events"
		if !started && s.fromStart {
			u += "?since=0"
		}
		// Drop points: after a random count of events or a random time,
		// whichever comes first; some connections stay long enough to see
		// a resume wait for a front-end's copy. A connection that may
		// hold everything already is dropped when the targets are set.
		cctx, cancel := context.WithTimeout(ctx, time.Duration(100+rand.IntN(3900))*time.Millisecond)
		select {
		case <-targets.set:
		default:
			go func() {
				select {
				case <-targets.set:
					cancel()
				case <-cctx.Done():
				}
			}()
		}
		r, err := testkit.DialSSE(cctx, client, u, last)
		if err != nil {
			cancel()
			if ctx.Err() == nil && cctx.Err() == nil {
				fail(err)
				return
			}
			continue
		}
		conn := len(s.conns)
		s.conns = append(s.conns, fmt.Sprintf("front-end %d after %q", fe, last))
		for k := 1 + rand.IntN(150); k > 0 && !done(); {
			b, err := r.Next()
			if err != nil {
				break // dropped, by this side or the server's
			}
			if !b.HasData {
				if !b.HasID {
					continue // a heartbeat or a retry hint
				}
				id, err := store.ParseID(b.ID)
				if err != nil {
					fail(fmt.Errorf("a start block's id: %w", err))
					break
				}
				if !started {
					s.start, started = id, true
				}
				last = b.ID
				continue
			}
			ev, err := b.Event()
			if err == nil && ev.Type != "message" {
				err = fmt.Errorf("a %q event %s (front-end %d's copy was at sequence %d; it resumed from one at %d)",
					ev.Type, ev.Data, fe, fes[fe].log.Position(), resumeSeq(last))
			}
			var id store.ID
			if err == nil {
				id, err = store.ParseID(ev.ID)
			}
			if err == nil && !started {
				err = errors.New("an event before the start block")
			}
			if err != nil {
				fail(fmt.Errorf("connection %d (%s), after %d events: %w", conn, s.conns[conn], len(s.got), err))
				break
			}
			s.got = append(s.got, subEvent{id: id, data: ev.Data, conn: conn})
			last = ev.ID
			k--
		}
		r.Close()
		cancel()
		if s.failed {
			return
		}
	}
	s.reached = done()
}

func resumeSeq(last string) uint64 {
	id, err := store.ParseID(last)
	if err != nil {
		return 0
	}
	return idSeq(id)
}

type historyItem struct {
	ID   store.ID        `json:"id"`
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

// readHistory pages through a stream's history on one front-end.
func readHistory(ctx context.Context, client *http.Client, base, streamName string) ([]historyItem, error) {
	var out []historyItem
	for {
		u := base + "/v1/streams/" + url.PathEscape(streamName) + "/history?limit=1000"
		if len(out) > 0 {
			u += "&after=" + out[len(out)-1].ID.String()
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: status %d: %s", u, resp.StatusCode, b)
		}
		var page struct {
			Events []historyItem `json:"events"`
			Gap    bool          `json:"gap"`
		}
		if err := json.Unmarshal(b, &page); err != nil {
			return nil, fmt.Errorf("GET %s: %w", u, err)
		}
		if page.Gap {
			return nil, fmt.Errorf("GET %s: a gap", u)
		}
		if len(page.Events) == 0 {
			return out, nil
		}
		out = append(out, page.Events...)
	}
}

// sameHistory compares two front-ends' histories of one stream.
func sameHistory(a, b []historyItem) error {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i].ID != b[i].ID || string(a[i].Data) != string(b[i].Data) {
			return fmt.Errorf("event %d: %s %s and %s %s", i, a[i].ID, a[i].Data, b[i].ID, b[i].Data)
		}
	}
	if len(a) != len(b) {
		return fmt.Errorf("%d and %d events", len(a), len(b))
	}
	return nil
}

// checkHistory checks a stream's history against the publishes
// acknowledged in it: the same events, each once, at the ids their
// acknowledgements gave, in increasing id order.
func checkHistory(h []historyItem, acks []failoverAck, streamName string) error {
	type pn struct{ p, n int }
	want := map[pn]store.ID{}
	for _, a := range acks {
		if a.stream == streamName {
			want[pn{a.p, a.n}] = a.id
		}
	}
	seen := map[pn]store.ID{}
	for i, e := range h {
		if i > 0 && e.ID.Compare(h[i-1].ID) <= 0 {
			return fmt.Errorf("event %d: id %s not after %s", i, e.ID, h[i-1].ID)
		}
		var d struct{ P, N *int }
		if err := json.Unmarshal(e.Data, &d); err != nil || d.P == nil || d.N == nil || e.Type != "message" {
			return fmt.Errorf("event %d (%s): type %q, data %s", i, e.ID, e.Type, e.Data)
		}
		k := pn{*d.P, *d.N}
		if prev, dup := seen[k]; dup {
			return fmt.Errorf("publisher %d's event %d stored twice, at %s and %s", k.p, k.n, prev, e.ID)
		}
		seen[k] = e.ID
		switch id, ok := want[k]; {
		case !ok:
			return fmt.Errorf("publisher %d's event %d stored at %s, never acknowledged in this stream", k.p, k.n, e.ID)
		case id != e.ID:
			return fmt.Errorf("publisher %d's event %d stored at %s, acknowledged as %s", k.p, k.n, e.ID, id)
		}
	}
	for k, id := range want {
		if _, ok := seen[k]; !ok {
			return fmt.Errorf("publisher %d's event %d, acknowledged as %s, is missing (%d of %d stored)", k.p, k.n, id, len(seen), len(want))
		}
	}
	return nil
}

// checkPublisherOrder: a publisher sends an event once the previous one is
// acknowledged, so its ids increase with its counter, across streams and
// front-ends.
func checkPublisherOrder(t *testing.T, acks []failoverAck) {
	t.Helper()
	byPub := map[int][]failoverAck{}
	for _, a := range acks {
		byPub[a.p] = append(byPub[a.p], a)
	}
	for p, as := range byPub {
		slices.SortFunc(as, func(a, b failoverAck) int { return a.n - b.n })
		for i := 1; i < len(as); i++ {
			if as[i].id.Compare(as[i-1].id) <= 0 {
				t.Errorf("publisher %d: event %d acknowledged as %s, not after event %d's %s", p, as[i].n, as[i].id, as[i-1].n, as[i-1].id)
				break
			}
		}
	}
}

// checkReceived compares what a subscriber received across its
// connections with its stream's history after where it started.
func checkReceived(s *failoverSubscriber, h []historyItem) error {
	i, found := slices.BinarySearchFunc(h, s.start, func(e historyItem, id store.ID) int { return e.ID.Compare(id) })
	if found {
		i++
	}
	want := h[i:]
	for j := 0; j < len(s.got) && j < len(want); j++ {
		if g := s.got[j]; g.id != want[j].ID || g.data != string(want[j].Data) {
			return fmt.Errorf("event %d after the start %s: got %s %s (connection %d: %s), want %s %s",
				j, s.start, g.id, g.data, g.conn, s.conns[g.conn], want[j].ID, want[j].Data)
		}
	}
	if len(s.got) > len(want) {
		g := s.got[len(want)]
		return fmt.Errorf("%d events after the stream's last: %s %s (connection %d: %s)", len(s.got)-len(want), g.id, g.data, g.conn, s.conns[g.conn])
	}
	if !s.reached || len(s.got) < len(want) {
		return fmt.Errorf("stopped after %d of %d events", len(s.got), len(want))
	}
	return nil
}

// logFailoverWindow logs how long publishing stalled around the shutdown:
// across the cluster, the interval without an acknowledgement that spans
// it and the longest one of the run; per front-end, the longest interval
// after it without an acknowledgement through that front-end, and its
// first acknowledgement of a request sent after it (earlier ones may have
// been answered by the old leader); and the longest wait for one event,
// from its first attempt to its acknowledgement.
func logFailoverWindow(t *testing.T, rec *failoverRecord, acks []failoverAck, shutdown, stopped time.Time) {
	t.Helper()
	ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	acks = slices.Clone(acks)
	slices.SortFunc(acks, func(a, b failoverAck) int { return a.at.Compare(b.at) })
	var lastBefore, firstAfter time.Time
	var longest, slowest time.Duration
	var longestAt time.Time
	var slowestAck failoverAck
	var feLast, feFirst [2]time.Time
	var feLongest [2]time.Duration
	feLast[0], feLast[1] = shutdown, shutdown
	for i, a := range acks {
		if !a.at.After(shutdown) {
			lastBefore = a.at
		} else {
			if firstAfter.IsZero() {
				firstAfter = a.at
			}
			feLongest[a.fe] = max(feLongest[a.fe], a.at.Sub(feLast[a.fe]))
			feLast[a.fe] = a.at
		}
		if a.sent.After(shutdown) && feFirst[a.fe].IsZero() {
			feFirst[a.fe] = a.at
		}
		if i > 0 && a.at.Sub(acks[i-1].at) > longest {
			longest, longestAt = a.at.Sub(acks[i-1].at), acks[i-1].at
		}
		if d := a.at.Sub(a.began); d > slowest {
			slowest, slowestAck = d, a
		}
	}
	if firstAfter.IsZero() {
		t.Logf("failover window: no publish acknowledged after the shutdown")
		return
	}
	for fe := range feLongest {
		feLongest[fe] = max(feLongest[fe], stopped.Sub(feLast[fe]))
	}
	since := func(at time.Time) string {
		if at.IsZero() {
			return "never"
		}
		return ms(at.Sub(shutdown)).String()
	}
	rec.mu.Lock()
	failures := fmt.Sprint(rec.failures)
	rec.mu.Unlock()
	t.Logf("failover window: no acknowledgement from %s before the shutdown to %s after it; the longest interval without one was %s, from %s after it",
		ms(shutdown.Sub(lastBefore)), ms(firstAfter.Sub(shutdown)), ms(longest), ms(longestAt.Sub(shutdown)))
	t.Logf("after the shutdown, front-end 0 acknowledged nothing for up to %s (first for a request sent after it at %s), front-end 1 for up to %s (first at %s)",
		ms(feLongest[0]), since(feFirst[0]), ms(feLongest[1]), since(feFirst[1]))
	t.Logf("slowest event: %s from first attempt to acknowledgement (publisher %d's event %d, first sent %s after the shutdown); failed attempts: %s",
		ms(slowest), slowestAck.p, slowestAck.n, ms(slowestAck.began.Sub(shutdown)), failures)
}
