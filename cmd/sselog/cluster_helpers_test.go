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
