package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

// runPublish runs sselog publish in this process with stdin, and returns
// its stdout (the ids), its stderr and its error.
func runPublish(t *testing.T, stdin string, args ...string) ([]string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Wait)
	defer cancel()
	var out, errOut strings.Builder
	err := publishCommand(ctx, args, strings.NewReader(stdin), &out, &errOut)
	return strings.Fields(out.String()), errOut.String(), err
}

// batchCounter is a proxy in front of a server that records, for every
// publish that passes, how many events its body held.
type batchCounter struct {
	mu      sync.Mutex
	batches []int
}

func newBatchCounter(t *testing.T, backend string) (*batchCounter, string) {
	t.Helper()
	u, err := url.Parse(backend)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	bc := &batchCounter{}
	srv := testkit.Serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				return
			}
			var batch []json.RawMessage
			if err := json.Unmarshal(body, &batch); err != nil {
				t.Errorf("publish body is not a batch: %s", body)
			}
			bc.mu.Lock()
			bc.batches = append(bc.batches, len(batch))
			bc.mu.Unlock()
			r.Body = io.NopCloser(strings.NewReader(string(body)))
		}
		rp.ServeHTTP(w, r)
	}), testkit.ServeOptions{})
	return bc, srv.URL
}

func (bc *batchCounter) sizes() []int {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	return append([]int(nil), bc.batches...)
}

