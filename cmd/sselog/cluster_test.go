package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sselog/sselog/client"
)

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
