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
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// Sizes of TestLeaderFailure's run.
const (
	failoverPublishers  = 8
	failoverSubscribers = 16
	// failoverBefore and failoverAfter are the acknowledged publishes
	// before the leader is shut down and after it.
	failoverBefore = 300
	failoverAfter  = 300
	// failoverRecovery bounds the wait for publishing to resume through
	// both front-ends; failoverCatchUp the subscribers' wait for the last
	// event once publishing stopped. Both are deadlines, not expectations.
	failoverRecovery = 30 * time.Second
	failoverCatchUp  = 20 * time.Second
	// failoverGiveUp is how long a publisher retries one event before it
	// reports a hang.
	failoverGiveUp = 40 * time.Second
	// failoverAttempt is a publisher's own timeout for one attempt: a
	// client that hears nothing for that long sends the same request (same
	// key) to the other front-end, while the first may still be stored.
	failoverAttempt = 3 * time.Second
)

var failoverStreams = []string{"orders", "audit.log", "chat"}

// failoverFrontEnd is an sselog front-end on one node: its own connection
// (its node first, the others after), local copy, hub and HTTP server.
type failoverFrontEnd struct {
	node int
	nc   *nats.Conn
	log  *Log
	url  string
}

func startFailoverFrontEnd(t *testing.T, c *testCluster, node int, path string) *failoverFrontEnd {
	t.Helper()
	urls := []string{c.servers[node].ClientURL()}
	for i, s := range c.servers {
		if i != node {
			urls = append(urls, s.ClientURL())
		}
	}
	// The pool in the order given: the first server is this node.
	nc, err := nats.Connect(strings.Join(urls, ","), nats.DontRandomize(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if got, want := nc.ConnectedServerName(), c.configs[node].Name; got != want {
		t.Fatalf("front-end for %s connected to %s", want, got)
	}
	l := openTestLog(t, nc, path, 3)
	hub := stream.NewHub(l, stream.Options{})
	h := httpapi.NewHandler(l, hub, httpapi.Options{})
	srv := testkit.Serve(t, h, testkit.ServeOptions{Config: func(s *http.Server) { s.RegisterOnShutdown(h.Close) }})
	// Runs before the server's Close: ends the SSE handlers it would wait for.
	t.Cleanup(hub.Close)
	return &failoverFrontEnd{node: node, nc: nc, log: l, url: srv.URL}
}

// failoverAck is one acknowledged publish.
type failoverAck struct {
	began  time.Time // the event's first attempt
	sent   time.Time // the acknowledged attempt
	at     time.Time
	fe     int
	stream string
	p, n   int
	id     store.ID
}

// failoverRecord collects what the goroutines saw; they never fail the
// test themselves.
type failoverRecord struct {
	mu       sync.Mutex
	acks     []failoverAck
	errs     []error
	failures [2]map[string]int // per front-end: kind of failed attempt -> count
	nAcks    atomic.Int64
}

func (r *failoverRecord) ack(a failoverAck) {
	r.mu.Lock()
	r.acks = append(r.acks, a)
	r.mu.Unlock()
	r.nAcks.Add(1)
}

func (r *failoverRecord) fail(err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
}

func (r *failoverRecord) failedAttempt(fe int, kind string) {
	r.mu.Lock()
	if r.failures[fe] == nil {
		r.failures[fe] = map[string]int{}
	}
	r.failures[fe][kind]++
	r.mu.Unlock()
}

// acksSince counts the acknowledgements at or after t, per front-end.
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

// errRetry marks a publish attempt worth repeating: a network error or a
// 503.
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
	if err == nil {
		defer resp.Body.Close()
	}
	var b []byte
	if err == nil {
		b, err = io.ReadAll(resp.Body)
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return store.ID{}, fmt.Errorf("%w: timeout: %w", errRetry, err)
	case err != nil:
		return store.ID{}, fmt.Errorf("%w: network: %w", errRetry, err)
	}
	switch resp.StatusCode {
	case http.StatusCreated:
		var out struct {
			ID store.ID `json:"id"`
		}
		if err := json.Unmarshal(b, &out); err != nil || out.ID.IsZero() {
			return store.ID{}, fmt.Errorf("answer %q: %v", b, err)
		}
		return out.ID, nil
	case http.StatusServiceUnavailable:
		return store.ID{}, fmt.Errorf("%w: 503: %s", errRetry, strings.TrimSpace(string(b)))
	default:
		return store.ID{}, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
}

// publisher publishes numbered events until stop is closed, through the
// two front-ends in turn, each with its own Idempotency-Key, retrying the
// same request on the other front-end after a 503, a network error or its
// own timeout, until it is acknowledged. It stops only between events, so
// that every event it began was acknowledged.
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
			rctx, cancel := context.WithTimeout(ctx, failoverAttempt)
			id, err := postEvent(rctx, client, fes[fe].url, s, key, body)
			cancel()
			if err == nil {
				rec.ack(failoverAck{began: began, sent: sent, at: time.Now(), fe: fe, stream: s, p: p, n: n, id: id})
				break
			}
			if !errors.Is(err, errRetry) {
				rec.fail(fmt.Errorf("publisher %d, event %d, front-end %d: %w", p, n, fe, err))
				return
			}
			kind, _, _ := strings.Cut(strings.TrimPrefix(err.Error(), errRetry.Error()+": "), ":")
			rec.failedAttempt(fe, kind)
			if ctx.Err() != nil {
				return
			}
			if time.Since(began) > failoverGiveUp {
				rec.fail(fmt.Errorf("publisher %d, event %d: not acknowledged after %s: %w", p, n, failoverGiveUp, err))
				return
			}
			// A client goes to the other front-end, after a pause.
			fe = (fe + 1) % len(fes)
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(time.Duration(rand.IntN(8)) * time.Millisecond)
	}
}