// storedOver reads a stream through a server's history, for tests whose
// server runs in this process and holds its database open.
func storedOver(t *testing.T, base, stream string) []sseEvent {
	t.Helper()
	resp, err := httpClient.Get(base + "/v1/streams/" + stream + "/history?limit=1000")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var page struct {
		Events []struct {
			ID   string          `json:"id"`
			Type string          `json:"type"`
			Data json.RawMessage `json:"data"`
		} `json:"events"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		t.Fatal(err)
	}
	out := make([]sseEvent, len(page.Events))
	for i, e := range page.Events {
		out[i] = sseEvent{ID: e.ID, Type: e.Type, Data: string(e.Data)}
	}
	return out
}

// TestPublishCommand: lines become events in batches of at most --batch,
// in order, with --type; the ids printed are the stored ones, in order;
// empty lines are skipped; CRLF line ends are fine.
func TestPublishCommand(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "x.db")
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", db)
	counter, url := newBatchCounter(t, srv.URL)
	var in strings.Builder
	for i := range 250 {
		fmt.Fprintf(&in, "{\"n\":%d, \"s\":\"<&>\"}\r\n", i)
		if i%50 == 0 {
			in.WriteString("\n  \n")
		}
	}
	ids, _, err := runPublish(t, in.String(), "--url", url, "--stream", "s", "--type", "tick", "--batch", "100")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(counter.sizes()); got != "[100 100 50]" {
		t.Errorf("batches %s, want [100 100 50]", got)
	}
	// The database itself: the history endpoint would show "<" as \u003c.
	srv.stop(t)
	stored := storedEvents(t, testkit.OpenAt(t, db, store.Options{}), "s")
	if len(ids) != 250 || len(stored) != 250 {
		t.Fatalf("%d ids printed, %d stored; want 250", len(ids), len(stored))
	}
	for i, e := range stored {
		want := fmt.Sprintf(`{"n":%d,"s":"<&>"}`, i)
		if e.ID != ids[i] || e.Type != "tick" || e.Data != want {
			t.Fatalf("event %d: %+v, printed id %s; want type tick, data %s", i, e, ids[i], want)
		}
	}
}

// TestPublishCommandEvents: with --events each line is an object with its
// own type; "data" is required, null allowed; other fields are refused.
func TestPublishCommandEvents(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "x.db"))
	in := `{"type":"a","data":{"x":1}}
{"data":"untyped"}
{"type":"c","data":null}
`
	ids, _, err := runPublish(t, in, "--url", srv.URL, "--stream", "s", "--events")
	if err != nil {
		t.Fatal(err)
	}
	want := []sseEvent{{ids[0], "a", `{"x":1}`}, {ids[1], "message", `"untyped"`}, {ids[2], "c", `null`}}
	if d := diffEvents(storedOver(t, srv.URL, "s"), want); d != "" {
		t.Error(d)
	}
	for _, bad := range []struct{ line, why string }{
		{`{"type":"a"}`, `no "data"`},
		{`{"type":"a","data":1,"extra":2}`, "unknown field"},
		{`{"type":1,"data":1}`, "event object"},
		{`{"data":1} {"data":2}`, "more than one"},
		{`[{"data":1}]`, "event object"},
	} {
		ids, _, err := runPublish(t, bad.line+"\n", "--url", srv.URL, "--stream", "bad", "--events")
		if err == nil || !strings.Contains(err.Error(), "line 1:") || !strings.Contains(err.Error(), bad.why) || len(ids) != 0 {
			t.Errorf("%s: ids %v, err %v; want an error naming line 1 and %q", bad.line, ids, err, bad.why)
		}
	}
}

// TestPublishCommandBadLine: at a line that is not JSON, everything before
// it is stored (the full batches, and the part batch before it), nothing
// from it on; the error names the line.
func TestPublishCommandBadLine(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "x.db"))
	in := "1\n2\n3\n\n4\n5\n{oops\n7\n"
	ids, _, err := runPublish(t, in, "--url", srv.URL, "--stream", "s", "--batch", "2")
	if err == nil || !strings.Contains(err.Error(), "line 7:") || !strings.Contains(err.Error(), "stored before it: 5 events") {
		t.Fatalf("err = %v, want one naming line 7 and the 5 events stored before it", err)
	}
	stored := storedOver(t, srv.URL, "s")
	if len(ids) != 5 || len(stored) != 5 || stored[4].Data != "5" || stored[4].ID != ids[4] {
		t.Errorf("printed %v, stored %v; want the five events before the bad line", ids, stored)
	}
}

// TestPublishCommandRefused: a batch the server refuses is not stored,
// the batches before it are, and nothing after it is sent.
func TestPublishCommandRefused(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "x.db"))
	counter, url := newBatchCounter(t, srv.URL)
	in := `{"type":"a","data":1}
{"type":"a","data":2}
{"type":"a","data":3}
{"type":"reset","data":4}
{"type":"a","data":5}
`
	ids, _, err := runPublish(t, in, "--url", url, "--stream", "s", "--events", "--batch", "2")
	if err == nil || !strings.Contains(err.Error(), "lines 3 to 4 were not stored") || !strings.Contains(err.Error(), "400") {
		t.Fatalf("err = %v, want the refusal of lines 3 to 4", err)
	}
	if len(ids) != 2 || len(storedOver(t, srv.URL, "s")) != 2 {
		t.Errorf("printed %v; want the first batch's two ids, and two events stored", ids)
	}
	if got := fmt.Sprint(counter.sizes()); got != "[2 2]" {
		t.Errorf("batches sent %s, want [2 2]: nothing after the refused one", got)
	}
}

// TestPublishCommandFlags: what the command refuses before reading a line.
func TestPublishCommandFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--url", "http://127.0.0.1:1"}, "--stream is required"},
		{[]string{"--stream", "s", "--batch", "0"}, "--batch 0"},
		{[]string{"--stream", "s", "--batch", "10001"}, "--batch 10001"},
		{[]string{"--stream", "s", "--events", "--type", "t"}, "exclude each other"},
		{[]string{"--stream", "s", "--url", "ftp://x"}, "--url"},
		{[]string{"--stream", "s", "stray"}, "unexpected argument"},
	} {
		if _, _, err := runPublish(t, "1\n", tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}

// TestPublishCommandEnv: SSELOG_URL and SSELOG_TOKEN stand in for --url and
// --token.
func TestPublishCommandEnv(t *testing.T) {
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "x.db"))
	var auth []string
	var mu sync.Mutex
	u, _ := url.Parse(srv.URL)
	rp := httputil.NewSingleHostReverseProxy(u)
	front := testkit.Serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Header.Get("Authorization"))
		mu.Unlock()
		rp.ServeHTTP(w, r)
	}), testkit.ServeOptions{})
	t.Setenv("SSELOG_URL", front.URL)
	t.Setenv("SSELOG_TOKEN", "secret-token")
	if _, _, err := runPublish(t, "1\n", "--stream", "s"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(auth) != 1 || auth[0] != "Bearer secret-token" {
		t.Errorf("Authorization %q, want the token from SSELOG_TOKEN", auth)
	}
}

// TestPublishCommandExitStatus: as its own process, sselog publish exits
// 0 when every line was stored, and non-zero, with the line on stderr,
// when one was not.
func TestPublishCommandExitStatus(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "x.db"))
	for _, tc := range []struct {
		stdin string
		ok    bool
		ids   int
	}{
		{"1\n2\n", true, 2},
		{"1\nnope\n3\n", false, 1},
	} {
		stdout, stderr, err := runChildStdin(t, tc.stdin, "publish", "--url", srv.URL, "--stream", "s")
		var exit *exec.ExitError
		switch {
		case tc.ok && err != nil:
			t.Errorf("stdin %q: %v, want exit status 0\nstderr: %s", tc.stdin, err, stderr)
		case !tc.ok && (!errors.As(err, &exit) || exit.ExitCode() == 0 || !strings.Contains(stderr, "line 2:")):
			t.Errorf("stdin %q: %v, stderr %q; want a non-zero exit naming line 2", tc.stdin, err, stderr)
		}
		if n := len(strings.Fields(stdout)); n != tc.ids {
			t.Errorf("stdin %q: %d ids printed, want %d", tc.stdin, n, tc.ids)
		}
	}
}

// runChildStdin runs sselog as its own process with stdin, to its end.
func runChildStdin(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	enc, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Wait)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperServe$", "-test.count=1")
	cmd.Env = append(os.Environ(), childArgsEnv+"="+string(enc), "GORACE=atexit_sleep_ms=0")
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// waitOutput waits until b holds at least n lines.
func waitOutput(t *testing.T, b *syncBuffer, n int) {
	t.Helper()
	deadline := time.NewTimer(eventTimeout)
	defer deadline.Stop()
	for strings.Count(b.String(), "\n") < n {
		select {
		case <-b.changed:
		case <-deadline.C:
			t.Fatalf("%q after %v, want %d lines", b, eventTimeout, n)
		}
	}
}

// TestPublishCommandInterrupted: an interrupt ends publish while it waits
// for input that does not come (a pipe that stays open), with an error
// that says what was stored, and, when lines were read and not yet sent
// (the input paused inside the next line), names them: they are not sent.
func TestPublishCommandInterrupted(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "x.db"))
	for _, tc := range []struct {
		name string
		then []string // written after the first line is stored, each write taken in whole
		want string
	}{
		{"waiting for a line", nil, "interrupted while waiting for line 2 (lines 1 to 1 were stored: 1 event)"},
		// Line 2 goes with line 3 while the input has not paused: "3"
		// was buffered with it. "\n4" is read only once line 2 was taken.
		{"a batch in hand", []string{"2\n3", "\n4"}, "interrupted: lines 2 to "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream := strings.ReplaceAll(tc.name, " ", "-")
			pr, pw := io.Pipe()
			defer pw.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			stdout := newSyncBuffer()
			done := make(chan error, 1)
			go func() {
				done <- publishCommand(ctx, []string{"--url", srv.URL, "--stream", stream, "--batch", "10"}, pr, stdout, io.Discard)
			}()
			if _, err := io.WriteString(pw, "1\n"); err != nil {
				t.Fatal(err)
			}
			waitOutput(t, stdout, 1)
			for _, w := range tc.then {
				if _, err := io.WriteString(pw, w); err != nil {
					t.Fatal(err)
				}
			}
			cancel()
			var err error
			select {
			case err = <-done:
			case <-time.After(eventTimeout):
				t.Fatal("publish still running after the interrupt, waiting for input")
			}
			if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want context.Canceled and %q", err, tc.want)
			}
			if tc.then != nil && !strings.Contains(err.Error(), "were read and not sent (stored before them: 1 event)") {
				t.Errorf("err = %v, want the lines in hand named as not sent", err)
			}
			if ids, stored := strings.Fields(stdout.String()), storedOver(t, srv.URL, stream); len(ids) != 1 || len(stored) != 1 || stored[0].ID != ids[0] {
				t.Errorf("printed %v, stored %v; want the first line alone", ids, stored)
			}
		})
	}
}
