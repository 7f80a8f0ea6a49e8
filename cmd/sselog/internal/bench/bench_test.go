package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// childEnv makes the test binary act as `sselog serve`, so that --spawn,
// which runs its own executable, can be tested: under test that executable
// is the test binary.
const childEnv = "SSELOG_BENCH_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "serve" {
		os.Exit(childServe(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// childServe is a minimal `sselog serve`: it takes --addr and --db, prints
// the serving line and stops on SIGTERM.
func childServe(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "")
	db := fs.String("db", "", "")
	if len(args) == 0 || args[0] != "serve" || fs.Parse(args[1:]) != nil {
		fmt.Fprintf(os.Stderr, "child: bad arguments %q\n", args)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	log, err := store.Open(*db, store.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	defer log.Close()
	hub := stream.NewHub(log, stream.Options{})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	srv := &http.Server{Handler: httpapi.NewHandler(log, hub, httpapi.Options{}), ReadHeaderTimeout: 10 * time.Second}
	srv.RegisterOnShutdown(hub.Close)
	go srv.Serve(ln)
	fmt.Printf("sselog serving on http://%s\n", ln.Addr())
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	return 0
}

// newServer starts an in-process server on a fresh database and returns
// its URL.
func newServer(t *testing.T) string {
	t.Helper()
	log, err := store.Open(filepath.Join(t.TempDir(), "bench.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hub := stream.NewHub(log, stream.Options{})
	srv := httptest.NewServer(httpapi.NewHandler(log, hub, httpapi.Options{}))
	t.Cleanup(func() {
		hub.Close() // ends the SSE streams, which srv.Close would wait for
		srv.Close()
		if err := log.Close(); err != nil {
			t.Error(err)
		}
	})
	return srv.URL
}

// runTimeout bounds one Run in the tests; a healthy run takes a small
// fraction of it, even under -race on a loaded machine.
const runTimeout = 2 * time.Minute

func runBench(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := Run(ctx, args, &stdout, &stderr)
	if stderr.Len() > 0 {
		t.Logf("stderr: %s", stderr.String())
	}
	return stdout.String(), err
}

// runJSON runs a workload with --json and decodes its report into R.
func runJSON[R any](t *testing.T, args ...string) (*R, error) {
	t.Helper()
	out, err := runBench(t, append(args, "--json")...)
	t.Logf("%s", out)
	if strings.Count(out, "\n") != 1 {
		t.Fatalf("want one JSON line, got %q (run error %v)", out, err)
	}
	r := new(R)
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if derr := dec.Decode(r); derr != nil {
		t.Fatalf("decoding %s: %v", out, derr)
	}
	return r, err
}

// streamCount asks the server how many events a stream holds.
func streamCount(t *testing.T, url, name string) int64 {
	t.Helper()
	resp, err := http.Get(url + "/v1/streams")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Streams []struct {
			Name  string `json:"name"`
			Count int64  `json:"count"`
		} `json:"streams"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	for _, s := range list.Streams {
		if s.Name == name {
			return s.Count
		}
	}
	return 0
}

func checkLatency(t *testing.T, l latency) {
	t.Helper()
	if !(l.P50 > 0 && l.P50 <= l.P99 && l.P99 <= l.Max && l.Mean > 0 && l.Mean <= l.Max) {
		t.Errorf("latency figures not sane: %+v", l)
	}
}

func TestPublish(t *testing.T) {
	url := newServer(t)
	tests := []struct {
		name      string
		args      []string
		batch     int64
		wantEvent int64 // 0: any positive number
	}{
		{"four publishers for a while", []string{"-c", "4", "--duration", "300ms"}, 1, 0},
		{"batches of ten, fixed count", []string{"-c", "3", "--batch", "10", "-n", "205", "--size", "300"}, 10, 210},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := "publish-" + strings.ReplaceAll(tc.name, " ", "-")
			name = strings.ReplaceAll(name, ",", "")
			r, err := runJSON[publishReport](t, append([]string{"publish", "--url", url, "--stream", name}, tc.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			if r.Errors != 0 || r.Events <= 0 || r.Events != r.Requests*tc.batch || r.EventsPerSec <= 0 {
				t.Errorf("counts not sane: %+v", r)
			}
			if tc.wantEvent > 0 && r.Events != tc.wantEvent {
				t.Errorf("%d events, want %d", r.Events, tc.wantEvent)
			}
			if n := streamCount(t, url, name); n != r.Events {
				t.Errorf("the server holds %d events, the tool counted %d", n, r.Events)
			}
			if r.Workload != "publish" || r.Stream != name || r.URL != url {
				t.Errorf("run info %+v", r.runInfo)
			}
			checkLatency(t, r.latency)
		})
	}
}

func TestFanout(t *testing.T) {
	url := newServer(t)
	r, err := runJSON[fanoutReport](t, "fanout", "--url", url, "--subscribers", "20", "--rate", "200", "--duration", "500ms", "--size", "200")
	if err != nil {
		t.Fatal(err)
	}
	if r.Published != 100 || r.Expected != 2000 || r.Deliveries != r.Expected || !r.Complete {
		t.Errorf("counts: published %d, deliveries %d of %d, complete %t", r.Published, r.Deliveries, r.Expected, r.Complete)
	}
	if r.Gaps+r.Duplicates+r.Disordered+r.Malformed+r.Errors+r.PublishErrors != 0 {
		t.Errorf("checks: %+v", r)
	}
	if r.DeliveriesPerSec <= 0 || r.PublishRequests < 1 || r.PublishRequests > r.Published {
		t.Errorf("rates: %+v", r)
	}
	if n := streamCount(t, url, r.Stream); n != r.Published {
		t.Errorf("the server holds %d events, the tool published %d", n, r.Published)
	}
	checkLatency(t, r.latency)
}

// With --deadline the publisher gives up on what is still due: here
// nearly all of it. What was published is delivered in full, and the run
// passes.
func TestFanoutDeadline(t *testing.T) {
	url := newServer(t)
	r, err := runJSON[fanoutReport](t, "fanout", "--url", url, "--subscribers", "5", "--rate", "100", "--duration", "1m", "--deadline", "300ms")
	if err != nil {
		t.Fatal(err)
	}
	if r.Asked != 6000 || r.Published < 1 || r.Published > 100 || r.PublishSeconds > 30 {
		t.Errorf("published %d of %d in %.2f s", r.Published, r.Asked, r.PublishSeconds)
	}
	if r.Deliveries != 5*r.Published || r.Expected != r.Deliveries || !r.Complete || r.Gaps != 0 {
		t.Errorf("deliveries: %+v", r)
	}
}

func TestReplay(t *testing.T) {
	url := newServer(t)
	r, err := runJSON[replayReport](t, "replay", "--url", url, "-n", "2000", "--batch", "300", "-c", "3")
	if err != nil {
		t.Fatal(err)
	}
	if r.Events != 2000 || r.Received != 2000 || r.Missing+r.Duplicates+r.Disordered+r.Malformed+r.Errors != 0 {
		t.Errorf("counts: %+v", r)
	}
	if r.EventsPerSec <= 0 || r.Duration <= 0 || r.FirstEventMs <= 0 || r.Bytes < 2000*int64(r.Size) {
		t.Errorf("figures: %+v", r)
	}
	if r.Connections != 1 || r.ServerEnded != 0 || r.Ended != endComplete || !r.OrderChecked {
		t.Errorf("connections: %+v", r)
	}
	// The events and the one connection's marker.
	if n := streamCount(t, url, r.Stream); n != 2000+r.Connections {
		t.Errorf("the server holds %d events", n)
	}
}

// A stream loaded once is read in separate runs (as around a restart),
// over one connection and over connections the tool drops and resumes.
func TestReplayPhases(t *testing.T) {
	url := newServer(t)
	args := []string{"replay", "--url", url, "--stream", "phases", "-n", "1000", "--batch", "70"}
	r, err := runJSON[replayReport](t, append(args, "--phase", "load")...)
	if err != nil {
		t.Fatal(err)
	}
	if r.Phase != phaseLoad || r.LoadPerSec <= 0 || r.Received != 0 || r.Connections != 0 {
		t.Errorf("load: %+v", r)
	}
	if n := streamCount(t, url, "phases"); n != 1000 {
		t.Fatalf("the server holds %d events after loading", n)
	}
	tests := []struct {
		name  string
		args  []string
		conns int64
	}{
		{"one connection", nil, 1},
		// Each later connection also replays the markers of those before
		// it, which are not counted.
		{"dropped every 300 events", []string{"--drop-every", "300"}, 4},
		{"resuming", []string{"--resume"}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := runJSON[replayReport](t, append(append(args, "--phase", "read"), tc.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			if r.LoadSeconds != 0 || r.Received != 1000 || r.Missing+r.Duplicates+r.Disordered+r.Malformed+r.Errors != 0 || r.Ended != endComplete {
				t.Errorf("counts: %+v", r)
			}
			if r.Connections != tc.conns || r.ServerEnded != 0 {
				t.Errorf("%d connections, %d ended by the server; want %d, 0", r.Connections, r.ServerEnded, tc.conns)
			}
		})
	}
}

// A stream that holds fewer events than the read expects ends when the
// marker arrives, with the rest counted missing: a failed check, not an
// error of the tool, and no wait for the timeout.
func TestReplayMissingEvents(t *testing.T) {
	url := newServer(t)
	if _, err := runJSON[replayReport](t, "replay", "--url", url, "--stream", "short", "-n", "100", "--phase", "load"); err != nil {
		t.Fatal(err)
	}
	r, err := runJSON[replayReport](t, "replay", "--url", url, "--stream", "short", "-n", "150", "--phase", "read", "--timeout", "1m")
	if !errors.Is(err, ErrCheck) {
		t.Fatalf("error %v, want ErrCheck", err)
	}
	if r.Received != 100 || r.Missing != 50 || r.Errors != 0 || r.Ended != endNoMore || r.Duration > 30 {
		t.Errorf("counts: %+v", r)
	}
}

// The tool must fail a run whose stream holds what it did not publish: here
// an event without a sequence number before the replayed ones.
func TestReplayFailsOnForeignEvents(t *testing.T) {
	url := newServer(t)
	resp, err := http.Post(url+"/v1/streams/mixed/events", "application/json", strings.NewReader(`{"data":"not ours"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("publish: %s", resp.Status)
	}
	r, err := runJSON[replayReport](t, "replay", "--url", url, "--stream", "mixed", "-n", "100")
	if !errors.Is(err, ErrCheck) {
		t.Fatalf("error %v, want ErrCheck", err)
	}
	if r.Malformed != 1 || r.Received != 101 || r.Missing != 0 {
		t.Errorf("counts: %+v", r)
	}
}

func TestIdle(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	url := newServer(t)
	// The server runs in this process, so its memory is this process's.
	r, err := runJSON[idleReport](t, "idle", "--url", url, "--pid", fmt.Sprint(os.Getpid()), "--subscribers", "50")
	if err != nil {
		t.Fatal(err)
	}
	if r.Subscribers != 50 || r.RSSBefore <= 0 || r.RSSAfter <= 0 || r.ClientRSS <= 0 || r.Errors != 0 || r.ServerPID != os.Getpid() {
		t.Errorf("figures: %+v", r)
	}
}

func TestIdleSpawned(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	t.Setenv(childEnv, "serve")
	r, err := runJSON[idleReport](t, "idle", "--spawn", "--subscribers", "100")
	if err != nil {
		t.Fatal(err)
	}
	if !r.Spawned || r.ServerPID == 0 || r.ServerPID == os.Getpid() || r.Subscribers != 100 || r.RSSBefore <= 0 || r.RSSAfter <= 0 {
		t.Errorf("figures: %+v", r)
	}
	// The spawned server was stopped and waited for (reaped: no /proc entry).
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", r.ServerPID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("spawned server %d still there: %v", r.ServerPID, err)
	}
}

func TestTable(t *testing.T) {
	url := newServer(t)
	out, err := runBench(t, "publish", "--url", url, "-c", "2", "-n", "20")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", out)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	col := -1
	for _, l := range lines {
		i := strings.Index(l, "  ")
		j := i + len(l[i:]) - len(strings.TrimLeft(l[i:], " "))
		if i < 0 || (col >= 0 && j != col) {
			t.Fatalf("values not aligned in %q", out)
		}
		col = j
	}
	for _, want := range []string{"workload", "throughput", "latency p99", "errors", "client cpu"} {
		if !strings.Contains(out, want+" ") {
			t.Errorf("no %q row in %q", want, out)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	url := newServer(t)
	tests := []struct {
		name string
		args []string
		want string // in the error; "" means flag.ErrHelp
	}{
		{"no workload", nil, ""},
		{"unknown workload", []string{"soak"}, "unknown workload"},
		{"stray argument", []string{"publish", "--url", url, "now"}, "unexpected argument"},
		{"idle without a pid", []string{"idle", "--url", url}, "--spawn, or --pid"},
		{"not http", []string{"publish", "--url", "https://example.com"}, "must be http://"},
		{"nothing listening", []string{"publish", "--url", "http://127.0.0.1:1"}, "server at"},
		{"spawn and pid", []string{"idle", "--spawn", "--pid", "1"}, "exclude each other"},
		{"bad concurrency", []string{"publish", "--url", url, "-c", "0"}, "at least 1"},
		{"bad rate", []string{"fanout", "--url", url, "--rate", "0"}, "must be positive"},
		{"streams without merged", []string{"fanout", "--url", url, "--streams", "10"}, "need --merged"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runBench(t, tc.args...)
			if tc.want == "" {
				if !errors.Is(err, flag.ErrHelp) {
					t.Fatalf("error %v, want flag.ErrHelp", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