// subEvent is one event a subscriber received, with the connection that
// brought it.
type subEvent struct {
	id   store.ID
	data string
	conn int
}

// failoverSubscriber reads one stream over SSE, dropping its connection
// at random and resuming through a random front-end with Last-Event-ID.
type failoverSubscriber struct {
	stream    string
	fromStart bool     // first connection with since=0; else live
	start     store.ID // the id its first stream started after
	got       []subEvent
	conns     []string // per connection: front-end and Last-Event-ID sent
	reached   bool
	failed    bool // an error was recorded: what it received is not compared
}

// run reads until it has received targets' id for its stream (once
// targets is set) or ctx ends. A reset, or anything this server never
// sends, is recorded as an error.
func (s *failoverSubscriber) run(ctx context.Context, fes []*failoverFrontEnd, client *http.Client, targets *atomic.Pointer[map[string]store.ID], rec *failoverRecord) {
	started := false
	var last string
	done := func() bool {
		m := targets.Load()
		if m == nil {
			return false
		}
		target := (*m)[s.stream]
		return started && (len(s.got) > 0 && s.got[len(s.got)-1].id.Compare(target) >= 0 || s.start.Compare(target) >= 0)
	}
	for !done() {
		if ctx.Err() != nil {
			return
		}
		fe := rand.IntN(len(fes))
		u := fes[fe].url + "/v1/streams/" + url.PathEscape(s.stream) + "/events"
		if !started && s.fromStart {
			u += "?since=0"
		}
		// The drop points: after a random count of events or a random
		// time, whichever comes first. Some connections stay long enough
		// to see a resume that waits for the front-end's copy.
		cctx, cancel := context.WithTimeout(ctx, time.Duration(100+rand.IntN(3900))*time.Millisecond)
		r, err := testkit.DialSSE(cctx, client, u, last)
		if err != nil {
			cancel()
			if ctx.Err() == nil && cctx.Err() == nil {
				rec.fail(fmt.Errorf("subscriber of %s: %w", s.stream, err))
				s.failed = true
				return
			}
			continue
		}
		conn := len(s.conns)
		s.conns = append(s.conns, fmt.Sprintf("front-end %d after %q", fe, last))
		for k := 1 + rand.IntN(150); k > 0 && !done(); {
			b, err := r.Next()
			if err != nil {
				break // dropped (by us, or the server went)
			}
			if !b.HasData {
				if b.HasID {
					id, err := store.ParseID(b.ID)
					if err != nil {
						rec.fail(fmt.Errorf("subscriber of %s: start block id: %w", s.stream, err))
						s.failed = true
						r.Close()
						cancel()
						return
					}
					if !started {
						s.start, started = id, true
					}
					last = b.ID
				}
				continue
			}
			ev, err := b.Event()
			if err == nil && ev.Type != "message" {
				err = fmt.Errorf("a %q event: %s", ev.Type, ev.Data)
			}
			var id store.ID
			if err == nil {
				id, err = store.ParseID(ev.ID)
			}
			if err == nil && !started {
				err = errors.New("an event before the start block")
			}
			if err != nil {
				rec.fail(fmt.Errorf("subscriber of %s, connection %d (%s), after %d events: %w", s.stream, conn, s.conns[conn], len(s.got), err))
				s.failed = true
				r.Close()
				cancel()
				return
			}
			s.got = append(s.got, subEvent{id: id, data: ev.Data, conn: conn})
			last = ev.ID
			k--
		}
		r.Close()
		cancel()
	}
	s.reached = true
}

