package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sselog/sselog/client"
)

// Bounds of the cluster tests. A node prints that it serves only once the
// cluster has elected its leaders and the stream exists (jetstream.Open
// gives that 20 s), and a failover takes an election and the followers'
// consumers noticing it: generous, as a passing run never waits them out.
const (
	clusterStartTimeout = 40 * time.Second
	clusterWait         = 40 * time.Second
	pollInterval        = 50 * time.Millisecond
)

// clusterNode is one `sselog serve --backend jetstream` child of a test
// cluster, with what it takes to start it again on the same storage.
type clusterNode struct {
	name string // its route address, which is also its NATS server name
	args []string
	c    *child
	url  string
}

// launch starts the node's process; serving waits for it.
func (n *clusterNode) launch(t *testing.T) {
	t.Helper()
	n.c = startChild(t, n.args...)
	n.url = ""
}

// serving waits for the node's "serving" line and returns its URL.
func (n *clusterNode) serving(t *testing.T) string {
	t.Helper()
	if err := n.waitServing(); err != nil {
		t.Fatal(err)
	}
	return n.url
}

// waitServing waits for the node's "serving" line and keeps its URL. It
// fails if the node exits first, or does not serve within
// clusterStartTimeout.
func (n *clusterNode) waitServing() error {
	deadline := time.NewTimer(clusterStartTimeout)
	defer deadline.Stop()
	for {
		if n.servingNow() {
			return nil
		}
		select {
		case <-n.c.stdout.changed:
		case <-n.c.exited:
			if n.servingNow() {
				return nil
			}
			return fmt.Errorf("node %s exited before serving: %v\nstderr:\n%s", n.name, n.c.err, n.c.stderr)
		case <-deadline.C:
			return fmt.Errorf("node %s not serving after %v\nstderr:\n%s", n.name, clusterStartTimeout, n.c.stderr)
		}
	}
}

// servingNow reports whether the node has printed its "serving" line,
// and keeps its URL.
func (n *clusterNode) servingNow() bool {
	m := servingLine.FindStringSubmatch(n.c.stdout.String())
	if m != nil {
		n.url = m[1]
	}
	return m != nil
}

// portTaken reports whether the node failed to bind its route port.
func (n *clusterNode) portTaken() bool {
	return strings.Contains(n.c.stderr.String(), "listen tcp "+n.name+": bind: address already in use")
}

// errPortTaken is a cluster one of whose nodes could not bind its route
// port.
var errPortTaken = errors.New("a route port was taken")

// routeAddr returns a loopback address for a route port that was free a
// moment ago. It is drawn below the kernel's ephemeral range, which
// freeAddr draws from: there no other test's listener on port 0, nor an
// outgoing connection, takes it before the node binds it, or while a
// killed node is down.
func routeAddr(t *testing.T) string {
	t.Helper()
	const floor = 20000
	low := 32768 // Linux's default
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	if low-floor < 1000 {
		return freeAddr(t)
	}
	for range 100 {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(floor+rand.IntN(low-floor))))
		if err == nil {
			addr := ln.Addr().String()
			ln.Close()
			return addr
		}
	}
	return freeAddr(t)
}

func (n *clusterNode) eventsURL(stream string) string {
	return n.url + "/v1/streams/" + stream + "/events"
}

// startCluster starts n nodes of an embedded cluster on loopback, each
// with its own storage under one temporary directory, and returns once
// every one serves and answers /healthz with 200. With secret, routes
// authenticate with --cluster-secret-file. A new cluster elects its
// leaders only once every node is up: should a route port be taken
// before its node binds it, the cluster is started again, on new ports
// and storage.
func startCluster(t *testing.T, n int, secret bool) []*clusterNode {
	t.Helper()
	for attempt := 1; ; attempt++ {
		nodes, err := tryCluster(t, n, secret)
		if err == nil {
			return nodes
		}
		if !errors.Is(err, errPortTaken) || attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("starting the cluster again: %v", err)
	}
}

