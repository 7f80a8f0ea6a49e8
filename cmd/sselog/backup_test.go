package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

// runAdmin calls run for a command that ends by itself.
func runAdmin(t *testing.T, args ...string) (stdout string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut strings.Builder
	err = run(ctx, args, &out, &errOut)
	if errOut.Len() > 0 {
		t.Logf("%s stderr:\n%s", args[0], errOut.String())
	}
	return out.String(), err
}

// requireEmptyDir fails unless dir holds no files: a failed backup leaves
// neither its output nor its temporary file.
func requireEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("left behind: %s", filepath.Join(dir, e.Name()))
	}
}

// ackLog records what publishers were told was stored, by stream.
type ackLog struct {
	mu      sync.Mutex
	events  map[string][]sseEvent
	n       int
	errs    []error
	changed chan struct{}

	// late is set once the backup's read transaction is known to be open;
	// events whose publish request was sent after it must not be in the
	// copy, and are recorded in lateIDs.
	late    atomic.Bool
	lateIDs map[string]bool
}

func newAckLog() *ackLog {
	return &ackLog{events: map[string][]sseEvent{}, lateIDs: map[string]bool{}, changed: make(chan struct{}, 1)}
}

func (a *ackLog) add(stream string, evs []sseEvent, late bool) {
	a.mu.Lock()
	a.events[stream] = append(a.events[stream], evs...)
	a.n += len(evs)
	for _, e := range evs {
		if late {
			a.lateIDs[e.ID] = true
		}
	}
	a.mu.Unlock()
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

func (a *ackLog) fail(err error) {
	a.mu.Lock()
	a.errs = append(a.errs, err)
	a.mu.Unlock()
}

// snapshot copies what has been acknowledged so far.
func (a *ackLog) snapshot() (map[string][]sseEvent, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string][]sseEvent, len(a.events))
	for s, evs := range a.events {
		out[s] = append([]sseEvent(nil), evs...)
	}
	return out, a.n
}

// waitAcked waits until at least n events have been acknowledged.
func (a *ackLog) waitAcked(t *testing.T, n int) {
	t.Helper()
	deadline := time.NewTimer(eventTimeout)
	defer deadline.Stop()
	for {
		a.mu.Lock()
		got, errs := a.n, a.errs
		a.mu.Unlock()
		if len(errs) > 0 {
			t.Fatalf("publishers failed: %v", errs)
		}
		if got >= n {
			return
		}
		select {
		case <-a.changed:
		case <-deadline.C:
			t.Fatalf("%d events acknowledged after %v, want %d", got, eventTimeout, n)
		}
	}
}

// publishLoop publishes batches of three events to url until ctx ends,
// recording every acknowledged event. It never fails the test itself.
func publishLoop(ctx context.Context, acks *ackLog, url, stream string, who int) {
	for k := 0; ctx.Err() == nil; k++ {
		var data []string
		var parts []string
		for j := range 3 {
			d := fmt.Sprintf(`{"publisher":%d,"batch":%d,"n":%d,"pad":%q}`, who, k, j, strings.Repeat("x", 200))
			data = append(data, d)
			parts = append(parts, `{"type":"load","data":`+d+`}`)
		}
		late := acks.late.Load()
		status, out, err := post(url, "["+strings.Join(parts, ",")+"]")
		if err == nil && status != http.StatusCreated {
			err = fmt.Errorf("status %d: %v", status, out)
		}
		var ids []string
		if err == nil {
			if err = json.Unmarshal(out["ids"], &ids); err == nil && len(ids) != len(data) {
				err = fmt.Errorf("%d ids for %d events", len(ids), len(data))
			}
		}
		if err != nil {
			acks.fail(fmt.Errorf("publisher %d: %w", who, err))
			return
		}
		evs := make([]sseEvent, len(ids))
		for i, id := range ids {
			evs[i] = sseEvent{ID: id, Type: "load", Data: data[i]}
		}
		acks.add(stream, evs, late)
	}
}

