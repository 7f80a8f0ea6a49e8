package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

const zeroID = "00000000000000000000000000"

func TestServeEndToEnd(t *testing.T) {
	t.Parallel()
	// The parents do not exist: serve must create them.
	db := filepath.Join(t.TempDir(), "sub", "dir", "x.db")
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", db, "--retry", "250ms")
	url := srv.eventsURL("orders")

	resp, err := httpClient.Get(srv.URL + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()

	id1 := publishOne(t, url, "created", `{"sku": "a-1", "qty": 2}`)
	batch := publishBatch(t, url, `[1, 2, 3]`, `"two\nlines"`)
	want := []sseEvent{
		{ID: id1, Type: "created", Data: `{"sku":"a-1","qty":2}`},
		{ID: batch[0], Data: `[1,2,3]`},
		{ID: batch[1], Data: `"two\nlines"`},
	}
	for i := 1; i < len(want); i++ {
		if want[i].ID <= want[i-1].ID {
			t.Fatalf("ids not increasing: %s then %s", want[i-1].ID, want[i].ID)
		}
	}

	sub := subscribe(t, url, zeroID)
	if d := diffEvents(sub.waitFor(t, len(want)), want); d != "" {
		t.Fatalf("replay: %s", d)
	}
	sub.mu.Lock()
	retry := sub.retry
	sub.mu.Unlock()
	if retry != "250" {
		t.Errorf("retry hint %q, want 250 (from --retry 250ms)", retry)
	}
	// Live after replay, on the same stream.
	want = append(want, sseEvent{ID: publishOne(t, url, "shipped", `{"sku":"a-1"}`), Type: "shipped", Data: `{"sku":"a-1"}`})
	if d := diffEvents(sub.waitFor(t, len(want)), want); d != "" {
		t.Fatalf("live: %s", d)
	}

	srv.stop(t)
	got, err := sub.waitEnd(t)
	if !errors.Is(err, io.EOF) {
		t.Errorf("stream ended with %v, want a clean end (EOF)", err)
	}
	if d := diffEvents(got, want); d != "" {
		t.Errorf("after stop: %s", d)
	}

	l := testkit.OpenAt(t, db, store.Options{})
	if d := diffEvents(storedEvents(t, l, "orders"), want); d != "" {
		t.Errorf("stored: %s", d)
	}
}

func TestServeReplayAcrossRestart(t *testing.T) {
	t.Parallel()
	const n, k = 20, 7
	db := filepath.Join(t.TempDir(), "x.db")

	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", db)
	url := srv.eventsURL("s")
	var old []sseEvent
	for i := 1; i <= n; i++ {
		data := fmt.Sprintf(`{"n":%d}`, i)
		old = append(old, sseEvent{ID: publishOne(t, url, "", data), Data: data})
	}
	srv.stop(t)

	srv = startServer(t, "--addr", "127.0.0.1:0", "--db", db)
	url = srv.eventsURL("s")
	// Resume from event k: exactly k+1..n come back from disk.
	sub := subscribe(t, url, old[k-1].ID)
	want := append([]sseEvent(nil), old[k:]...)
	if d := diffEvents(sub.waitFor(t, len(want)), want); d != "" {
		t.Fatalf("replay after restart: %s", d)
	}
	// Then live: the next event seen must be the first new one, which
	// also shows nothing else was replayed.
	newIDs := publishBatch(t, url, `"a"`, `"b"`)
	newIDs = append(newIDs, publishOne(t, url, "", `"c"`))
	for i, id := range newIDs {
		if id <= old[n-1].ID {
			t.Errorf("new id %s is not greater than the last id before restart %s", id, old[n-1].ID)
		}
		want = append(want, sseEvent{ID: id, Data: fmt.Sprintf(`"%c"`, 'a'+i)})
	}
	if d := diffEvents(sub.waitFor(t, len(want)), want); d != "" {
		t.Fatalf("live after restart: %s", d)
	}
	srv.stop(t)
	if got, _ := sub.waitEnd(t); len(got) != len(want) {
		t.Errorf("stream has %d events at its end, want %d", len(got), len(want))
	}
}

func TestServeShutdownWithSubscriberAndPublishes(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "x.db")
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", db)
	url := srv.eventsURL("busy")
	sub := subscribe(t, url, zeroID)

	// Publishers run until the server stops answering, so some of them are
	// in flight when it shuts down. Only a 201 counts as acknowledged.
	const publishers = 4
	var (
		mu    sync.Mutex
		acked = map[string]bool{}
		ends  []error
		wg    sync.WaitGroup
	)
	quit := make(chan struct{})
	defer func() { close(quit); wg.Wait() }()
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-quit:
					return
				default:
				}
				status, out, err := post(url, fmt.Sprintf(`{"type":"p%d","data":{"i":%d}}`, p, i))
				if err == nil && status != http.StatusCreated {
					err = fmt.Errorf("status %d: %v", status, out)
				}
				mu.Lock()
				if err != nil {
					ends = append(ends, err)
					mu.Unlock()
					return
				}
				acked[strings.Trim(string(out["id"]), `"`)] = true
				mu.Unlock()
			}
		}()
	}

	// A live subscriber that has seen events is following when shutdown
	// begins.
	sub.waitFor(t, 50)
	srv.stop(t)
	got, err := sub.waitEnd(t)
	if !errors.Is(err, io.EOF) {
		t.Errorf("stream ended with %v, want a clean end (EOF)", err)
	}
	// Every publisher must now fail: the server is gone.
	waitDone := make(chan struct{})
	go func() { wg.Wait(); close(waitDone) }()
	select {
	case <-waitDone:
	case <-time.After(eventTimeout):
		t.Fatal("publishers still succeeding after the server stopped")
	}

	l := testkit.OpenAt(t, db, store.Options{})
	stored := storedEvents(t, l, "busy")
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d acknowledged, %d stored, %d streamed; publishers ended with %v", len(acked), len(stored), len(got), ends)
	ids := make(map[string]bool, len(stored))
	for _, e := range stored {
		ids[e.ID] = true
	}
	for id := range acked {
		if !ids[id] {
			t.Errorf("acknowledged event %s is not in the database", id)
		}
	}
	// What the subscriber saw is the log's beginning: no gap, no
	// duplicate, no reordering.
	if len(got) > len(stored) {
		t.Fatalf("streamed %d events, only %d stored", len(got), len(stored))
	}
	if d := diffEvents(got, stored[:len(got)]); d != "" {
		t.Errorf("streamed events are not a prefix of the log: %s", d)
	}
}

