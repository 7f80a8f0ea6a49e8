package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/sselog/sselog/client"
	"github.com/sselog/sselog/internal/testkit"
)

// tailed is one line of sselog tail's output, decoded.
type tailed struct {
	ID     string          `json:"id"`
	Stream string          `json:"stream"`
	Type   string          `json:"type"`
	Data   json.RawMessage `json:"data"`
	Time   string          `json:"time"`
}

// parseTail decodes tail's output: whole lines only, each one object with
// exactly the five fields.
func parseTail(t *testing.T, out string) []tailed {
	t.Helper()
	if out != "" && !strings.HasSuffix(out, "\n") {
		t.Fatalf("output ends inside a line: %q", out)
	}
	var lines []tailed
	for _, s := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if s == "" {
			continue
		}
		var fields map[string]json.RawMessage
		var l tailed
		if err := json.Unmarshal([]byte(s), &fields); err != nil || len(fields) != 5 || json.Unmarshal([]byte(s), &l) != nil {
			t.Fatalf("line %q is not one object of id, stream, type, data, time", s)
		}
		lines = append(lines, l)
	}
	return lines
}

// runTail runs sselog tail in this process to its end.
func runTail(t *testing.T, args ...string) (lines []tailed, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Wait)
	defer cancel()
	var out, errOut strings.Builder
	err = tailCommand(ctx, args, &out, &errOut)
	if ctx.Err() != nil {
		t.Fatalf("tail %v still running after %v", args, testkit.Wait)
	}
	return parseTail(t, out.String()), errOut.String(), err
}

func tailIDs(lines []tailed) []string {
	ids := make([]string, len(lines))
	for i, l := range lines {
		ids[i] = l.ID
	}
	return ids
}

// TestTailNoFollow: every stored event as one line, with its id, stream,
// type ("message" when untyped), data byte for byte and the id's time;
// then exit without error. A stream never published to prints nothing.
func TestTailNoFollow(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "x.db"))
	url := srv.eventsURL("s")
	ids := []string{publishOne(t, url, "t", `{"a":"<b>&"}`)}
	ids = append(ids, publishBatch(t, url, `1`, `[true,null]`)...)
	lines, _, err := runTail(t, "--url", srv.URL, "--stream", "s", "--no-follow")
	if err != nil {
		t.Fatal(err)
	}
	want := []tailed{
		{ids[0], "s", "t", json.RawMessage(`{"a":"<b>&"}`), ""},
		{ids[1], "s", "message", json.RawMessage(`1`), ""},
		{ids[2], "s", "message", json.RawMessage(`[true,null]`), ""},
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines %+v, want %d", len(lines), lines, len(want))
	}
	for i, l := range lines {
		u := ulid.MustParseStrict(want[i].ID)
		want[i].Time = ulid.Time(u.Time()).UTC().Format("2006-01-02T15:04:05.000Z07:00")
		if l.ID != want[i].ID || l.Stream != want[i].Stream || l.Type != want[i].Type || string(l.Data) != string(want[i].Data) || l.Time != want[i].Time {
			t.Errorf("line %d: %+v (%s), want %+v (%s)", i, l, l.Data, want[i], want[i].Data)
		}
	}
	lines, _, err = runTail(t, "--url", srv.URL, "--stream", "never", "--no-follow")
	if err != nil || len(lines) != 0 {
		t.Errorf("a stream never published to: %v, %v; want nothing and no error", lines, err)
	}
}

