//go:build unix

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

// fsizeLimitsEnv carries, to a TestHelperFaultServe child, the file size
// limits it steps through: the first at start, the next at each SIGUSR1,
// and no limit after the last.
const fsizeLimitsEnv = "TEST_SSELOG_FSIZE_LIMITS"

// TestHelperFaultServe is not a test: it is the body of the child process
// TestWriteFailure starts. It runs what main runs under a real file size
// limit (RLIMIT_FSIZE), with SIGXFSZ ignored so that a write past the limit
// fails with EFBIG instead of killing the process. Each SIGUSR1 moves to
// the next limit; a process may raise its soft limit up to the hard one.
func TestHelperFaultServe(t *testing.T) {
	enc, ok := os.LookupEnv(fsizeLimitsEnv)
	if !ok {
		t.Skip("the body of a child process, run by TestWriteFailure")
	}
	var args []string
	if err := json.Unmarshal([]byte(os.Getenv(childArgsEnv)), &args); err != nil {
		fmt.Fprintln(os.Stderr, "bad", childArgsEnv, err)
		os.Exit(3)
	}
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &orig); err != nil {
		fmt.Fprintln(os.Stderr, "getrlimit:", err)
		os.Exit(3)
	}
	// The limits are parsed into Rlimit's own field type, which is not the
	// same on every system.
	var limits []syscall.Rlimit
	for _, f := range strings.Split(enc, ",") {
		lim := orig
		if _, err := fmt.Sscan(f, &lim.Cur); err != nil {
			fmt.Fprintln(os.Stderr, "bad", fsizeLimitsEnv, err)
			os.Exit(3)
		}
		limits = append(limits, lim)
	}
	limits = append(limits, syscall.Rlimit{Cur: orig.Max, Max: orig.Max})
	signal.Ignore(syscall.SIGXFSZ)
	set := func(step int) {
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &limits[step]); err != nil {
			fmt.Fprintln(os.Stderr, "setrlimit:", err)
			os.Exit(3)
		}
		fmt.Fprintf(os.Stdout, "fsize step %d limit %d\n", step, limits[step].Cur)
	}
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	set(0)
	go func() {
		for step := 1; step < len(limits); step++ {
			<-usr1
			set(step)
		}
	}()
	os.Exit(runMain(args, os.Stdout, os.Stderr))
}

// startFaultChild starts a TestHelperFaultServe child with the given
// limits, as startChild starts a TestHelperServe one.
func startFaultChild(t *testing.T, limits []int64, args ...string) *child {
	t.Helper()
	lims := make([]string, len(limits))
	for i, l := range limits {
		lims[i] = strconv.FormatInt(l, 10)
	}
	return startHelper(t, "TestHelperFaultServe", []string{fsizeLimitsEnv + "=" + strings.Join(lims, ",")}, args...)
}

// waitStep waits for the child to report that it is at the given limit step.
func waitStep(t *testing.T, c *child, step int) {
	t.Helper()
	re := regexp.MustCompile(fmt.Sprintf(`(?m)^fsize step %d limit \d+$`, step))
	deadline := time.NewTimer(eventTimeout)
	defer deadline.Stop()
	for !re.MatchString(c.stdout.String()) {
		select {
		case <-c.stdout.changed:
		case <-c.exited:
			t.Fatalf("child exited (%v) before limit step %d\nstderr:\n%s", c.err, step, c.stderr)
		case <-deadline.C:
			t.Fatalf("child not at limit step %d after %v; stdout:\n%s", step, eventTimeout, c.stdout)
		}
	}
}

// ledger is what the test knows about one stream: the events acknowledged,
// in order, and the sequence numbers of those refused.
type ledger struct {
	stream  string
	acked   []sseEvent
	refused map[int]bool
	seq     int
}

// bigPad makes a publish of about 1 MiB: a few of them go past a limit a few
// MiB away.
var bigPad = strings.Repeat("x", 1<<20-64)