func TestServeDatabaseInUse(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "x.db")
	first := startServer(t, "--addr", "127.0.0.1:0", "--db", db)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	var stdout, stderr strings.Builder
	err := run(ctx, []string{"serve", "--addr", "127.0.0.1:0", "--db", db}, &stdout, &stderr)
	elapsed := time.Since(start)
	if err == nil || !errors.Is(err, store.ErrLocked) || !strings.Contains(err.Error(), "in use") || !strings.Contains(err.Error(), db) {
		t.Errorf("second run = %v, want an error naming %s and saying it is in use", err, db)
	}
	if elapsed > 3*time.Second {
		t.Errorf("second run took %v to fail, want about store.DefaultOpenTimeout", elapsed)
	}
	if strings.Contains(stdout.String(), "serving") {
		t.Errorf("second run claimed to serve: %q", stdout.String())
	}
	// The failed attempt must leave the first server working.
	publishOne(t, first.eventsURL("s"), "", `1`)
	first.stop(t)
}

func TestServeEnvironment(t *testing.T) {
	// Configured only by environment; t.Setenv also keeps this test from
	// running beside the parallel ones.
	db := filepath.Join(t.TempDir(), "env", "x.db")
	t.Setenv("SSELOG_ADDR", "127.0.0.1:0")
	t.Setenv("SSELOG_DB", db)
	t.Setenv("SSELOG_MAX_BODY", "1KiB")
	t.Setenv("SSELOG_LOG_FORMAT", "json")
	srv := startServer(t)
	url := srv.eventsURL("s")

	big := fmt.Sprintf(`{"data":%q}`, strings.Repeat("x", 1100))
	if status, out, err := post(url, big); err != nil || status != http.StatusRequestEntityTooLarge {
		t.Errorf("1100-byte publish with SSELOG_MAX_BODY=1KiB: status %d, %v, %v; want 413", status, out, err)
	}
	small := fmt.Sprintf(`{"data":%q}`, strings.Repeat("x", 1000))
	if status, out, err := post(url, small); err != nil || status != http.StatusCreated {
		t.Errorf("1008-byte publish: status %d, %v, %v; want 201", status, out, err)
	}
	if logs := srv.stderr.String(); !strings.HasPrefix(logs, `{"time":`) {
		t.Errorf("SSELOG_LOG_FORMAT=json, but the log starts %q", logs[:min(len(logs), 60)])
	}
	srv.stop(t)
	if _, err := os.Stat(db); err != nil {
		t.Errorf("SSELOG_DB not used: %v", err)
	}
}
