package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/jetstream"
	"github.com/sselog/sselog/retention"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// The guarantees are the API's, whichever backend holds the log: the tests
// below run on each, from one table. A jetstream backend here is one
// embedded NATS node with a one-replica stream; the cluster's own failure
// tests are in the jetstream package and cmd/sselog.

// testBackend opens a log kept in dir, reopening what an earlier open
// left there. Closing it (closeLog) releases everything, so that the next
// open is a restart; the test's cleanup closes what is left open.
type testBackend struct {
	name string
	open func(tb testing.TB, dir string) (l testLog, closeLog func())
}

var testBackends = []testBackend{
	{name: "bbolt", open: openBbolt},
	{name: "jetstream", open: openJetStream},
}

func openBbolt(tb testing.TB, dir string) (testLog, func()) {
	tb.Helper()
	l := testkit.OpenAt(tb, filepath.Join(dir, "events.db"), store.Options{})
	return l, func() {
		if err := l.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			tb.Errorf("close: %v", err)
		}
	}
}

func openJetStream(tb testing.TB, dir string) (testLog, func()) {
	tb.Helper()
	srv, err := jetstream.StartServer(jetstream.ServerConfig{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		tb.Fatal(err)
	}
	nc, err := nats.Connect("", nats.InProcessServer(srv.NATS()))
	if err != nil {
		srv.Shutdown()
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Wait)
	defer cancel()
	l, err := jetstream.Open(ctx, jetstream.Options{Conn: nc, Replica: filepath.Join(dir, "replica.db"), Replicas: 1})
	if err != nil {
		nc.Close()
		srv.Shutdown()
		tb.Fatal(err)
	}
	closed := false
	closeLog := func() {
		if closed {
			return
		}
		closed = true
		if err := l.Close(); err != nil {
			tb.Errorf("close: %v", err)
		}
		nc.Close()
		srv.Shutdown()
	}
	tb.Cleanup(closeLog)
	return l, closeLog
}

// forBackends runs test once per backend.
func forBackends(t *testing.T, test func(t *testing.T, b testBackend)) {
	for _, b := range testBackends {
		t.Run(b.name, func(t *testing.T) { test(t, b) })
	}
}

// readBlocks reads SSE blocks from c until it has n events (resets
// included), skipping the retry hint and comments.
func readBlocks(t *testing.T, c *testkit.SSEReader, n int) []testkit.SSEEvent {
	t.Helper()
	var out []testkit.SSEEvent
	for len(out) < n {
		b, err := c.Next()
		if err != nil {
			t.Fatalf("after %d events: %v", len(out), err)
		}
		if !b.HasData {
			continue
		}
		e, err := b.Event()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// TestBackendRestart: events acknowledged before a restart are replayed
// after it, exactly, to a client resuming from the middle; ids issued
// after the restart are above every earlier one.
func TestBackendRestart(t *testing.T) {
	forBackends(t, func(t *testing.T, b testBackend) {
		dir := t.TempDir()
		l, closeLog := b.open(t, dir)
		s := newServerOn(t, l, httpapi.Options{}, stream.Options{})
		var ids []store.ID
		for i := range 10 {
			ids = append(ids, s.mustPublish(t, "r", fmt.Sprintf(`[{"data":%d},{"type":"t","data":"x%d"}]`, i, i))...)
		}
		s.Close()
		closeLog()

		l, _ = b.open(t, dir)
		s = newServerOn(t, l, httpapi.Options{}, stream.Options{})
		if l.LastID() != ids[len(ids)-1] {
			t.Fatalf("reopened with last id %s, want %s", l.LastID(), ids[len(ids)-1])
		}
		c := s.dial(t, "/v1/streams/r/events", ids[6].String())
		got := readBlocks(t, c, len(ids)-7)
		for i, e := range got {
			if e.ID != ids[7+i].String() || e.Type == store.ResetType {
				t.Fatalf("event %d after the restart: %+v, want id %s", i, e, ids[7+i])
			}
		}
		next := s.mustPublish(t, "r", `{"data":"after"}`)
		if next[0].Compare(ids[len(ids)-1]) <= 0 {
			t.Fatalf("id after the restart %s is not above %s", next[0], ids[len(ids)-1])
		}
		if e := readBlocks(t, c, 1)[0]; e.ID != next[0].String() || e.Data != `"after"` {
			t.Fatalf("live event after the restart: %+v", e)
		}
	})
}

// TestBackendResets: a client resuming from removed history is told, with
// the reason, and never silently skips: a trim by the retention worker, a
// deletion, and an id the log never issued.
func TestBackendResets(t *testing.T) {
	forBackends(t, func(t *testing.T, b testBackend) {
		l, _ := b.open(t, t.TempDir())
		s := newServerOn(t, l, httpapi.Options{}, stream.Options{})
		var ids []store.ID
		for i := range 20 {
			ids = append(ids, s.mustPublish(t, "trim", fmt.Sprintf(`{"data":%d}`, i))...)
		}
		w := retention.New(l, retention.Options{Defaults: store.Limits{MaxEvents: 5}})
		st, err := w.RunOnce(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if st.Trimmed != 15 {
			t.Fatalf("trimmed %d, want 15", st.Trimmed)
		}
		// Resuming from the first id: a reset at the low-water mark, then
		// the five retained events.
		c := s.dial(t, "/v1/streams/trim/events", ids[0].String())
		got := readBlocks(t, c, 6)
		if got[0].Type != store.ResetType || got[0].ID != ids[14].String() || !strings.Contains(got[0].Data, `"trimmed"`) || !strings.Contains(got[0].Data, ids[15].String()) {
			t.Fatalf("first block %+v, want a trimmed reset at %s naming %s", got[0], ids[14], ids[15])
		}
		for i, e := range got[1:] {
			if e.ID != ids[15+i].String() {
				t.Fatalf("after the reset %d: %s, want %s", i, e.ID, ids[15+i])
			}
		}
		var h struct {
			Events []json.RawMessage `json:"events"`
			Gap    bool              `json:"gap"`
		}
		s.getJSON(t, "/v1/streams/trim/history?after="+ids[0].String(), &h)
		if !h.Gap || len(h.Events) != 5 {
			t.Fatalf("history after a trimmed id: gap %v, %d events", h.Gap, len(h.Events))
		}

		// A deletion ends a subscriber's stream with a reset that says so.
		del := s.mustPublish(t, "gone", `[{"data":1},{"data":2}]`)
		c = s.dial(t, "/v1/streams/gone/events", del[0].String())
		if e := readBlocks(t, c, 1)[0]; e.ID != del[1].String() {
			t.Fatalf("before the deletion: %+v", e)
		}
		status, _, body, err := s.do(http.MethodDelete, "/v1/streams/gone", "", "", nil)
		if err != nil || status != http.StatusOK {
			t.Fatalf("delete: %d %s %v", status, body, err)
		}
		if e := readBlocks(t, c, 1)[0]; e.Type != store.ResetType || !strings.Contains(e.Data, `"deleted"`) {
			t.Fatalf("after the deletion: %+v", e)
		}
		c2 := s.dial(t, "/v1/streams/gone/events", del[0].String())
		if e := readBlocks(t, c2, 1)[0]; e.Type != store.ResetType || !strings.Contains(e.Data, `"deleted"`) || e.ID != del[1].String() {
			t.Fatalf("resuming into a deleted stream: %+v", e)
		}

		// An id from the future: never issued here.
		future := store.MinIDAt(time.Now().Add(time.Hour))
		c3 := s.dial(t, "/v1/streams/trim/events", future.String())
		if e := readBlocks(t, c3, 1)[0]; e.Type != store.ResetType || !strings.Contains(e.Data, `"unknown"`) || e.ID != l.LastID().String() {
			t.Fatalf("resuming from a future id: %+v (last %s)", e, l.LastID())
		}
	})
}

// TestJetStreamForeignID: a cluster's ids name their log, so an id from a
// standalone database (or another cluster) gets the unknown reset even
// when it sorts below the cluster's newest id.
func TestJetStreamForeignID(t *testing.T) {
	other := testkit.Open(t)
	foreign, err := other.Append(t.Context(), "f", []store.Event{{Data: []byte("0")}})
	if err != nil {
		t.Fatal(err)
	}
	l, _ := openJetStream(t, t.TempDir())
	s := newServerOn(t, l, httpapi.Options{}, stream.Options{})
	ids := s.mustPublish(t, "f", `[{"data":1},{"data":2}]`)
	if foreign[0].Compare(ids[1]) >= 0 {
		t.Fatalf("the standalone id %s sorts above the cluster's %s: the test needs one below", foreign[0], ids[1])
	}
	c := s.dial(t, "/v1/streams/f/events", foreign[0].String())
	if e := readBlocks(t, c, 1)[0]; e.Type != store.ResetType || !strings.Contains(e.Data, `"unknown"`) || e.ID != ids[1].String() {
		t.Fatalf("resuming from a standalone id: %+v", e)
	}
	m := s.dial(t, "/v1/events?stream=f", foreign[0].String())
	if e := readBlocks(t, m, 1)[0]; e.Type != store.ResetType || !strings.Contains(e.Data, `"unknown"`) || e.ID != ids[1].String() {
		t.Fatalf("resuming a merged feed from a standalone id: %+v", e)
	}
}

// TestBackendBadInput: what a client gets wrong is a 4xx that stores
// nothing, on every backend.
func TestBackendBadInput(t *testing.T) {
	forBackends(t, func(t *testing.T, b testBackend) {
		l, _ := b.open(t, t.TempDir())
		s := newServerOn(t, l, httpapi.Options{}, stream.Options{})
		for _, tc := range []struct {
			path, body string
			status     int
		}{
			{"/v1/streams/bad/events", `{"data":`, http.StatusBadRequest},
			{"/v1/streams/bad/events", `{"type":"reset","data":1}`, http.StatusBadRequest},
			{"/v1/streams/bad/events", `[]`, http.StatusBadRequest},
			{"/v1/streams/bad/events", `[{"data":1},{"nodata":1}]`, http.StatusBadRequest},
			{"/v1/streams/.bad/events", `{"data":1}`, http.StatusBadRequest},
		} {
			status, _, body, err := s.do(http.MethodPost, tc.path, "application/json", tc.body, nil)
			if err != nil || status != tc.status {
				t.Errorf("POST %s %s: %d %s %v, want %d", tc.path, tc.body, status, body, err, tc.status)
			}
		}
		if last := l.LastID(); !last.IsZero() {
			t.Fatalf("bad input stored something: last id %s", last)
		}
		status, _, _, _ := s.do(http.MethodGet, "/v1/streams/bad", "", "", nil)
		if status != http.StatusNotFound {
			t.Fatalf("stream after bad input: %d", status)
		}
	})
}

// TestBackendIdempotency: a repeated key stores once and answers the
// first ids; the same key for another request is 422.
func TestBackendIdempotency(t *testing.T) {
	forBackends(t, func(t *testing.T, b testBackend) {
		l, _ := b.open(t, t.TempDir())
		s := newServerOn(t, l, httpapi.Options{}, stream.Options{})
		key := http.Header{"Idempotency-Key": {"k-1"}}
		var first []byte
		for i := range 3 {
			status, _, body, err := s.do(http.MethodPost, "/v1/streams/i/events", "application/json", `[{"data":1},{"data":2}]`, key)
			if err != nil || status != http.StatusCreated {
				t.Fatalf("publish %d: %d %s %v", i, status, body, err)
			}
			if i == 0 {
				first = body
			} else if string(body) != string(first) {
				t.Fatalf("repeat %d answered %s, first %s", i, body, first)
			}
		}
		status, _, body, _ := s.do(http.MethodPost, "/v1/streams/i/events", "application/json", `[{"data":3}]`, key)
		if status != http.StatusUnprocessableEntity {
			t.Fatalf("same key, other body: %d %s", status, body)
		}
		if n := len(s.readAll(t, "i")); n != 2 {
			t.Fatalf("stream holds %d events, want 2", n)
		}
	})
}

// TestBackendMerged: one connection over two streams gets both in id
// order, from a resume point in the middle.
func TestBackendMerged(t *testing.T) {
	forBackends(t, func(t *testing.T, b testBackend) {
		l, _ := b.open(t, t.TempDir())
		s := newServerOn(t, l, httpapi.Options{}, stream.Options{})
		var ids []store.ID
		for i := range 6 {
			ids = append(ids, s.mustPublish(t, []string{"ma", "mb"}[i%2], fmt.Sprintf(`{"data":%d}`, i))...)
		}
		c := s.dial(t, "/v1/events?stream=ma&stream=mb", ids[1].String())
		got := readBlocks(t, c, 4)
		for i, e := range got {
			if e.ID != ids[2+i].String() || !strings.Contains(e.Data, fmt.Sprintf(`"data":%d`, 2+i)) {
				t.Fatalf("merged %d: %+v, want %s", i, e, ids[2+i])
			}
		}
	})
}

// TestBackendSince: a start by time reads from that time on every backend
// (a time bound is no id of the cluster's, and must not be taken for a
// foreign resume point).
func TestBackendSince(t *testing.T) {
	forBackends(t, func(t *testing.T, b testBackend) {
		l, _ := b.open(t, t.TempDir())
		s := newServerOn(t, l, httpapi.Options{}, stream.Options{})
		ids := s.mustPublish(t, "t", `[{"data":1},{"data":2}]`)
		var h struct {
			Events []struct {
				ID   store.ID        `json:"id"`
				Type string          `json:"type"`
				Data json.RawMessage `json:"data"`
				Time string          `json:"time"`
			} `json:"events"`
			Gap bool `json:"gap"`
		}
		s.getJSON(t, "/v1/streams/t/history?since=2020-01-01T00:00:00Z", &h)
		if len(h.Events) != 2 || h.Events[0].ID != ids[0] || h.Gap {
			t.Fatalf("history since 2020: %+v", h)
		}
		c := s.dial(t, "/v1/streams/t/events?since=2020-01-01T00:00:00Z", "")
		if got := readBlocks(t, c, 2); got[0].ID != ids[0].String() || got[1].ID != ids[1].String() {
			t.Fatalf("SSE since 2020: %+v", got)
		}
	})
}