func tryCluster(t *testing.T, n int, secret bool) ([]*clusterNode, error) {
	t.Helper()
	dir := t.TempDir()
	routes := make([]string, n)
	for i := range routes {
		routes[i] = routeAddr(t)
	}
	var secretFile string
	if secret {
		secretFile = filepath.Join(dir, "secret")
		if err := os.WriteFile(secretFile, []byte("a-cluster-secret-of-enough-bytes\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	nodes := make([]*clusterNode, n)
	for i := range nodes {
		peers := slices.Delete(slices.Clone(routes), i, i+1)
		nd := &clusterNode{
			name: routes[i],
			args: []string{
				"serve", "--backend", "jetstream", "--addr", "127.0.0.1:0",
				"--db", filepath.Join(dir, fmt.Sprintf("n%d", i), "replica.db"),
				"--cluster-name", "c", "--cluster-listen", routes[i], "--cluster-peers", strings.Join(peers, ","),
				// Heartbeats tell a subscriber that it has everything (settled).
				"--heartbeat", "200ms",
			},
		}
		if secretFile != "" {
			nd.args = append(nd.args, "--cluster-secret-file", secretFile)
		}
		nodes[i] = nd
	}
	// All at once: none serves until a quorum has formed.
	start := time.Now()
	for _, nd := range nodes {
		nd.launch(t)
	}
	// Polled together: a node that fails at once fails the start at once.
	fail := func(err error) ([]*clusterNode, error) {
		for _, nd := range nodes {
			select {
			case <-nd.c.exited:
			default:
				_ = nd.c.cmd.Process.Kill()
				<-nd.c.exited
			}
			if nd.portTaken() {
				err = fmt.Errorf("%w (%s): %w", errPortTaken, nd.name, err)
			}
		}
		return nil, err
	}
	deadline := time.Now().Add(clusterStartTimeout)
	for pending := n; pending > 0; {
		pending = 0
		for _, nd := range nodes {
			if nd.url != "" || nd.servingNow() {
				continue
			}
			select {
			case <-nd.c.exited:
				return fail(fmt.Errorf("node %s exited before serving: %v\nstderr:\n%s", nd.name, nd.c.err, nd.c.stderr))
			default:
			}
			pending++
		}
		if pending > 0 && time.Now().After(deadline) {
			return fail(fmt.Errorf("%d nodes not serving after %v", pending, clusterStartTimeout))
		}
		if pending > 0 {
			time.Sleep(pollInterval)
		}
	}
	for _, nd := range nodes {
		waitHealthy(t, nd)
	}
	t.Logf("%d nodes serving and healthy after %v", n, time.Since(start).Round(time.Millisecond))
	return nodes, nil
}

// waitHealthy polls the node's /healthz until it answers 200.
func waitHealthy(t *testing.T, nd *clusterNode) {
	t.Helper()
	pollUntil(t, clusterWait, "healthz of "+nd.name, func() error {
		resp, err := httpClient.Get(nd.url + "/healthz")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d: %s", resp.StatusCode, body)
		}
		return nil
	})
}

// pollUntil calls cond every pollInterval until it returns nil, and fails
// the test with its last error after timeout.
func pollUntil(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %v after %v", what, err, timeout)
		}
		time.Sleep(pollInterval)
	}
}

// streamLeaderLine is what NATS logs on the node that becomes the leader
// of sselog's JetStream stream.
var streamLeaderLine = regexp.MustCompile(`(?m)^time=(\S+) .*new stream leader for '\$G > SSELOG'`)

// streamLeader returns the index of the node that logged last that it
// leads the stream, or -1 if none did.
func streamLeader(nodes []*clusterNode) int {
	leader, newest := -1, ""
	for i, nd := range nodes {
		for _, m := range streamLeaderLine.FindAllStringSubmatch(nd.c.stderr.String(), -1) {
			if m[1] > newest {
				leader, newest = i, m[1]
			}
		}
	}
	return leader
}