// publish sends one event whose data carries its sequence number, and
// records the outcome. Only 201 and 503 are acceptable; a 503 must say to
// retry and be the JSON error.
func (lg *ledger) publish(t *testing.T, base string, big bool) int {
	t.Helper()
	lg.seq++
	data := fmt.Sprintf(`{"seq":%d}`, lg.seq)
	if big {
		data = fmt.Sprintf(`{"seq":%d,"pad":"%s"}`, lg.seq, bigPad)
	}
	resp, err := httpClient.Post(base+"/v1/streams/"+lg.stream+"/events", "application/json", strings.NewReader(`{"data":`+data+`}`))
	if err != nil {
		t.Fatalf("publish %d to %s: %v", lg.seq, lg.stream, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var answer map[string]string
	if err := json.Unmarshal(body, &answer); err != nil {
		t.Fatalf("publish %d: status %d, answer %q is not JSON: %v", lg.seq, resp.StatusCode, body, err)
	}
	switch resp.StatusCode {
	case http.StatusCreated:
		lg.acked = append(lg.acked, sseEvent{ID: answer["id"], Data: data})
	case http.StatusServiceUnavailable:
		if ra := resp.Header.Get("Retry-After"); ra == "" {
			t.Errorf("publish %d: 503 without Retry-After", lg.seq)
		}
		if len(answer) != 1 || answer["error"] == "" {
			t.Errorf("publish %d: 503 answer %s, want {\"error\": ...}", lg.seq, body)
		}
		// The detail (the database's path, the OS error) is for the log:
		// a client learns only that nothing was stored.
		if msg := answer["error"]; strings.Contains(msg, "/") || strings.Contains(msg, "file too large") || strings.Contains(msg, ".db") {
			t.Errorf("publish %d: 503 answer %q shows the server's internals", lg.seq, msg)
		}
		lg.refused[lg.seq] = true
	default:
		t.Fatalf("publish %d to %s: status %d: %.200s", lg.seq, lg.stream, resp.StatusCode, body)
	}
	return resp.StatusCode
}

// check compares what a reader got (history, a stream or the file) with
// what was acknowledged: the same events in the same order, and nothing of
// a refused publish.
func (lg *ledger) check(t *testing.T, where string, got []sseEvent) {
	t.Helper()
	for _, e := range got {
		var seq int
		if _, err := fmt.Sscanf(e.Data, `{"seq":%d`, &seq); err != nil {
			t.Fatalf("%s: %s event %s has data %.40q", where, lg.stream, e.ID, e.Data)
		}
		if lg.refused[seq] {
			t.Fatalf("%s: %s shows event %d (id %s), whose publish was refused", where, lg.stream, seq, e.ID)
		}
	}
	if d := diffEvents(got, lg.acked); d != "" {
		t.Fatalf("%s: %s: %s", where, lg.stream, d)
	}
}

// history reads a whole stream through the history endpoint, a few events a
// page.
func history(t *testing.T, base, stream string) []sseEvent {
	t.Helper()
	var out []sseEvent
	after := zeroID
	for {
		resp, err := httpClient.Get(base + "/v1/streams/" + stream + "/history?limit=4&after=" + after)
		if err != nil {
			t.Fatalf("history: %v", err)
		}
		var page struct {
			Events []struct {
				ID   string          `json:"id"`
				Type string          `json:"type"`
				Data json.RawMessage `json:"data"`
			} `json:"events"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("history of %s after %s: status %d, %v", stream, after, resp.StatusCode, err)
		}
		if len(page.Events) == 0 {
			return out
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

// TestWriteFailure runs the server under real write failures: a child
// process whose file size limit is first a few MiB above the database's
// pages but below its file size (so that writing pages fails with EFBIG in
// the middle of a commit), then a few MiB above the file size (so that
// growing the file fails), then lifted. At each failure the publish is
// answered 503 with Retry-After and nothing of it is acknowledged or seen;
// history, a subscriber connected before the failure and a new replay keep
// working and show exactly the acknowledged events; publishing resumes once
// the limit is lifted; and after a restart the file checks out and holds
// exactly the acknowledged events.
func TestWriteFailure(t *testing.T) {
	if testing.Short() {
		t.Skip("writes tens of MiB through a child process; skipped in -short mode")
	}
	t.Parallel()
	db := filepath.Join(t.TempDir(), "x.db")
	big := &ledger{stream: "big", refused: map[int]bool{}}
	small := &ledger{stream: "small", refused: map[int]bool{}}

	// A database with a few events, made here so that its size is known.
	l, err := store.Open(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, lg := range []*ledger{big, small} {
		lg.seq++
		data := fmt.Sprintf(`{"seq":%d}`, lg.seq)
		ids, err := l.Append(t.Context(), lg.stream, []store.Event{{Data: []byte(data)}})
		if err != nil {
			t.Fatal(err)
		}
		lg.acked = append(lg.acked, sseEvent{ID: ids[0].String(), Data: data})
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := store.Inspect(db)
	if err != nil {
		t.Fatal(err)
	}
	used := r.Pages * int64(r.PageSize)
	pageLimit, growLimit := used+3<<20, r.FileSize+2<<20
	t.Logf("file %d bytes, pages in use up to %d; limits: %d (pages), %d (growth), then none", r.FileSize, used, pageLimit, growLimit)
	if pageLimit+2<<20 > r.FileSize {
		t.Fatalf("bbolt made a file of %d bytes with %d in use: no room for a limit between them", r.FileSize, used)
	}

	c := startFaultChild(t, []int64{pageLimit, growLimit},
		"serve", "--addr", "127.0.0.1:0", "--db", db, "--heartbeat", "50ms", "--max-body", "2MiB")
	base := waitServing(t, c.stdout, c.stderr, c.exited, func() error { return c.err })
	waitStep(t, c, 0)
	// Connected before any failure, from the start of each stream.
	subs := map[*ledger]*sseStream{
		big:   subscribe(t, base+"/v1/streams/big/events", zeroID),
		small: subscribe(t, base+"/v1/streams/small/events", zeroID),
	}

	// The failing system call of each step, as os reports it.
	failures := []struct{ what, syscall string }{
		{"writing pages", "write " + db + ": file too large"},
		{"growing the file", "truncate " + db + ": file too large"},
	}
	for step, f := range failures {
		what := f.what
		// Publish until the limit is hit, then a few more.
		logStart := len(c.stderr.String())
		start := time.Now()
		failed := 0
		for i := 0; failed == 0; i++ {
			if i == 100 {
				t.Fatalf("step %d (%s): 100 publishes of 1 MiB and no failure", step, what)
			}
			if big.publish(t, base, true) == http.StatusServiceUnavailable {
				failed++
			}
		}
		for range 3 {
			big.publish(t, base, true)
			small.publish(t, base, false)
		}
		t.Logf("step %d (%s): %d acknowledged, %d refused so far; first failure after %v", step, what, len(big.acked)+len(small.acked), len(big.refused)+len(small.refused), time.Since(start).Round(time.Millisecond))
		if logs := c.stderr.String()[logStart:]; !strings.Contains(logs, f.syscall) {
			t.Errorf("step %d (%s): the child's log does not show %q:\n%s", step, what, f.syscall, logs)
		}

		// Reads go on and show exactly what was acknowledged.
		resp, err := httpClient.Get(base + "/healthz")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("healthz while writes fail: %v %v", resp, err)
		}
		resp.Body.Close()
		for _, lg := range []*ledger{big, small} {
			lg.check(t, fmt.Sprintf("step %d history", step), history(t, base, lg.stream))
			lg.check(t, fmt.Sprintf("step %d subscriber", step), subs[lg].quiet(t, len(lg.acked)))
			fresh := subscribe(t, base+"/v1/streams/"+lg.stream+"/events", zeroID)
			lg.check(t, fmt.Sprintf("step %d replay", step), fresh.quiet(t, len(lg.acked)))
			fresh.close()
		}
		if err := c.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		waitStep(t, c, step+1)
	}

	// No limit: publishing resumes at once, and the subscribers that were
	// there all along get it.
	for range 3 {
		for _, lg := range []*ledger{big, small} {
			if status := lg.publish(t, base, lg == big); status != http.StatusCreated {
				t.Fatalf("publish to %s with no limit: status %d", lg.stream, status)
			}
		}
	}
	for _, lg := range []*ledger{big, small} {
		lg.check(t, "after the limit is lifted, subscriber", subs[lg].quiet(t, len(lg.acked)))
		lg.check(t, "after the limit is lifted, history", history(t, base, lg.stream))
	}
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := c.wait(t, stopTimeout); err != nil {
		t.Fatalf("after SIGTERM the child exited with %v, want status 0", err)
	}

	// The file checks out, a normal server opens it and goes on.
	if err := store.Check(db); err != nil {
		t.Fatalf("check after the write failures: %v", err)
	}
	srv := startChild(t, "serve", "--addr", "127.0.0.1:0", "--db", db)
	base = waitServing(t, srv.stdout, srv.stderr, srv.exited, func() error { return srv.err })
	for _, lg := range []*ledger{big, small} {
		lg.check(t, "after a restart, history", history(t, base, lg.stream))
		if status := lg.publish(t, base, false); status != http.StatusCreated {
			t.Fatalf("publish to %s after a restart: status %d", lg.stream, status)
		}
	}
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := srv.wait(t, stopTimeout); err != nil {
		t.Fatalf("after SIGTERM the restarted child exited with %v, want status 0", err)
	}
	if err := store.Check(db); err != nil {
		t.Fatalf("check after the restart: %v", err)
	}
	l = testkit.OpenAt(t, db, store.Options{})
	for _, lg := range []*ledger{big, small} {
		lg.check(t, "in the file", storedEvents(t, l, lg.stream))
	}
	t.Logf("%d events acknowledged and stored, %d refused and absent", len(big.acked)+len(small.acked), len(big.refused)+len(small.refused))
}