// TestTailStarts: --from, --since and --last, each with --no-follow.
func TestTailStarts(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "x.db"))
	url := srv.eventsURL("s")
	early := publishBatch(t, url, `1`, `2`, `3`)
	earlyTime := ulid.Time(ulid.MustParseStrict(early[2]).Time())
	testkit.WaitFor(t, "a later millisecond", func() bool { return time.Now().After(earlyTime) })
	middle := time.Now()
	testkit.WaitFor(t, "a later millisecond", func() bool { return time.Now().UnixMilli() > middle.UnixMilli() })
	late := publishBatch(t, url, `4`, `5`)
	all := append(append([]string(nil), early...), late...)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"from an id", []string{"--from", all[1]}, all[2:]},
		{"from the beginning", []string{"--from", "beginning"}, all},
		{"from the zero id", []string{"--from", client.ZeroID}, all},
		{"from the last id", []string{"--from", all[4]}, nil},
		{"since RFC 3339", []string{"--since", middle.UTC().Format(time.RFC3339Nano)}, late},
		{"since Unix ms", []string{"--since", strconv.FormatInt(middle.UnixMilli()+1, 10)}, late},
		{"since a duration", []string{"--since", "1h"}, all},
		{"since the future", []string{"--since", time.Now().Add(time.Hour).Format(time.RFC3339)}, nil},
		{"last", []string{"--last", "2"}, late},
		{"last, more than there are", []string{"--last", "50"}, all},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lines, _, err := runTail(t, append([]string{"--url", srv.URL, "--stream", "s", "--no-follow"}, tc.args...)...)
			if err != nil || strings.Join(tailIDs(lines), ",") != strings.Join(tc.want, ",") {
				t.Errorf("%v, %v; want %v", tailIDs(lines), err, tc.want)
			}
		})
	}
}

// beforeRead serves a proxy of backend that calls fn once, when the first
// request for events (SSE or a history page) arrives, before passing it
// on: after tail's Info request, before it reads anything.
func beforeRead(t *testing.T, backend string, fn func()) string {
	t.Helper()
	u, err := url.Parse(backend)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	var once sync.Once
	front := testkit.Serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && (strings.HasSuffix(r.URL.Path, "/events") || strings.HasSuffix(r.URL.Path, "/history")) {
			once.Do(fn)
		}
		rp.ServeHTTP(w, r)
	}), testkit.ServeOptions{})
	return front.URL
}

// TestTailNoFollowStopsAtStart: events published after the command
// started, before it reads the stream, are not printed: --no-follow ends
// at the last event stored at its start, whatever the start.
func TestTailNoFollowStopsAtStart(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "x.db"))
	// --last 4: the newest four as of the first page include the two
	// published after the start, and only the two before it are printed.
	for i, start := range [][]string{nil, {"--from", "beginning"}, {"--since", "1h"}, {"--last", "4"}} {
		t.Run(strings.Join(start, " "), func(t *testing.T) {
			stream := fmt.Sprintf("s%d", i)
			ids := publishBatch(t, srv.eventsURL(stream), `1`, `2`)
			front := beforeRead(t, srv.URL, func() {
				if _, _, err := post(srv.eventsURL(stream), `[{"data":3},{"data":4}]`); err != nil {
					t.Errorf("publish: %v", err)
				}
			})
			lines, _, err := runTail(t, append([]string{"--url", front, "--stream", stream, "--no-follow"}, start...)...)
			if err != nil || strings.Join(tailIDs(lines), ",") != strings.Join(ids, ",") {
				t.Errorf("%v, %v; want the two events stored at the start, %v", tailIDs(lines), err, ids)
			}
		})
	}
}

// TestTailNoFollowStreamEmptied: the events stored at the start go away
// (the stream is deleted; retention by age does the same) before tail
// reads them: --no-follow still ends, at once, with exit 0, whatever the
// start. From the client review (TestReviewNoFollowSinceHangsWhenStreamEmptied):
// --since and --last followed the stream over SSE, where a start by time
// or count gets no reset, and waited for an event that never came.
func TestTailNoFollowStreamEmptied(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "x.db"))
	for _, tc := range []struct {
		start  []string
		resets int // lines, each a gap reset
	}{
		{[]string{"--since", "1h"}, 0},
		{[]string{"--last", "5"}, 0},
		// A start with continuity is told that what followed it is gone.
		{[]string{"--from", "beginning"}, 1},
	} {
		t.Run(strings.Join(tc.start, " "), func(t *testing.T) {
			publishBatch(t, srv.eventsURL("s"), `1`, `2`)
			front := beforeRead(t, srv.URL, func() {
				req, err := http.NewRequest(http.MethodDelete, srv.URL+"/v1/streams/s", nil)
				if err != nil {
					t.Error(err)
					return
				}
				resp, err := httpClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
			})
			// runTail fails the test if tail is still running after
			// testkit.Wait.
			lines, _, err := runTail(t, append([]string{"--url", front, "--stream", "s", "--no-follow"}, tc.start...)...)
			if err != nil || len(lines) != tc.resets {
				t.Fatalf("%+v, %v; want %d lines and exit 0", lines, err, tc.resets)
			}
			for _, l := range lines {
				if l.Type != "reset" || string(l.Data) != `{"reason":"gap"}` {
					t.Errorf("line %+v (%s), want a gap reset", l, l.Data)
				}
			}
		})
	}
}