// historyOf reads a whole stream through a node's history endpoint, a
// full page at a time.
func historyOf(base, stream string) ([]sseEvent, error) {
	var out []sseEvent
	after := zeroID
	for {
		resp, err := httpClient.Get(base + "/v1/streams/" + stream + "/history?limit=1000&after=" + after)
		if err != nil {
			return out, err
		}
		var page struct {
			Events []struct {
				ID   string          `json:"id"`
				Type string          `json:"type"`
				Data json.RawMessage `json:"data"`
			} `json:"events"`
			Gap bool `json:"gap"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound && after == zeroID {
			return nil, nil // no event yet
		}
		if err != nil || resp.StatusCode != http.StatusOK {
			return out, fmt.Errorf("history after %s: status %d, %v", after, resp.StatusCode, err)
		}
		if page.Gap {
			return out, fmt.Errorf("history after %s: a gap", after)
		}
		if len(page.Events) == 0 {
			return out, nil
		}
		for _, e := range page.Events {
			typ := e.Type
			if typ == "message" {
				typ = ""
			}
			out = append(out, sseEvent{ID: e.ID, Type: typ, Data: string(e.Data)})
		}
		after = out[len(out)-1].ID
	}
}

// caughtUp waits until the node's history of stream holds at least
// len(want) events, and requires it to be want exactly.
func caughtUp(t *testing.T, nd *clusterNode, stream string, want []sseEvent) {
	t.Helper()
	var got []sseEvent
	start := time.Now()
	deadline := time.Now().Add(clusterWait)
	for {
		var err error
		got, err = historyOf(nd.url, stream)
		if err == nil && len(got) >= len(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("node %s: history has %d of %d events after %v (%v)", nd.name, len(got), len(want), clusterWait, err)
			break
		}
		time.Sleep(pollInterval)
	}
	checkExactly(t, "history through "+nd.name, got, want)
	t.Logf("node %s: history exact (%d events) after %v", nd.name, len(want), time.Since(start).Round(time.Millisecond))
}

// replayExact subscribes to stream on a node from the start and requires
// what it sends before it falls quiet to be want exactly.
func replayExact(t *testing.T, nd *clusterNode, stream string, want []sseEvent) {
	t.Helper()
	sub := subscribe(t, nd.eventsURL(stream), zeroID)
	got, _ := settled(t, sub, len(want))
	checkExactly(t, "SSE replay through "+nd.name, got, want)
	sub.close()
}

// settled waits for the first heartbeat that follows at least n events (the
// server sends one only when it has nothing else to send) and returns the
// events that came before it, and true. Unlike quiet, it does not fail the
// test when they do not come within clusterWait, or the stream ends first:
// it returns what came, and false, for the caller to reconnect or to
// describe.
func settled(t *testing.T, s *sseStream, n int) ([]sseEvent, bool) {
	t.Helper()
	deadline := time.NewTimer(clusterWait)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		for _, b := range s.beats {
			if b >= n {
				got := slices.Clone(s.events[:b])
				s.mu.Unlock()
				return got, true
			}
		}
		s.mu.Unlock()
		select {
		case <-s.changed:
		case <-s.done:
			return s.snapshot(), false
		case <-deadline.C:
			t.Logf("no heartbeat after %d events within %v", n, clusterWait)
			return s.snapshot(), false
		}
	}
}

// checkExactly requires got to be want: the same events in the same
// order. When it is not, it says which acknowledged events are missing,
// which came more than once, which were never acknowledged, and where the
// order breaks.
func checkExactly(t *testing.T, where string, got, want []sseEvent) {
	t.Helper()
	d := diffEvents(got, want)
	if d == "" {
		return
	}
	count := make(map[sseEvent]int, len(got))
	for _, e := range got {
		count[e]++
	}
	wanted := make(map[sseEvent]bool, len(want))
	var missing, dup, unknown []string
	for _, e := range want {
		wanted[e] = true
		if count[e] == 0 {
			missing = append(missing, e.ID+" "+e.Data)
		}
	}
	for e, n := range count {
		if n > 1 {
			dup = append(dup, fmt.Sprintf("%s %s ×%d", e.ID, e.Data, n))
		}
		if !wanted[e] {
			unknown = append(unknown, fmt.Sprintf("%s %q %s", e.ID, e.Type, e.Data))
		}
	}
	var disorder string
	for i := 1; i < len(got); i++ {
		if got[i].ID <= got[i-1].ID {
			disorder = fmt.Sprintf("; event %d (%s) does not follow event %d (%s)", i, got[i].ID, i-1, got[i-1].ID)
			break
		}
	}
	slices.Sort(missing)
	slices.Sort(dup)
	slices.Sort(unknown)
	t.Errorf("%s: %s (%d events, want %d); missing %d %.400v; duplicated %d %.400v; not acknowledged %d %.400v%s",
		where, d, len(got), len(want), len(missing), missing, len(dup), dup, len(unknown), unknown, disorder)
}

// eventsAfter returns the events of log that follow id.
func eventsAfter(log []sseEvent, id string) []sseEvent {
	i, _ := slices.BinarySearchFunc(log, id, func(e sseEvent, id string) int { return strings.Compare(e.ID, id) })
	if i < len(log) && log[i].ID == id {
		i++
	}
	return log[i:]
}

// ackedEvents is what the publishers of a test were answered: every event
// acknowledged, under the id its publish returned.
type ackedEvents struct {
	mu     sync.Mutex
	events []sseEvent
	count  []int     // acknowledged events per publisher
	last   time.Time // when the last acknowledgement came
	gap    time.Duration
	errs   []error
}

func newAckedEvents(publishers int) *ackedEvents {
	return &ackedEvents{count: make([]int, publishers)}
}

func (a *ackedEvents) add(p int, ids []string, data []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, id := range ids {
		a.events = append(a.events, sseEvent{ID: id, Data: data[i]})
	}
	a.count[p] += len(ids)
	now := time.Now()
	if !a.last.IsZero() {
		a.gap = max(a.gap, now.Sub(a.last))
	}
	a.last = now
}

func (a *ackedEvents) fail(err error) {
	a.mu.Lock()
	a.errs = append(a.errs, err)
	a.mu.Unlock()
}

// counts returns each publisher's acknowledged events.
func (a *ackedEvents) counts() []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.count)
}

// waitEach waits until every publisher has at least n acknowledged events
// more than in base, or one has failed.
func (a *ackedEvents) waitEach(t *testing.T, base []int, n int) {
	t.Helper()
	pollUntil(t, clusterWait, fmt.Sprintf("%d more acknowledged events per publisher", n), func() error {
		a.mu.Lock()
		defer a.mu.Unlock()
		if len(a.errs) > 0 {
			t.Fatalf("a publisher failed: %v", a.errs)
		}
		for p, c := range a.count {
			if c < base[p]+n {
				return fmt.Errorf("publisher %d at %d", p, c-base[p])
			}
		}
		return nil
	})
}

// log returns what was acknowledged, in id order: what every node's log
// must hold, exactly. Each publisher waits for one answer before it sends
// the next publish: in id order, its sequence numbers must increase, as
// the log's order is the order of acknowledgement.
func (a *ackedEvents) log(t *testing.T) []sseEvent {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.errs) > 0 {
		t.Fatalf("publishers failed: %v", a.errs)
	}
	out := slices.Clone(a.events)
	slices.SortFunc(out, func(x, y sseEvent) int { return strings.Compare(x.ID, y.ID) })
	seqs := map[string]int{}
	for i, e := range out {
		if i > 0 && e.ID == out[i-1].ID {
			t.Fatalf("id %s was returned for %s and for %s", e.ID, out[i-1].Data, e.Data)
		}
		var d struct {
			P   string
			Seq int
		}
		if err := json.Unmarshal([]byte(e.Data), &d); err != nil {
			t.Fatalf("event %s: %v", e.ID, err)
		}
		if last, ok := seqs[d.P]; ok && d.Seq <= last {
			t.Errorf("publisher %q: sequence %d has id %s, below that of its earlier sequence %d", d.P, d.Seq, e.ID, last)
		}
		seqs[d.P] = d.Seq
	}
	return out
}

// statusCounter counts the answers a publisher was told to retry (503)
// and the retries answered as replays of a stored attempt.
type statusCounter struct {
	base        http.RoundTripper
	unavailable atomic.Int64
	failed      atomic.Int64
	replayed    atomic.Int64
}

func (s *statusCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := s.base.RoundTrip(req)
	switch {
	case err != nil:
		s.failed.Add(1)
	case resp.StatusCode == http.StatusServiceUnavailable:
		s.unavailable.Add(1)
	case resp.Header.Get("Idempotent-Replayed") == "true":
		s.replayed.Add(1)
	}
	return resp, err
}

// publishUntil is publisher p, called name: it publishes batches of one
// to three events, each carrying its name and sequence number, through cl
// until stop is closed, and records every acknowledgement. Package client
// retries a 503 or a broken connection with the same Idempotency-Key.
func publishUntil(ctx context.Context, cl *client.Client, stream, name string, p int, acks *ackedEvents, stop <-chan struct{}) {
	for seq := 0; ; {
		select {
		case <-stop:
			return
		default:
		}
		n := seq%3 + 1
		events := make([]client.Event, n)
		data := make([]string, n)
		for i := range events {
			data[i] = fmt.Sprintf(`{"p":%q,"seq":%d}`, name, seq+i)
			events[i] = client.Event{Data: json.RawMessage(data[i])}
		}
		ids, err := cl.Publish(ctx, stream, events...)
		if err != nil {
			acks.fail(fmt.Errorf("publisher %s, seq %d: %w", name, seq, err))
			return
		}
		acks.add(p, ids, data)
		seq += n
	}
}

// newClusterClient is a client of one node that retries quickly, counting
// what it is answered.
func newClusterClient(t *testing.T, base string) (*client.Client, *statusCounter) {
	t.Helper()
	sc := &statusCounter{base: &http.Transport{}}
	cl, err := client.New(base, client.WithHTTPClient(&http.Client{Transport: sc, Timeout: 20 * time.Second}), client.WithBackoff(20*time.Millisecond, 250*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	return cl, sc
}

// TestClusterCommandLine: three `sselog serve --backend jetstream
// --cluster-*` processes form an embedded cluster (routes authenticated
// with a secret file). Events published through one are replayed exactly
// through another, by history and by SSE. The node whose NATS server
// leads the JetStream stream is then killed with SIGKILL while two
// publishers keep publishing through the other two (package client
// retries a 503 or a cut connection with the same Idempotency-Key):
// afterwards both survivors' history and SSE replay hold every
// acknowledged event exactly once, in order, under the id its publish
// returned, and nothing else. The killed node, started again with the
// same flags and storage, catches up to the same log, and takes publishes
// again.
func TestClusterCommandLine(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster of child processes; skipped in -short mode")
	}
	t.Parallel()
	nodes := startCluster(t, 3, true)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Through node 0, replayed through node 1.
	const stream = "log"
	cl0, _ := newClusterClient(t, nodes[0].url)
	acks := newAckedEvents(1)
	for seq := 0; seq < 20; seq += 2 {
		data := []string{fmt.Sprintf(`{"p":"first","seq":%d}`, seq), fmt.Sprintf(`{"p":"first","seq":%d}`, seq+1)}
		ids, err := cl0.Publish(ctx, stream, client.Event{Data: json.RawMessage(data[0])}, client.Event{Data: json.RawMessage(data[1])})
		if err != nil {
			t.Fatalf("publish through %s: %v", nodes[0].name, err)
		}
		acks.add(0, ids, data)
	}
	want := acks.log(t)
	caughtUp(t, nodes[1], stream, want)
	replayExact(t, nodes[1], stream, want)

	victim := streamLeader(nodes)
	if victim < 0 {
		t.Logf("no node logged that it leads the stream; killing node 2")
		victim = 2
	}
	var survivors []*clusterNode
	for i, nd := range nodes {
		if i != victim {
			survivors = append(survivors, nd)
		}
	}

	// Two publishers, one through each survivor, before, across and after
	// the kill.
	acks = newAckedEvents(2)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var counters []*statusCounter
	for p, nd := range survivors {
		cl, sc := newClusterClient(t, nd.url)
		counters = append(counters, sc)
		wg.Add(1)
		go func() {
			defer wg.Done()
			publishUntil(ctx, cl, stream, "through "+nd.name, p, acks, stop)
		}()
	}
	stopped := false
	stopPublishers := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	// Should the test end early, the publishers stop retrying at once.
	defer func() { cancel(); stopPublishers() }()

	acks.waitEach(t, []int{0, 0}, 20)
	killed := time.Now()
	killChild(t, nodes[victim].c)
	atKill := acks.counts()
	t.Logf("killed the stream leader %s with SIGKILL after %v acknowledged events", nodes[victim].name, atKill)
	acks.waitEach(t, atKill, 20)
	t.Logf("20 more acknowledged per publisher %v after the kill", time.Since(killed).Round(time.Millisecond))
	stopPublishers()
	for p, sc := range counters {
		t.Logf("publisher through %s: %d answers 503, %d attempts cut, %d retries answered as replays", survivors[p].name, sc.unavailable.Load(), sc.failed.Load(), sc.replayed.Load())
	}
	acks.mu.Lock()
	t.Logf("longest wait between two acknowledgements: %v", acks.gap.Round(time.Millisecond))
	acks.mu.Unlock()

	want = append(want, acks.log(t)...)
	for _, nd := range survivors {
		caughtUp(t, nd, stream, want)
		replayExact(t, nd, stream, want)
	}
	if t.Failed() {
		return
	}

	// The killed node comes back on its storage and catches up.
	restarted := time.Now()
	nodes[victim].launch(t)
	nodes[victim].serving(t)
	waitHealthy(t, nodes[victim])
	t.Logf("node %s serving again after %v", nodes[victim].name, time.Since(restarted).Round(time.Millisecond))
	caughtUp(t, nodes[victim], stream, want)
	replayExact(t, nodes[victim], stream, want)

	// And writes again: an event published through it reaches the others.
	clv, _ := newClusterClient(t, nodes[victim].url)
	data := `{"p":"restarted","seq":0}`
	ids, err := clv.Publish(ctx, stream, client.Event{Data: json.RawMessage(data)})
	if err != nil {
		t.Fatalf("publish through the restarted node: %v", err)
	}
	want = append(want, sseEvent{ID: ids[0], Data: data})
	for _, nd := range nodes {
		caughtUp(t, nd, stream, want)
	}
}

// publishAnywhere publishes events with the given data to stream, with
// key, through the first of bases that answers: a broken connection or a
// 503 moves on to the next node, with the same key, until one answers 201
// or ctx ends. It is a client whose front-end may die under it. moved is
// how many times it moved on; replayed says that the answer was a repeat
// of an earlier attempt's, stored before that attempt's node failed.
func publishAnywhere(ctx context.Context, bases []string, stream, key string, data []string) (ids []string, moved int, replayed bool, err error) {
	parts := make([]string, len(data))
	for i, d := range data {
		parts[i] = `{"data":` + d + `}`
	}
	body := "[" + strings.Join(parts, ",") + "]"
	for i := 0; ; i++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, bases[i%len(bases)]+"/v1/streams/"+stream+"/events", strings.NewReader(body))
		if err != nil {
			return nil, i, false, err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		var resp *http.Response
		resp, err = httpClient.Do(req)
		if err == nil {
			var answer struct {
				IDs   []string `json:"ids"`
				Error string   `json:"error"`
			}
			derr := json.NewDecoder(resp.Body).Decode(&answer)
			resp.Body.Close()
			switch {
			case resp.StatusCode == http.StatusCreated && derr == nil && len(answer.IDs) == len(data):
				return answer.IDs, i, resp.Header.Get("Idempotent-Replayed") == "true", nil
			case resp.StatusCode != http.StatusServiceUnavailable:
				return nil, i, false, fmt.Errorf("status %d: %s (%v)", resp.StatusCode, answer.Error, derr)
			}
		}
		select {
		case <-ctx.Done():
			return nil, i, false, fmt.Errorf("%w (last attempt: %v)", ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestClusterFrontEndFailure: SSE subscribers are connected to one node
// of a three-node cluster, mid-stream, while events are published through
// all three (the publisher through that node moves to another when its
// connection breaks, with the same Idempotency-Key). The node, which also
// leads the JetStream stream, is killed with SIGKILL. Each subscriber
// reconnects to one of the other two with the Last-Event-ID it last
// received and, once it has three events more, to the third node, as
// clients behind a load balancer do: it then holds ids of one follower
// that the other may not have applied yet. A stream a node ends is
// resumed, as EventSource does. With what it had, each subscriber holds
// exactly the log after its starting point: no gap, no duplicate, no
// reset. The log itself holds every acknowledged event once.
//
// At afc88a4 this failed: a node's copy followed the log through an
// ordered consumer that JetStream may place on any server, and when that
// server died the copy heard nothing for 10 s; a resume point past it was
// taken for foreign after 2 s, answered with reset "unknown", and the
// subscriber was moved back to the copy's older newest id and sent again
// what it had.
func TestClusterFrontEndFailure(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster of child processes; skipped in -short mode")
	}
	t.Parallel()
	nodes := startCluster(t, 3, false)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const stream = "feed"

	victim := streamLeader(nodes)
	if victim < 0 {
		t.Logf("no node logged that it leads the stream; killing node 0")
		victim = 0
	}
	var survivors []*clusterNode
	for i, nd := range nodes {
		if i != victim {
			survivors = append(survivors, nd)
		}
	}

	// Ten events to start from.
	acks := newAckedEvents(3)
	var start []string
	for seq := range 10 {
		data := []string{fmt.Sprintf(`{"p":"start","seq":%d}`, seq)}
		ids, _, _, err := publishAnywhere(ctx, []string{nodes[victim].url}, stream, fmt.Sprintf("start-%d", seq), data)
		if err != nil {
			t.Fatal(err)
		}
		acks.add(2, ids, data)
		start = append(start, ids[0])
	}

	// Publishers: one through each survivor with package client, one
	// through the victim that fails over.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for p, nd := range survivors {
		cl, _ := newClusterClient(t, nd.url)
		wg.Add(1)
		go func() {
			defer wg.Done()
			publishUntil(ctx, cl, stream, "through "+nd.name, p, acks, stop)
		}()
	}
	var movedOn, replays atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		bases := []string{nodes[victim].url, survivors[0].url, survivors[1].url}
		for seq := 0; ; seq++ {
			select {
			case <-stop:
				return
			default:
			}
			data := []string{fmt.Sprintf(`{"p":"failover","seq":%d}`, seq)}
			ids, moved, replayed, err := publishAnywhere(ctx, bases, stream, fmt.Sprintf("k-%d", seq), data)
			if err != nil {
				acks.fail(fmt.Errorf("failover publisher, seq %d: %w", seq, err))
				return
			}
			acks.add(2, ids, data)
			movedOn.Add(int64(moved))
			if replayed {
				replays.Add(1)
			}
		}
	}()
	stopped := false
	stopPublishers := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	// Should the test end early, the publishers stop retrying at once.
	defer func() { cancel(); stopPublishers() }()

	// Subscribers on the victim, from the start and from within the log.
	// legs[0] is the connection to the victim, legs[1] and legs[2] those
	// to the survivors, in turn.
	type subscriber struct {
		from string
		legs []*sseStream
		at   []string // the node of each leg
	}
	var subs []*subscriber
	for _, from := range []string{zeroID, zeroID, start[0], start[4], start[9], start[9]} {
		subs = append(subs, &subscriber{
			from: from,
			legs: []*sseStream{subscribe(t, nodes[victim].eventsURL(stream), from)},
			at:   []string{nodes[victim].name},
		})
	}
	acks.waitEach(t, []int{0, 0, 0}, 15)
	for _, s := range subs {
		s.legs[0].waitFor(t, 15)
	}
	killChild(t, nodes[victim].c)
	killed := time.Now()
	t.Logf("killed the front-end and stream leader %s with SIGKILL after %v acknowledged events", nodes[victim].name, acks.counts())

	// lastID is where a subscriber resumes: the last event of its legs so
	// far, or where it started.
	lastID := func(s *subscriber) string {
		for i := len(s.legs) - 1; i >= 0; i-- {
			if got := s.legs[i].snapshot(); len(got) > 0 {
				return got[len(got)-1].ID
			}
		}
		return s.from
	}
	resume := func(s *subscriber, nd *clusterNode) {
		s.legs = append(s.legs, subscribe(t, nd.eventsURL(stream), lastID(s)))
		s.at = append(s.at, nd.name)
	}
	for i, s := range subs {
		// Over HTTP/1.1 a stream cut by the kill may read as a clean end
		// (its framing has no length): the client reconnects either way.
		s.legs[0].waitEnd(t)
		resume(s, survivors[i%2])
	}
	// Each moves on to the other survivor after three events more.
	pollUntil(t, clusterWait, "every subscriber's second reconnection", func() error {
		waiting := 0
		for i, s := range subs {
			if len(s.legs) == 3 {
				continue
			}
			if len(s.legs[1].snapshot()) < 3 {
				waiting++
				continue
			}
			s.legs[1].close()
			s.legs[1].waitEnd(t)
			resume(s, survivors[(i+1)%2])
			t.Logf("subscriber %d moved from %s to %s %v after the kill", i, s.at[1], s.at[2], time.Since(killed).Round(time.Millisecond))
		}
		if waiting > 0 {
			return fmt.Errorf("%d subscribers waiting for three events", waiting)
		}
		return nil
	})
	acks.waitEach(t, acks.counts(), 10)
	stopPublishers()
	t.Logf("the failover publisher moved on to another node %d times; %d answers were replays of an attempt stored before its node failed", movedOn.Load(), replays.Load())

	want := acks.log(t)
	for _, nd := range survivors {
		caughtUp(t, nd, stream, want)
	}
	for i, s := range subs {
		// A stream the server ends is resumed on the same node, as
		// EventSource does, until it has all there is.
		rest := eventsAfter(want, s.from)
		deadline := time.Now().Add(clusterWait)
		for {
			var got []sseEvent
			for _, leg := range s.legs[:len(s.legs)-1] {
				got = append(got, leg.snapshot()...)
			}
			last, ok := settled(t, s.legs[len(s.legs)-1], len(rest)-len(got))
			got = append(got, last...)
			if ok || time.Now().After(deadline) {
				checkExactly(t, fmt.Sprintf("subscriber %d (from %s through %v, %d events before the kill)", i, s.from, s.at, len(s.legs[0].snapshot())), got, rest)
				break
			}
			resume(s, survivors[(i+1)%2])
		}
	}
}

// TestClusterFlags: the backend and cluster flags are checked before
// anything touches the disk, from the command line and from SSELOG_*
// variables alike.
func TestClusterFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown backend", []string{"--backend", "bolt"}, `--backend must be bbolt or jetstream, not "bolt"`},
		{"empty backend", []string{"--backend", ""}, `--backend must be bbolt or jetstream, not ""`},
		{"nats url and cluster listen", []string{"--backend", "jetstream", "--nats-url", "nats://127.0.0.1:4222", "--cluster-listen", "127.0.0.1:7001", "--cluster-name", "c"}, "--nats-url joins an existing cluster"},
		{"nats url and cluster name", []string{"--backend", "jetstream", "--nats-url", "nats://127.0.0.1:4222", "--cluster-name", "c"}, "--nats-url joins an existing cluster"},
		{"nats url and cluster peers", []string{"--backend", "jetstream", "--nats-url", "nats://127.0.0.1:4222", "--cluster-peers", "127.0.0.1:7002"}, "--nats-url joins an existing cluster"},
		{"nats creds without url", []string{"--backend", "jetstream", "--nats-creds", "x.creds"}, "--nats-creds needs --nats-url"},
		{"cluster listen without name", []string{"--backend", "jetstream", "--cluster-listen", "127.0.0.1:7001"}, "--cluster-listen needs --cluster-name"},
		{"cluster name without listen", []string{"--backend", "jetstream", "--cluster-name", "c"}, "need --cluster-listen"},
		{"cluster peers without listen", []string{"--backend", "jetstream", "--cluster-peers", "127.0.0.1:7002"}, "need --cluster-listen"},
		{"negative replicas", []string{"--backend", "jetstream", "--replicas", "-1"}, "--replicas must be 1 to 5"},
		{"six replicas", []string{"--backend", "jetstream", "--replicas", "6"}, "--replicas must be 1 to 5"},
		{"replicas not a number", []string{"--backend", "jetstream", "--replicas", "three"}, "replicas"},
		{"nats sync word", []string{"--backend", "jetstream", "--nats-sync", "never"}, `--nats-sync must be always or a positive interval, not "never"`},
		{"nats sync zero", []string{"--backend", "jetstream", "--nats-sync", "0s"}, "--nats-sync must be always or a positive interval"},
		{"nats sync negative", []string{"--backend", "jetstream", "--nats-sync", "-1s"}, "--nats-sync must be always or a positive interval"},
		{"nats sync without unit", []string{"--backend", "jetstream", "--nats-sync", "1"}, "--nats-sync must be always or a positive interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			expectRefusedServe(t, tt.args, tt.want)
		})
	}

	// The same checks, with the values from the environment.
	env := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"backend", map[string]string{"SSELOG_BACKEND": "etcd"}, `--backend must be bbolt or jetstream, not "etcd"`},
		{"nats url and cluster listen", map[string]string{"SSELOG_BACKEND": "jetstream", "SSELOG_NATS_URL": "nats://127.0.0.1:4222", "SSELOG_CLUSTER_LISTEN": "127.0.0.1:7001", "SSELOG_CLUSTER_NAME": "c"}, "--nats-url joins an existing cluster"},
		{"cluster listen without name", map[string]string{"SSELOG_BACKEND": "jetstream", "SSELOG_CLUSTER_LISTEN": "127.0.0.1:7001"}, "--cluster-listen needs --cluster-name"},
		{"replicas", map[string]string{"SSELOG_BACKEND": "jetstream", "SSELOG_REPLICAS": "7"}, "--replicas must be 1 to 5"},
		{"nats sync", map[string]string{"SSELOG_BACKEND": "jetstream", "SSELOG_NATS_SYNC": "sometimes"}, "--nats-sync must be always or a positive interval"},
	}
	for _, tt := range env {
		t.Run("env "+tt.name, func(t *testing.T) {
			t.Parallel()
			lookup := func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
			_, err := loadConfig([]string{"--addr", "127.0.0.1:0"}, lookup, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestClusterFlagsWithoutEffect: a flag that would change nothing is
// refused, as --nats-creds without --nats-url is. A jetstream flag with
// the bbolt backend (a unit file that forgot --backend jetstream would
// otherwise run a standalone server beside the cluster, with its own
// log), and more replicas than the embedded cluster has nodes (JetStream
// then refuses to create the stream, and each node gives up after its
// 20 s wait for the cluster).
func TestClusterFlagsWithoutEffect(t *testing.T) {
	t.Parallel()
	cluster := []string{"--cluster-name", "c", "--cluster-listen", "127.0.0.1:7001", "--cluster-peers", "127.0.0.1:7002,127.0.0.1:7003"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"cluster flags without the backend", cluster, "--backend jetstream"},
		{"nats url without the backend", []string{"--nats-url", "nats://127.0.0.1:4222"}, "--backend jetstream"},
		{"nats sync without the backend", []string{"--nats-sync", "1s"}, "--backend jetstream"},
		{"replicas without the backend", []string{"--replicas", "3"}, "--backend jetstream"},
		{"replicas on a single embedded node", []string{"--backend", "jetstream", "--replicas", "3"}, "--replicas"},
		{"more replicas than nodes", append([]string{"--backend", "jetstream", "--replicas", "4"}, cluster...), "--replicas"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := loadConfig(append([]string{"--addr", "127.0.0.1:0"}, tt.args...), noEnv, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("loadConfig(%q) = %v, want an error naming %s", tt.args, err, tt.want)
			}
		})
	}
}

// TestClusterReplicaDefault: with --backend jetstream, --db defaults to
// data/replica.db, never the standalone data/sselog.db; a --db given, on
// the command line or as SSELOG_DB, wins; the bbolt default is unchanged.
func TestClusterReplicaDefault(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"bbolt", nil, nil, filepath.Join("data", "sselog.db")},
		{"jetstream", []string{"--backend", "jetstream"}, nil, filepath.Join("data", "replica.db")},
		{"jetstream from the environment", nil, map[string]string{"SSELOG_BACKEND": "jetstream"}, filepath.Join("data", "replica.db")},
		{"jetstream with --db", []string{"--backend", "jetstream", "--db", "x.db"}, nil, "x.db"},
		{"jetstream with SSELOG_DB", []string{"--backend", "jetstream"}, map[string]string{"SSELOG_DB": "y.db"}, "y.db"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lookup := func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
			c, err := loadConfig(append([]string{"--addr", "127.0.0.1:0"}, tt.args...), lookup, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if c.db != tt.want {
				t.Errorf("db = %q, want %q", c.db, tt.want)
			}
		})
	}
}

