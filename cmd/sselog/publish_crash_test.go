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
	"syscall"
	"testing"
	"time"

	"github.com/sselog/sselog/client"
	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

// countingTransport counts the attempts that got no answer (the server
// was killed under them, or was not there) and the answers that were
// replays of an earlier attempt's (Idempotent-Replayed).
type countingTransport struct {
	base     http.RoundTripper
	failed   atomic.Int64
	replayed atomic.Int64
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(req)
	if err != nil {
		c.failed.Add(1)
	} else if resp.Header.Get("Idempotent-Replayed") == "true" {
		c.replayed.Add(1)
	}
	return resp, err
}

// TestPublishAcrossServerKills: four publishers put 5,000 events, each
// with its own sequence number, through package client, while the server
// (a child process, on the same address and database every time) is
// killed with SIGKILL and started again, five times. Every publish
// returns ids; afterwards the database holds every sequence number
// exactly once, under the ids its publish returned. The retries of
// attempts cut by a kill are what would store a batch twice without the
// server's idempotency keys; the test counts them, and requires some.
func TestPublishAcrossServerKills(t *testing.T) {
	t.Parallel()
	const (
		total   = 5000
		workers = 4
		batch   = 5
		kills   = 5
	)
	addr := freeAddr(t)
	db := filepath.Join(t.TempDir(), "x.db")
	args := []string{"serve", "--addr", addr, "--db", db}
	srv := startChild(t, args...)
	waitServing(t, srv.stdout, srv.stderr, srv.exited, func() error { return srv.err })

	tr := &countingTransport{base: &http.Transport{MaxIdleConnsPerHost: workers}}
	cl, err := client.New("http://"+addr, client.WithHTTPClient(&http.Client{Transport: tr}), client.WithBackoff(5*time.Millisecond, 100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var (
		acked    atomic.Int64
		mu       sync.Mutex
		idOf     = make(map[int]string, total) // sequence number → id returned
		failures []error
		wg       sync.WaitGroup
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Worker w publishes the sequence numbers w, w+workers, ...
			var seqs []int
			for s := w; s < total; s += workers {
				seqs = append(seqs, s)
			}
			for len(seqs) > 0 {
				n := min(batch, len(seqs))
				events := make([]client.Event, n)
				for i, s := range seqs[:n] {
					events[i] = client.Event{Type: "seq", Data: json.RawMessage(fmt.Sprintf(`{"seq":%d}`, s))}
				}
				ids, err := cl.Publish(ctx, "seq", events...)
				mu.Lock()
				if err != nil {
					failures = append(failures, err)
					mu.Unlock()
					return
				}
				for i, s := range seqs[:n] {
					idOf[s] = ids[i]
				}
				mu.Unlock()
				acked.Add(int64(n))
				seqs = seqs[n:]
			}
		}()
	}

	for k := range kills {
		target := int64((k + 1) * total / (kills + 2))
		testkit.WaitFor(t, fmt.Sprintf("%d events acknowledged", target), func() bool { return acked.Load() >= target })
		if err := srv.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		srv.wait(t, stopTimeout)
		srv = startChild(t, args...)
		waitServing(t, srv.stdout, srv.stderr, srv.exited, func() error { return srv.err })
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("publish failed: %v", failures)
	}
	srv.cmd.Process.Kill()
	srv.wait(t, stopTimeout)

	stored := storedEvents(t, testkit.OpenAt(t, db, store.Options{}), "seq")
	seen := make(map[int]int, total)
	for _, e := range stored {
		var d struct{ Seq int }
		if err := json.Unmarshal([]byte(e.Data), &d); err != nil {
			t.Fatalf("event %s: %v", e.ID, err)
		}
		seen[d.Seq]++
		if seen[d.Seq] == 1 && idOf[d.Seq] != e.ID {
			t.Errorf("sequence %d is stored as %s; its publish returned %s", d.Seq, e.ID, idOf[d.Seq])
		}
	}
	var dup, missing []string
	for s := range total {
		switch seen[s] {
		case 1:
		case 0:
			missing = append(missing, fmt.Sprint(s))
		default:
			dup = append(dup, fmt.Sprintf("%d×%d", s, seen[s]))
		}
	}
	if len(missing) > 0 || len(dup) > 0 || len(stored) != total {
		t.Errorf("%d events stored for %d sequence numbers; missing %s; duplicated %s", len(stored), total, strings.Join(missing, " "), strings.Join(dup, " "))
	}
	t.Logf("%d kills: %d attempts got no answer and were retried; %d retries were answered as replays", kills, tr.failed.Load(), tr.replayed.Load())
	if tr.failed.Load() == 0 {
		t.Errorf("no attempt was cut by a kill: the test proved nothing")
	}
}

// TestPublishSignalWhileWaiting: sselog publish, as its own process, fed
// by a pipe that stays open, ends promptly on SIGTERM or SIGINT while it
// waits for the next line: exit status not 0, the id of what was stored
// on stdout, and on stderr what happened. Before, it sat in its read of
// stdin until the pipe closed, whatever the signals said.
func TestPublishSignalWhileWaiting(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "x.db"))
	for _, sig := range []os.Signal{syscall.SIGTERM, os.Interrupt} {
		t.Run(sig.String(), func(t *testing.T) {
			stream := strings.ReplaceAll(sig.String(), " ", "-")
			c, stdin := startHelperPiped(t, "TestHelperServe", nil, true, "publish", "--url", srv.URL, "--stream", stream)
			defer stdin.Close()
			if _, err := io.WriteString(stdin, "1\n"); err != nil {
				t.Fatal(err)
			}
			waitOutput(t, c.stdout, 1) // stored; the child waits for line 2
			start := time.Now()
			if err := c.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			err := c.wait(t, stopTimeout)
			t.Logf("exited %v after the signal: %v", time.Since(start).Round(time.Millisecond), err)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() <= 0 {
				t.Errorf("exit %v, want a non-zero status", err)
			}
			if s := c.stderr.String(); !strings.Contains(s, "interrupted while waiting for line 2") || !strings.Contains(s, "signal") {
				t.Errorf("stderr %q does not say it was interrupted by a signal, waiting for line 2", s)
			}
			if ids, stored := strings.Fields(c.stdout.String()), storedOver(t, srv.URL, stream); len(ids) != 1 || len(stored) != 1 || stored[0].ID != ids[0] {
				t.Errorf("printed %v, stored %v; want the first line alone", ids, stored)
			}
		})
	}
}