// stallingProxy passes GET /v1/backup through to target, but holds the
// body after its first MiB until resume is closed, so that the server's
// read transaction stays open for as long as the test needs. stalled is
// closed once it holds.
func stallingProxy(t *testing.T, target string) (url string, stalled, resume chan struct{}) {
	stalled, resume = make(chan struct{}), make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := http.NewRequestWithContext(r.Context(), r.Method, target+r.URL.Path, nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Length", resp.Header.Get("Content-Length"))
		w.WriteHeader(resp.StatusCode)
		io.CopyN(w, resp.Body, 1<<20)
		w.(http.Flusher).Flush()
		close(stalled)
		select {
		case <-resume:
		case <-r.Context().Done():
			return
		}
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(ts.Close)
	return ts.URL, stalled, resume
}

func TestBackupUnderLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	live := filepath.Join(dir, "live.db")
	out := filepath.Join(dir, "backups", "copy.db")
	if err := os.Mkdir(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	// 24 MiB already stored: more than the socket buffers hold, so the
	// server is still inside its read transaction while the proxy stalls.
	l, err := store.Open(live, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	appendEvents(t, l, "bulk", 24<<10, 1000)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", live)
	proxyURL, stalled, resume := stallingProxy(t, srv.URL)
	resumeOnce := sync.OnceFunc(func() { close(resume) })
	t.Cleanup(resumeOnce)

	// Two publishers per stream, so that appends to one stream interleave.
	streams := []string{"load-a", "load-b"}
	acks := newAckLog()
	ctx, stopPublishers := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		stopPublishers()
		wg.Wait()
	}()
	for i := range 4 {
		stream := streams[i%len(streams)]
		wg.Go(func() { publishLoop(ctx, acks, srv.eventsURL(stream), stream, i) })
	}
	acks.waitAcked(t, 300)

	// Every event acknowledged now was committed before the backup's read
	// transaction can begin.
	before, nBefore := acks.snapshot()
	var stdout strings.Builder
	done := make(chan error, 1)
	go func() {
		done <- run(context.Background(), []string{"backup", "--url", proxyURL, "--out", out}, &stdout, io.Discard)
	}()
	select {
	case <-stalled:
	case err := <-done:
		t.Fatalf("backup returned before the proxy held it: %v", err)
	case <-time.After(eventTimeout):
		t.Fatal("the backup's first MiB never reached the proxy")
	}
	// The copy's transaction is open: publishers must go on meanwhile, and
	// what they send from now on is not in the copy.
	acks.late.Store(true)
	_, nStalled := acks.snapshot()
	acks.waitAcked(t, nStalled+60)
	resumeOnce()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("backup: %v", err)
		}
	case <-time.After(eventTimeout):
		t.Fatal("backup did not finish")
	}
	stopPublishers()
	wg.Wait()
	all, nAll := acks.snapshot()
	if len(acks.errs) > 0 {
		t.Fatalf("publishers failed: %v", acks.errs)
	}
	t.Logf("acknowledged: %d before the backup, %d when the proxy held it, %d in all (%d sent while held); %s",
		nBefore, nStalled, nAll, len(acks.lateIDs), strings.TrimSpace(stdout.String()))
	if !strings.HasPrefix(stdout.String(), "saved "+out+": ") || !strings.Contains(stdout.String(), "3 streams") {
		t.Errorf("stdout %q, want the one-line summary", stdout.String())
	}
	srv.stop(t)

	copyLog := testkit.OpenAt(t, out, store.Options{})
	liveLog := testkit.OpenAt(t, live, store.Options{})
	if info, err := copyLog.Stream("bulk"); err != nil || info.Count != 24<<10 {
		t.Errorf("bulk in the copy: %+v, %v; want %d events", info, err, 24<<10)
	}
	total := 0
	for _, stream := range streams {
		got := storedEvents(t, copyLog, stream)
		total += len(got)
		byID := make(map[string]sseEvent, len(got))
		for i, e := range got {
			if i > 0 && e.ID <= got[i-1].ID {
				t.Fatalf("%s: id %s after %s in the copy", stream, e.ID, got[i-1].ID)
			}
			if acks.lateIDs[e.ID] {
				t.Fatalf("%s: the copy holds %s, published after its transaction began", stream, e.ID)
			}
			byID[e.ID] = e
		}
		for _, want := range before[stream] {
			if e, ok := byID[want.ID]; !ok || e != want {
				t.Fatalf("%s: acknowledged before the backup began: %+v; the copy has %+v (present: %v)", stream, want, e, ok)
			}
		}
		// A consistent copy is a prefix of each stream as the server
		// finally stored it.
		final := storedEvents(t, liveLog, stream)
		if len(final) < len(got) {
			t.Fatalf("%s: the copy has %d events, the live database %d", stream, len(got), len(final))
		}
		if d := diffEvents(got, final[:len(got)]); d != "" {
			t.Errorf("%s: the copy is not a prefix of the live stream: %s", stream, d)
		}
		if len(final) != len(all[stream]) {
			t.Errorf("%s: %d events stored, %d acknowledged", stream, len(final), len(all[stream]))
		}
	}
	if total < nBefore {
		t.Errorf("the copy holds %d events, fewer than the %d acknowledged before it began", total, nBefore)
	}
}