// readHistory pages through a stream's history on one front-end.
func readHistory(ctx context.Context, client *http.Client, base, streamName string) ([]historyItem, error) {
	var out []historyItem
	after := ""
	for {
		u := base + "/v1/streams/" + url.PathEscape(streamName) + "/history?limit=1000"
		if after != "" {
			u += "&after=" + after
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
		after = page.Events[len(page.Events)-1].ID.String()
	}
}

type historyItem struct {
	ID   store.ID        `json:"id"`
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

// TestLeaderFailure shuts the JetStream stream leader's server down while
// 8 publishers write through two front-ends (one of them on the leader's
// node, whose connection then moves to the others) and 16 subscribers
// follow three streams, dropping and resuming at random. Afterwards every
// acknowledged event is stored once, in order, every subscriber received
// exactly the stream from where it started, and publishing resumed. The
// failover window is measured and logged.
func TestLeaderFailure(t *testing.T) {
	if testing.Short() {
		t.Skip("a cluster run of several seconds")
	}
	begin := time.Now()
	c := startTestCluster(t, 3)
	dir := t.TempDir()

	// The first front-end creates the stream; the second goes on the
	// stream leader's node (or the next one if that is the first's), so
	// that the shutdown always takes a front-end's node away.
	fes := []*failoverFrontEnd{startFailoverFrontEnd(t, c, 0, filepath.Join(dir, "fe0.db"))}
	waitUntil(t, 20*time.Second, func() error {
		if c.streamLeader(DefaultStream) < 0 {
			return errors.New("no stream leader")
		}
		return nil
	})
	second := c.streamLeader(DefaultStream)
	if second == 0 {
		second = 1
	}
	fes = append(fes, startFailoverFrontEnd(t, c, second, filepath.Join(dir, "fe1.db")))
	t.Logf("cluster and front-ends (nodes %d and %d) ready after %s", fes[0].node, fes[1].node, time.Since(begin).Round(time.Millisecond))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &failoverRecord{}
	pubClient, subClient := testkit.Client(t), testkit.Client(t)

	var targets atomic.Pointer[map[string]store.ID]
	subCtx, subCancel := context.WithCancel(ctx)
	defer subCancel()
	subs := make([]*failoverSubscriber, failoverSubscribers)
	var subWG sync.WaitGroup
	for i := range subs {
		s := &failoverSubscriber{stream: failoverStreams[i%len(failoverStreams)], fromStart: i%2 == 0}
		subs[i] = s
		subWG.Add(1)
		go func() {
			defer subWG.Done()
			if !s.fromStart {
				// A live start at a random moment of the run's first part.
				time.Sleep(time.Duration(rand.IntN(500)) * time.Millisecond)
			}
			s.run(subCtx, fes, subClient, &targets, rec)
		}()
	}

	stop := make(chan struct{})
	var pubWG sync.WaitGroup
	for p := range failoverPublishers {
		pubWG.Add(1)
		go func() {
			defer pubWG.Done()
			publisher(ctx, p, fes, pubClient, stop, rec)
		}()
	}
	stopPublishers := sync.OnceFunc(func() { close(stop); pubWG.Wait() })
	defer stopPublishers()

	waitUntil(t, 60*time.Second, func() error {
		if n := rec.nAcks.Load(); n < failoverBefore {
			return fmt.Errorf("%d events acknowledged before the shutdown, want %d", n, failoverBefore)
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
	var hosted []int
	for i, fe := range fes {
		if fe.node == leader {
			hosted = append(hosted, i)
		}
	}
	before := rec.nAcks.Load()
	shutdown := time.Now()
	c.servers[leader].Shutdown()
	t.Logf("shut down node %d (stream leader; meta leader: node %d; front-ends on it: %v) after %d acknowledged events, in %s",
		leader, metaLeader, hosted, before, time.Since(shutdown).Round(time.Millisecond))

	// Publishing resumes, through both front-ends.
	deadline := time.Now().Add(failoverRecovery)
	var elected time.Duration
	for {
		if elected == 0 {
			if l := c.streamLeader(DefaultStream); l >= 0 && l != leader {
				elected = time.Since(shutdown)
			}
		}
		total, perFE := rec.acksSince(shutdown)
		if total >= failoverAfter && perFE[0] > 0 && perFE[1] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("after %s: %d events acknowledged since the shutdown (%v per front-end), want %d through both", failoverRecovery, total, perFE, failoverAfter)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopPublishers()

	rec.mu.Lock()
	acks := slices.Clone(rec.acks)
	pubErrs := slices.Clone(rec.errs)
	failures := rec.failures
	rec.mu.Unlock()
	for _, err := range pubErrs {
		t.Error(err)
	}
	t.Logf("new stream leader seen %s after the shutdown; front-end connections now on %s and %s",
		elected.Round(time.Millisecond), fes[0].nc.ConnectedServerName(), fes[1].nc.ConnectedServerName())
	logFailoverWindow(t, acks, shutdown, failures)

	// Every subscriber reads up to its stream's last event.
	final := map[string]store.ID{}
	var lastID store.ID
	for _, a := range acks {
		if a.id.Compare(final[a.stream]) > 0 {
			final[a.stream] = a.id
		}
		if a.id.Compare(lastID) > 0 {
			lastID = a.id
		}
	}
	targets.Store(&final)
	subDone := make(chan struct{})
	go func() { subWG.Wait(); close(subDone) }()
	select {
	case <-subDone:
	case <-time.After(failoverCatchUp):
		subCancel()
		<-subDone
		t.Errorf("subscribers did not all reach their stream's last event within %s", failoverCatchUp)
	}

	// Both front-ends' copies reach the last acknowledged event.
	for i, fe := range fes {
		waitUntil(t, 20*time.Second, func() error {
			if fe.log.LastID().Compare(lastID) < 0 {
				return fmt.Errorf("front-end %d's copy at %s (position %d), want %s", i, fe.log.LastID(), fe.log.Position(), lastID)
			}
			return nil
		})
	}

	byStream := map[string][]failoverAck{}
	for _, a := range acks {
		byStream[a.stream] = append(byStream[a.stream], a)
	}
	hctx, hcancel := context.WithTimeout(ctx, 30*time.Second)
	defer hcancel()
	histories := map[string][]historyItem{}
	for _, s := range failoverStreams {
		var first []historyItem
		for i, fe := range fes {
			h, err := readHistory(hctx, pubClient, fe.url, s)
			if err != nil {
				t.Fatalf("front-end %d: %v", i, err)
			}
			if i == 0 {
				first = h
				continue
			}
			if err := sameHistory(first, h); err != nil {
				t.Errorf("stream %s: the front-ends' histories differ: %v", s, err)
			}
		}
		histories[s] = first
		if err := checkHistory(first, byStream[s]); err != nil {
			t.Errorf("stream %s: %v", s, err)
		}
	}
	checkPublisherOrder(t, acks)

	reconnects := 0
	for i, s := range subs {
		reconnects += len(s.conns)
		if s.failed {
			continue // its error is reported below
		}
		if err := checkReceived(s, histories[s.stream]); err != nil {
			t.Errorf("subscriber %d of %s (%d connections): %v", i, s.stream, len(s.conns), err)
		}
	}
	rec.mu.Lock()
	for _, err := range rec.errs[len(pubErrs):] {
		t.Error(err)
	}
	rec.mu.Unlock()
	t.Logf("%d events acknowledged (%d after the shutdown); %d SSE connections by %d subscribers; run took %s",
		len(acks), len(acks)-int(before), reconnects, len(subs), time.Since(begin).Round(time.Millisecond))
}

// logFailoverWindow logs how long publishing stalled around the shutdown:
// the interval without any acknowledgement that contains it, the longest
// such interval of the run, when each front-end first acknowledged a
// request sent after it, and the longest wait for one event (first
// attempt to acknowledgement, retries included).
func logFailoverWindow(t *testing.T, acks []failoverAck, shutdown time.Time, failures [2]map[string]int) {
	t.Helper()
	times := make([]time.Time, len(acks))
	var firstAfter [2]time.Time
	var slowest failoverAck
	for i, a := range acks {
		times[i] = a.at
		// Requests sent before the shutdown may have been answered by the
		// old leader.
		if a.sent.After(shutdown) && (firstAfter[a.fe].IsZero() || a.at.Before(firstAfter[a.fe])) {
			firstAfter[a.fe] = a.at
		}
		if a.at.Sub(a.began) > slowest.at.Sub(slowest.began) {
			slowest = a
		}
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	var lastBefore, firstAfterAny time.Time
	var longest time.Duration
	var longestAt time.Time
	for i, at := range times {
		if !at.After(shutdown) {
			lastBefore = at
		} else if firstAfterAny.IsZero() {
			firstAfterAny = at
		}
		if i > 0 {
			if gap := at.Sub(times[i-1]); gap > longest {
				longest, longestAt = gap, times[i-1]
			}
		}
	}
	if firstAfterAny.IsZero() {
		t.Logf("failover: no publish acknowledged after the shutdown")
		return
	}
	ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	since := func(at time.Time) string {
		if at.IsZero() {
			return "never"
		}
		return ms(at.Sub(shutdown))
	}
	t.Logf("failover window: no acknowledgement for %s around the shutdown (%s before it to %s after); longest interval without one: %s, from %s after the shutdown",
		ms(firstAfterAny.Sub(lastBefore)), ms(shutdown.Sub(lastBefore)), ms(firstAfterAny.Sub(shutdown)), ms(longest), ms(longestAt.Sub(shutdown)))
	t.Logf("first acknowledgement of a request sent after the shutdown: front-end 0 at %s, front-end 1 at %s; slowest event: %s from first attempt to acknowledgement (publisher %d, event %d, first attempt %s after the shutdown); failed attempts per front-end: %v",
		since(firstAfter[0]), since(firstAfter[1]), ms(slowest.at.Sub(slowest.began)), slowest.p, slowest.n, ms(slowest.began.Sub(shutdown)), failures)
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

// checkHistory checks a stream's history against what was acknowledged
// in it: the same events, each once, at the ids the acknowledgements
// gave, in increasing id order.
func checkHistory(h []historyItem, acked []failoverAck) error {
	type pn struct{ p, n int }
	want := map[pn]store.ID{}
	for _, a := range acked {
		want[pn{a.p, a.n}] = a.id
	}
	seen := map[pn]store.ID{}
	for i, e := range h {
		if i > 0 && e.ID.Compare(h[i-1].ID) <= 0 {
			return fmt.Errorf("event %d: id %s not after %s", i, e.ID, h[i-1].ID)
		}
		if e.Type != "message" {
			return fmt.Errorf("event %d (%s): type %q", i, e.ID, e.Type)
		}
		var k pn
		var d struct{ P, N *int }
		if err := json.Unmarshal(e.Data, &d); err != nil || d.P == nil || d.N == nil {
			return fmt.Errorf("event %d (%s): data %s", i, e.ID, e.Data)
		}
		k = pn{*d.P, *d.N}
		if prev, dup := seen[k]; dup {
			return fmt.Errorf("publisher %d's event %d stored twice, at %s and %s", k.p, k.n, prev, e.ID)
		}
		seen[k] = e.ID
		id, ok := want[k]
		switch {
		case !ok:
			return fmt.Errorf("publisher %d's event %d stored at %s, never acknowledged in this stream", k.p, k.n, e.ID)
		case id != e.ID:
			return fmt.Errorf("publisher %d's event %d stored at %s, acknowledged as %s", k.p, k.n, e.ID, id)
		}
	}
	if len(seen) != len(want) {
		for k, id := range want {
			if _, ok := seen[k]; !ok {
				return fmt.Errorf("publisher %d's event %d, acknowledged as %s, is missing (%d of %d stored)", k.p, k.n, id, len(seen), len(want))
			}
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
// connections with the stream's history after where it started.
func checkReceived(s *failoverSubscriber, h []historyItem) error {
	i, _ := slices.BinarySearchFunc(h, s.start, func(e historyItem, id store.ID) int { return e.ID.Compare(id) })
	if i < len(h) && h[i].ID == s.start {
		i++
	}
	want := h[i:]
	for j := 0; j < len(s.got) && j < len(want); j++ {
		g := s.got[j]
		if g.id != want[j].ID || g.data != string(want[j].Data) {
			return fmt.Errorf("event %d after the start %s: got %s %s (connection %d: %s), want %s %s",
				j, s.start, g.id, g.data, g.conn, s.conns[g.conn], want[j].ID, want[j].Data)
		}
	}
	if len(s.got) > len(want) {
		g := s.got[len(want)]
		return fmt.Errorf("%d events after the last of %d: %s %s (connection %d: %s)", len(s.got)-len(want), len(want), g.id, g.data, g.conn, s.conns[g.conn])
	}
	if !s.reached || len(s.got) < len(want) {
		return fmt.Errorf("stopped after %d of %d events (reached the end: %v)", len(s.got), len(want), s.reached)
	}
	return nil
}