// tailProcess is sselog tail running in this process, in follow mode.
type tailProcess struct {
	stdout, stderr *syncBuffer
	cancel         context.CancelFunc
	done           chan error
}

func startTail(t *testing.T, args ...string) *tailProcess {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &tailProcess{stdout: newSyncBuffer(), stderr: newSyncBuffer(), cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- tailCommand(ctx, args, p.stdout, p.stderr) }()
	t.Cleanup(func() {
		cancel()
		<-p.done
	})
	return p
}

// waitLines waits for n lines of output and returns them.
func (p *tailProcess) waitLines(t *testing.T, n int) []tailed {
	t.Helper()
	deadline := time.NewTimer(eventTimeout)
	defer deadline.Stop()
	for {
		out := p.stdout.String()
		if strings.Count(out, "\n") >= n {
			return parseTail(t, out)
		}
		select {
		case <-p.stdout.changed:
		case <-deadline.C:
			t.Fatalf("%d lines after %v, want %d:\n%s\nstderr:\n%s", strings.Count(out, "\n"), eventTimeout, n, out, p.stderr)
		}
	}
}

// stop interrupts the command, as SIGINT does, and returns its error.
func (p *tailProcess) stop(t *testing.T) error {
	t.Helper()
	p.cancel()
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		return err
	case <-time.After(eventTimeout):
		t.Fatal("tail still running after it was interrupted")
		return nil
	}
}

// TestTailFollowDeleted: following, a deletion is printed as a reset line
// and noted on stderr; tail goes on with the stream published to again;
// an interrupt ends it without error.
func TestTailFollowDeleted(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "x.db"), "--retry", "20ms")
	url := srv.eventsURL("s")
	first := publishOne(t, url, "t", `1`)
	p := startTail(t, "--url", srv.URL, "--stream", "s", "--from", "beginning")
	p.waitLines(t, 1)
	req, err := http.NewRequest(http.MethodDelete, srv.URL+"/v1/streams/s", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := httpClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("delete: %v %v", resp, err)
	}
	resp.Body.Close()
	lines := p.waitLines(t, 2)
	if r := lines[1]; r.Type != "reset" || r.ID != first || string(r.Data) != `{"reason":"deleted"}` || r.Stream != "s" || r.Time == "" {
		t.Errorf("after the deletion: %+v (%s), want a deleted reset at %s", r, r.Data, first)
	}
	if !strings.Contains(p.stderr.String(), "deleted") {
		t.Errorf("stderr %q does not note the deletion", p.stderr)
	}
	again := publishOne(t, url, "t", `2`)
	lines = p.waitLines(t, 3)
	if lines[2].ID != again {
		t.Errorf("after the stream came back: %+v, want %s", lines[2], again)
	}
	if err := p.stop(t); err != nil {
		t.Errorf("interrupted tail returned %v, want nil (exit 0)", err)
	}
}