// newDatabaseBytes returns the bytes of a small database exactly as the
// server's backup endpoint sends it.
func newDatabaseBytes(t *testing.T) []byte {
	t.Helper()
	l := testkit.OpenAt(t, filepath.Join(t.TempDir(), "src.db"), store.Options{})
	for i := range 20 {
		evs := make([]store.Event, 50)
		for j := range evs {
			evs[j] = store.Event{Data: []byte(strconv.Quote(strings.Repeat("y", 500+i+j)))}
		}
		if _, err := l.Append(context.Background(), "s", evs); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if _, err := l.Backup(&buf, nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestBackupBadAnswers(t *testing.T) {
	t.Parallel()
	db := newDatabaseBytes(t)
	tests := []struct {
		name    string
		handler http.HandlerFunc
		wantErr []string
	}{
		{
			name: "server error as JSON",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusServiceUnavailable)
				w.Write([]byte(`{"error":"log is closed"}` + "\n"))
			},
			wantErr: []string{"503 Service Unavailable", "log is closed", "/v1/backup"},
		},
		{
			name: "not an sselog server",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "no such page here", http.StatusNotFound)
			},
			wantErr: []string{"404 Not Found", "no such page here"},
		},
		{
			name: "body cut short",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", strconv.Itoa(len(db)))
				w.Write(db[:len(db)/2])
				// Returning with less than announced closes the connection.
			},
			wantErr: []string{"cut short", fmt.Sprintf("of %d bytes", len(db))},
		},
		{
			name: "no Content-Length",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Write(db[:100])
				w.(http.Flusher).Flush()
				w.Write(db[100:])
			},
			wantErr: []string{"no Content-Length"},
		},
		{
			name: "not a database",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", strconv.Itoa(len(db)))
				w.Write(bytes.Repeat([]byte("not bbolt"), len(db)/9+1)[:len(db)])
			},
			wantErr: []string{"does not open as an sselog database"},
		},
		{
			// The length is consistent, the file is not: bbolt would read
			// past its end.
			name: "truncated copy with a matching Content-Length",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", strconv.Itoa(len(db)/4))
				w.Write(db[:len(db)/4])
			},
			wantErr: []string{"does not open as an sselog database"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ts := httptest.NewServer(tt.handler)
			defer ts.Close()
			dir := t.TempDir()
			_, err := runAdmin(t, "backup", "--url", ts.URL, "--out", filepath.Join(dir, "copy.db"))
			if err == nil {
				t.Fatal("backup succeeded")
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("err = %v, want it to contain %q", err, want)
				}
			}
			requireEmptyDir(t, dir)
		})
	}
}

func TestBackupInterrupted(t *testing.T) {
	t.Parallel()
	db := newDatabaseBytes(t)
	release := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(db)))
		w.Write(db[:len(db)/2])
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(ts.Close)
	t.Cleanup(func() { close(release) })

	dir := t.TempDir()
	out := filepath.Join(dir, "copy.db")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"backup", "--url", ts.URL, "--out", out}, io.Discard, io.Discard) }()

	// Interrupt once the first half is on disk.
	testkit.WaitFor(t, out+".tmp to hold the first half", func() bool {
		st, err := os.Stat(out + ".tmp")
		return err == nil && st.Size() == int64(len(db)/2)
	})
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	case <-time.After(eventTimeout):
		t.Fatal("backup did not return after its context ended")
	}
	requireEmptyDir(t, dir)
}

func TestBackupOverwrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", filepath.Join(dir, "live.db"))
	id := publishOne(t, srv.eventsURL("s"), "", `"one"`)
	out := filepath.Join(dir, "copy.db")
	if err := os.WriteFile(out, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}

	_, err := runAdmin(t, "backup", "--url", srv.URL, "--out", out)
	if err == nil || !strings.Contains(err.Error(), out+" already exists") || !strings.Contains(err.Error(), "--force") {
		t.Errorf("backup over an existing file: %v, want a refusal that names it and --force", err)
	}
	// A temporary file another live backup holds is not taken, even with
	// --force; once that backup is gone, its leftover is.
	other, err := store.CreateTemp(out + ".tmp")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.WriteString("other"); err != nil {
		t.Fatal(err)
	}
	_, err = runAdmin(t, "backup", "--url", srv.URL, "--out", out, "--force")
	if !errors.Is(err, store.ErrBusy) || !strings.Contains(err.Error(), out+".tmp") || !strings.Contains(err.Error(), "another backup") {
		t.Errorf("backup beside a live one: %v, want store.ErrBusy naming %s.tmp", err, out)
	}
	for name, want := range map[string]string{out: "precious", out + ".tmp": "other"} {
		if b, err := os.ReadFile(name); err != nil || string(b) != want {
			t.Errorf("%s holds %q, %v; want it untouched", name, b, err)
		}
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	if !haveFlock() {
		// Without flock the leftover is refused until removed by hand.
		if err := os.Remove(out + ".tmp"); err != nil {
			t.Fatal(err)
		}
	}

	if _, err := runAdmin(t, "backup", "--url", srv.URL+"/", "--out", out, "--force"); err != nil {
		t.Fatalf("backup --force: %v", err)
	}
	if _, err := os.Stat(out + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s.tmp: %v, want it gone", out, err)
	}
	srv.stop(t)
	if got := storedEvents(t, testkit.OpenAt(t, out, store.Options{}), "s"); len(got) != 1 || got[0].ID != id {
		t.Errorf("the replaced file holds %v, want the event %s", got, id)
	}
}