// TestClusterInsecureRoutes: an embedded node refuses to listen for
// routes off loopback without --cluster-secret-file, and refuses a secret
// too short to resist guessing. The check is the embedded server's, made
// before it binds anything: the process, as run, says why on stderr and
// exits with a non-zero status, without serving.
func TestClusterInsecureRoutes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	tests := []struct {
		name  string
		extra []string
		want  string
	}{
		{"all interfaces", []string{"--cluster-listen", "0.0.0.0:" + port}, "0.0.0.0:" + port},
		{"all interfaces, IPv6", []string{"--cluster-listen", "[::]:" + port}, "[::]:" + port},
		{"no host", []string{"--cluster-listen", ":" + port}, `":` + port + `"`},
		{"another address", []string{"--cluster-listen", "192.0.2.1:" + port}, "192.0.2.1:" + port},
		{"a host name", []string{"--cluster-listen", "sselog-1.example:" + port}, "sselog-1.example:" + port},
		{"short secret", []string{"--cluster-listen", "127.0.0.1:" + port, "--cluster-secret-file", short}, "cluster secret is too short: 10 bytes, need 16"},
		{"missing secret file", []string{"--cluster-listen", "127.0.0.1:" + port, "--cluster-secret-file", filepath.Join(dir, "nope")}, "--cluster-secret-file: open"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := filepath.Join(dir, fmt.Sprint(i), "replica.db")
			args := append([]string{"serve", "--backend", "jetstream", "--addr", "127.0.0.1:0", "--db", db, "--cluster-name", "c"}, tt.extra...)
			stdout, _, err := runQuick(t, args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "secret") {
				t.Errorf("err = %v, want one that names %q and the secret", err, tt.want)
			}
			if stdout != "" {
				t.Errorf("stdout %q: a refused node claimed to serve", stdout)
			}
		})
	}

	t.Run("process", func(t *testing.T) {
		t.Parallel()
		c := startChild(t, "serve", "--backend", "jetstream", "--addr", "127.0.0.1:0", "--db", filepath.Join(dir, "p", "replica.db"),
			"--cluster-name", "c", "--cluster-listen", "0.0.0.0:"+port)
		err := c.wait(t, startTimeout)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Errorf("exit %v, want a non-zero status", err)
		}
		t.Logf("stderr: %s", strings.TrimSpace(c.stderr.String()))
		if s := c.stderr.String(); !strings.Contains(s, "sselog: ") || !strings.Contains(s, "0.0.0.0:"+port) || !strings.Contains(s, "secret") {
			t.Errorf("stderr %q does not name the address and the missing secret", s)
		}
		if s := c.stdout.String(); strings.Contains(s, "serving") {
			t.Errorf("a refused node claimed to serve: %q", s)
		}
	})
}

