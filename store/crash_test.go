package store_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

// crashEnv names the database a TestCrashChild process appends to; its
// absence means an ordinary test run.
const crashEnv = "SSELOG_CRASH_DB"

var crashStreams = []string{"s0", "s1", "s2"}

// ack is one id a crash child reported as acknowledged.
type ack struct {
	stream string
	id     store.ID
}

// TestCrash kills a child process that appends as fast as it can, with
// SIGKILL at an arbitrary moment, and checks that everything the child was
// told is durable survived, in order, under one id space that keeps
// increasing through the restart. It repeats on the same file, so each round
// also recovers from the previous crash.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes; skipped in -short mode")
	}
	const (
		rounds   = 5
		target   = 2000 // acks to see before killing
		deadline = 10 * time.Second
	)
	path := filepath.Join(t.TempDir(), "crash.db")
	acked := map[string]map[store.ID]bool{}
	for _, s := range crashStreams {
		acked[s] = map[store.ID]bool{}
	}
	var floor store.ID // everything acked in a later round must exceed it

	for round := range rounds {
		acks := runCrashChild(t, path, target, deadline)
		t.Logf("round %d: child acknowledged %d events before SIGKILL", round, len(acks))
		for _, a := range acks {
			if a.id.Compare(floor) <= 0 {
				t.Fatalf("round %d: acked id %s in %s not after %s, the newest id before the child started", round, a.id, a.stream, floor)
			}
			if acked[a.stream] == nil {
				t.Fatalf("round %d: child acked unknown stream %q", round, a.stream)
			}
			acked[a.stream][a.id] = true
		}

		l := testkit.OpenAt(t, path, store.Options{})
		newest := checkRecovered(t, l, acked)
		got := mustAppend(t, l, crashStreams[round%len(crashStreams)], makeEvents("after-crash", 1, round)...)
		if got[0].Compare(newest) <= 0 {
			t.Fatalf("round %d: first id after recovery %s not after %s", round, got[0], newest)
		}
		acked[crashStreams[round%len(crashStreams)]][got[0]] = true
		floor = got[0]
		mustClose(t, l)
	}
}

// checkRecovered verifies a reopened log against everything acknowledged so
// far and returns the newest stored id.
func checkRecovered(tb testing.TB, l *store.Log, acked map[string]map[store.ID]bool) store.ID {
	tb.Helper()
	infos, err := l.Streams()
	if err != nil {
		tb.Fatal(err)
	}
	counts := map[string]uint64{}
	for _, in := range infos {
		counts[in.Name] = in.Count
	}
	var newest store.ID
	for _, s := range crashStreams {
		evs := readAll(tb, l, s)
		checkIncreasing(tb, "recovered stream "+s, idsOf(evs))
		stored := make(map[store.ID]bool, len(evs))
		for _, e := range evs {
			stored[e.ID] = true
			if !json.Valid(e.Data) {
				tb.Fatalf("stream %s id %s: data %q is not the JSON written", s, e.ID, e.Data)
			}
		}
		for id := range acked[s] {
			if !stored[id] {
				tb.Fatalf("stream %s: acknowledged id %s lost in the crash (%d stored)", s, id, len(evs))
			}
			if id.Compare(l.LastID()) > 0 {
				tb.Fatalf("stream %s: acknowledged id %s after the recovered LastID %s", s, id, l.LastID())
			}
		}
		// The counters commit in the same transaction as the events.
		if counts[s] != uint64(len(evs)) {
			tb.Fatalf("stream %s: counter says %d events, %d stored", s, counts[s], len(evs))
		}
		if len(evs) > 0 {
			newest = maxID(newest, evs[len(evs)-1].ID)
		}
	}
	// The newest id is persisted with the events, so it cannot be behind or
	// ahead of what is stored.
	if l.LastID() != newest {
		tb.Fatalf("recovered LastID %s, newest stored id %s", l.LastID(), newest)
	}
	return newest
}

// runCrashChild runs TestCrashChild against path, kills it once it has
// acknowledged target events or deadline passes, and returns its acks.
func runCrashChild(t *testing.T, path string, target int, deadline time.Duration) []ack {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	var (
		mu      sync.Mutex
		acks    []ack
		readErr error
	)
	reached, eof := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(eof)
		r := bufio.NewReader(stdout)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				// A fragment without its newline was never fully written;
				// pipe writes this small are atomic, so expect none.
				if err != io.EOF || line != "" {
					mu.Lock()
					readErr = fmt.Errorf("reading child output: %v (fragment %q)", err, line)
					mu.Unlock()
				}
				return
			}
			a, err := parseAck(line)
			mu.Lock()
			if err != nil && readErr == nil {
				readErr = err
			}
			acks = append(acks, a)
			n := len(acks)
			mu.Unlock()
			if n == target {
				close(reached)
			}
		}
	}()

	select {
	case <-reached:
	case <-eof:
		cmd.Wait()
		t.Fatalf("crash child exited on its own: %v\nstderr:\n%s", cmd.ProcessState, stderr.String())
	case <-time.After(deadline):
		t.Logf("deadline: killing the child before %d acks", target)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-eof // everything the child wrote before dying is still in the pipe
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("crash child ended with %v, want SIGKILL\nstderr:\n%s", err, stderr.String())
	}

	mu.Lock()
	defer mu.Unlock()
	if readErr != nil {
		t.Fatalf("%v\nstderr:\n%s", readErr, stderr.String())
	}
	if len(acks) == 0 {
		t.Fatalf("crash child acknowledged nothing\nstderr:\n%s", stderr.String())
	}
	return acks
}

func parseAck(line string) (ack, error) {
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "ack" {
		return ack{}, fmt.Errorf("unexpected child output %q", line)
	}
	id, err := store.ParseID(f[2])
	if err != nil {
		return ack{}, fmt.Errorf("child output %q: %w", line, err)
	}
	return ack{stream: f[1], id: id}, nil
}

// TestCrashChild is the process TestCrash kills. It appends from many
// goroutines and reports each id on stdout only after Append returned nil,
// so every reported id is one the log promised to keep.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashEnv)
	if path == "" {
		t.Skip("helper process for TestCrash")
	}
	l, err := store.Open(path, store.Options{OpenTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// The parent kills us long before this; the bound only keeps an orphan
	// from running forever (a dead parent also ends us with SIGPIPE).
	stop := time.Now().Add(time.Minute)
	var (
		outMu sync.Mutex
		wg    sync.WaitGroup
	)
	for g := range 16 {
		wg.Go(func() {
			var line []byte
			for i := 0; time.Now().Before(stop); i++ {
				s := crashStreams[(g+i)%len(crashStreams)]
				n := 1
				if i%2 == 1 {
					n = 2 + (g+i)%3
				}
				got, err := l.Append(t.Context(), s, makeEvents(fmt.Sprintf("g%d", g), n, i))
				if err != nil {
					t.Errorf("append: %v", err)
					return
				}
				line = line[:0]
				for _, id := range got {
					line = fmt.Appendf(line, "ack %s %s\n", s, id)
				}
				// One unbuffered write per Append: the lines reach the pipe
				// whole, and only after the acknowledgement.
				outMu.Lock()
				_, err = os.Stdout.Write(line)
				outMu.Unlock()
				if err != nil {
					t.Errorf("report: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
		t.Error(err)
	}
}