func TestBackupCommandLine(t *testing.T) {
	// Not parallel: it sets the environment.
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/backup" || r.Header.Get("Authorization") != "Bearer s3cret" {
			http.Error(w, "unexpected "+r.URL.Path+" "+r.Header.Get("Authorization"), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTeapot)
		w.Write([]byte(`{"error":"reached through the environment"}`))
	}))
	defer ts.Close()
	dir := t.TempDir()
	out := filepath.Join(dir, "x.db")
	t.Setenv("SSELOG_URL", ts.URL)
	t.Setenv("SSELOG_TOKEN", "s3cret")
	// One-off flags are never taken from the environment.
	t.Setenv("SSELOG_OUT", out)
	t.Setenv("SSELOG_FORCE", "true")

	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "no --out", args: nil, wantErr: "--out is required"},
		{name: "url and token from the environment", args: []string{"--out", out}, wantErr: "reached through the environment"},
		{name: "bad url", args: []string{"--out", out, "--url", "127.0.0.1:8080"}, wantErr: `--url "127.0.0.1:8080"`},
		{name: "stray argument", args: []string{"--out", out, "now"}, wantErr: `unexpected argument "now"`},
		{name: "help", args: []string{"-h"}, wantErr: "help requested"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := runAdmin(t, append([]string{"backup"}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	requireEmptyDir(t, dir)
}

// TestBackupKilled: a real `sselog backup` killed with SIGKILL mid-download
// leaves its temporary file, locked until it dies. While it lives, a
// second backup to the same --out is refused and changes nothing; once it
// is dead, the next backup replaces the leftover and succeeds. (A killed
// backup used to block every later one until someone removed the file.)
func TestBackupKilled(t *testing.T) {
	requireFlock(t)
	t.Parallel()
	db := newDatabaseBytes(t)
	var requests atomic.Int32
	// The first answer stops halfway until its client goes away; the
	// others are whole.
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(db)))
		if requests.Add(1) > 1 {
			w.Write(db)
			return
		}
		w.Write(db[:len(db)/2])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(ts.Close)
	dir := t.TempDir()
	out := filepath.Join(dir, "copy.db")
	tmp := out + ".tmp"

	c := startChild(t, "backup", "--url", ts.URL, "--out", out)
	deadline := time.Now().Add(startTimeout)
	for {
		if st, err := os.Stat(tmp); err == nil && st.Size() == int64(len(db)/2) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never held the first half\nstderr:\n%s", tmp, c.stderr)
		}
		select {
		case <-c.exited:
			t.Fatalf("the backup ended (%v) before it held the first half\nstderr:\n%s", c.err, c.stderr)
		case <-time.After(time.Millisecond):
		}
	}
	half, err := os.ReadFile(tmp)
	if err != nil {
		t.Fatal(err)
	}

	_, err = runAdmin(t, "backup", "--url", ts.URL, "--out", out)
	if !errors.Is(err, store.ErrBusy) || !strings.Contains(err.Error(), tmp) || !strings.Contains(err.Error(), "another backup to "+out+" is running") {
		t.Fatalf("backup beside a live one: %v, want store.ErrBusy naming %s", err, tmp)
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("the refused backup asked the server for a copy (%d requests)", n)
	}
	if b, err := os.ReadFile(tmp); err != nil || !bytes.Equal(b, half) {
		t.Fatalf("the refused backup changed the live one's file: %v", err)
	}

	killChild(t, c)
	if _, err := os.Stat(tmp); err != nil {
		t.Fatalf("the killed backup left no %s (%v): it was not killed mid-download", tmp, err)
	}
	if _, err := os.Lstat(out); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s: %v after the kill, want no file", out, err)
	}

	stdout, err := runAdmin(t, "backup", "--url", ts.URL, "--out", out)
	if err != nil {
		t.Fatalf("backup after a killed one: %v", err)
	}
	t.Logf("%s", strings.TrimSpace(stdout))
	if b, err := os.ReadFile(out); err != nil || !bytes.Equal(b, db) {
		t.Fatalf("%s does not hold the server's copy: %v", out, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Errorf("directory holds %v, %v; want %s alone", entries, err, filepath.Base(out))
	}
}