// TestTailTrimmed: a start below what retention removed is printed as a
// reset line, then the events. Followed over SSE, the reset says
// "trimmed", at the low-water mark, with the oldest retained id; with
// --no-follow, over the history endpoint, it says "gap", at the id just
// below the oldest retained one.
func TestTailTrimmed(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "x.db"), "--retain-interval", "10ms")
	ids := publishBatch(t, srv.eventsURL("s"), `1`, `2`, `3`, `4`)
	req, err := http.NewRequest(http.MethodPut, srv.URL+"/v1/streams/s/retention", strings.NewReader(`{"max_events":2}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("put retention: %v %v", resp, err)
	}
	resp.Body.Close()
	testkit.WaitFor(t, "the trim", func() bool { return len(storedOver(t, srv.URL, "s")) == 2 })

	p := startTail(t, "--url", srv.URL, "--stream", "s", "--from", ids[0])
	lines := p.waitLines(t, 3)
	wantData := fmt.Sprintf(`{"reason":"trimmed","oldest_id":"%s"}`, ids[2])
	if len(lines) != 3 || lines[0].Type != "reset" || lines[0].ID != ids[1] || string(lines[0].Data) != wantData ||
		lines[1].ID != ids[2] || lines[2].ID != ids[3] {
		t.Errorf("following: lines %+v, want a trimmed reset at %s, then %v", lines, ids[1], ids[2:])
	}
	if err := p.stop(t); err != nil {
		t.Errorf("interrupted tail returned %v", err)
	}
	if !strings.Contains(p.stderr.String(), "removed by retention") {
		t.Errorf("stderr %q does not note the trim", p.stderr)
	}

	lines, stderr, err := runTail(t, "--url", srv.URL, "--stream", "s", "--no-follow", "--from", ids[0])
	if err != nil {
		t.Fatal(err)
	}
	wantData = fmt.Sprintf(`{"reason":"gap","oldest_id":"%s"}`, ids[2])
	if len(lines) != 3 || lines[0].Type != "reset" || lines[0].ID < ids[1] || lines[0].ID >= ids[2] || string(lines[0].Data) != wantData ||
		lines[1].ID != ids[2] || lines[2].ID != ids[3] {
		t.Errorf("--no-follow: lines %+v, want a gap reset from %s up to %s, then %v", lines, ids[1], ids[2], ids[2:])
	}
	if !strings.Contains(stderr, "were removed") || !strings.Contains(stderr, "continuing at "+ids[2]) {
		t.Errorf("stderr %q does not note the gap", stderr)
	}
}

// TestTailCheckpoint: --checkpoint records the last line printed, and a
// checkpoint that holds an id wins over --from.
func TestTailCheckpoint(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "x.db"))
	url := srv.eventsURL("s")
	cp := filepath.Join(t.TempDir(), "tail.checkpoint")
	first := publishBatch(t, url, `1`, `2`, `3`)
	lines, _, err := runTail(t, "--url", srv.URL, "--stream", "s", "--no-follow", "--checkpoint", cp, "--from", "beginning")
	if err != nil || len(lines) != 3 {
		t.Fatalf("%v, %v; want three lines", lines, err)
	}
	if b, err := os.ReadFile(cp); err != nil || string(b) != first[2]+"\n" {
		t.Fatalf("checkpoint holds %q, %v; want %s", b, err, first[2])
	}
	second := publishBatch(t, url, `4`, `5`)
	lines, stderr, err := runTail(t, "--url", srv.URL, "--stream", "s", "--no-follow", "--checkpoint", cp, "--from", "beginning")
	if err != nil || strings.Join(tailIDs(lines), ",") != strings.Join(second, ",") {
		t.Errorf("second run: %v, %v; want only %v", tailIDs(lines), err, second)
	}
	if !strings.Contains(stderr, "resuming after "+first[2]) {
		t.Errorf("stderr %q does not say where it resumed", stderr)
	}
	// Nothing new: nothing printed, the checkpoint stays.
	lines, _, err = runTail(t, "--url", srv.URL, "--stream", "s", "--no-follow", "--checkpoint", cp)
	if err != nil || len(lines) != 0 {
		t.Errorf("third run: %v, %v; want nothing", lines, err)
	}
	if b, _ := os.ReadFile(cp); string(b) != second[1]+"\n" {
		t.Errorf("checkpoint holds %q, want %s", b, second[1])
	}
}

// TestTailFlags: what tail refuses before it connects.
func TestTailFlags(t *testing.T) {
	t.Parallel()
	bad := filepath.Join(t.TempDir(), "bad.checkpoint")
	if err := os.WriteFile(bad, []byte("garbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--no-follow"}, "--stream is required"},
		{[]string{"--stream", "s", "--from", "beginning", "--last", "3"}, "at most one of"},
		{[]string{"--stream", "s", "--since", "1h", "--last", "3"}, "at most one of"},
		{[]string{"--stream", "s", "--from", "nope"}, "--from"},
		{[]string{"--stream", "s", "--last", "0"}, "--last 0"},
		{[]string{"--stream", "s", "--since", "yesterday"}, "--since"},
		{[]string{"--stream", "s", "--checkpoint", bad}, "not an event id"},
		{[]string{"--stream", "s", "--checkpoint", filepath.Join(t.TempDir(), "missing", "tail.checkpoint")}, "--checkpoint"},
		{[]string{"--stream", "s", "--checkpoint", filepath.Join(bad, "tail.checkpoint")}, "--checkpoint"},
		{[]string{"--stream", "s", "--url", "localhost:8080"}, "--url"},
	} {
		if _, _, err := runTail(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}

// TestTailLiveNoGap: tail with no start prints what is published from its
// start on, without a gap even when its first connection ends before the
// first event: an event published while it reconnects is printed (the
// server's first block gives the live start's position, and the client
// resumes there).
func TestTailLiveNoGap(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "x.db"), "--retry", "20ms")
	publishOne(t, srv.eventsURL("s"), "t", `0`) // before the start: not printed
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	var (
		mu        sync.Mutex
		conns     int
		firstDone = make(chan struct{})    // connection 0 ended after its first block
		published = make(chan struct{})    // e1 is stored
		live      = make(chan struct{}, 1) // connection 1 has its first block
	)
	front := testkit.Serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/events") {
			rp.ServeHTTP(w, r)
			return
		}
		mu.Lock()
		n := conns
		conns++
		mu.Unlock()
		switch n {
		case 0:
			forwardFirstBlock(t, srv.URL, w, r)
			close(firstDone)
		case 1:
			select {
			case <-published:
			case <-r.Context().Done():
				return
			}
			rp.ServeHTTP(&firstWrite{ResponseWriter: w, wrote: live}, r)
		default:
			rp.ServeHTTP(w, r)
		}
	}), testkit.ServeOptions{})
	p := startTail(t, "--url", front.URL, "--stream", "s")
	select {
	case <-firstDone:
	case <-time.After(eventTimeout):
		t.Fatal("no first connection")
	}
	e1 := publishOne(t, srv.eventsURL("s"), "t", `1`)
	close(published)
	select {
	case <-live:
	case <-time.After(eventTimeout):
		t.Fatal("no second connection")
	}
	e2 := publishOne(t, srv.eventsURL("s"), "t", `2`)
	lines := p.waitLines(t, 1)
	if lines[0].ID != e1 {
		t.Fatalf("first line %s, want %s, published while tail reconnected (the next is %s)", lines[0].ID, e1, e2)
	}
	if lines = p.waitLines(t, 2); lines[1].ID != e2 {
		t.Errorf("second line %s, want %s", lines[1].ID, e2)
	}
}

// forwardFirstBlock passes an SSE request to the backend, relays the
// answer's first block (up to its blank line) to the client, flushed, and
// ends the response there, cleanly, so that the client reads the block
// before the end.
func forwardFirstBlock(t *testing.T, backend string, w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel() // ends the backend's stream
	req, err := http.NewRequestWithContext(ctx, r.Method, backend+r.URL.RequestURI(), nil)
	if err != nil {
		t.Errorf("forward: %v", err)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("forward: %v", err)
		return
	}
	defer resp.Body.Close()
	var block strings.Builder
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		block.WriteString(line)
		if err != nil || line == "\n" {
			break
		}
	}
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	_, _ = io.WriteString(w, block.String())
	_ = http.NewResponseController(w).Flush()
}

// firstWrite is a ResponseWriter that signals its first write.
type firstWrite struct {
	http.ResponseWriter
	wrote chan<- struct{}
	once  sync.Once
}

func (f *firstWrite) Write(p []byte) (int, error) {
	n, err := f.ResponseWriter.Write(p)
	f.once.Do(func() { f.wrote <- struct{}{} })
	return n, err
}

func (f *firstWrite) Unwrap() http.ResponseWriter { return f.ResponseWriter }