// TestClusterSingleNode: `sselog serve --backend jetstream` alone runs one
// embedded node, without routes, in the working directory's data/: its
// local copy at data/replica.db, JetStream's storage at data/nats. It
// serves publishes and replay, and after a restart on the same directory
// replays the same events and resumes after the last.
func TestClusterSingleNode(t *testing.T) {
	// The working directory is the process's: no t.Parallel.
	dir := t.TempDir()
	t.Chdir(dir)
	args := []string{"--backend", "jetstream", "--addr", "127.0.0.1:0", "--heartbeat", "200ms"}
	srv := startServer(t, args...)
	for _, p := range []string{filepath.Join("data", "replica.db"), filepath.Join("data", "nats", "jetstream")} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "sselog.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data/sselog.db: %v, want none: the replica never takes the standalone database's place", err)
	}
	if !strings.Contains(srv.stderr.String(), "db="+filepath.Join("data", "replica.db")) {
		t.Errorf("the log does not name data/replica.db as the database:\n%s", srv.stderr)
	}
	url := srv.eventsURL("s")
	want := []sseEvent{{ID: publishOne(t, url, "a", `1`), Type: "a", Data: `1`}}
	for i, id := range publishBatch(t, url, `2`, `3`) {
		want = append(want, sseEvent{ID: id, Data: fmt.Sprint(i + 2)})
	}
	checkExactly(t, "replay", subscribe(t, url, zeroID).quiet(t, len(want)), want)
	srv.stop(t)

	srv = startServer(t, args...)
	url = srv.eventsURL("s")
	checkExactly(t, "replay after a restart", subscribe(t, url, zeroID).quiet(t, len(want)), want)
	sub := subscribe(t, url, want[len(want)-1].ID)
	want = append(want, sseEvent{ID: publishOne(t, url, "", `4`), Data: `4`})
	checkExactly(t, "resume after a restart", sub.quiet(t, 1), want[len(want)-1:])
	srv.stop(t)
}
