package main

import (
	"bufio"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sselog/sselog/internal/testkit"
)

// TestShutdownWithStalledSubscriber: a subscriber that never reads holds
// its stream in a blocked write. SIGTERM still ends the process within the
// shutdown timeout (8 s by default, under the 10 s a supervisor such as
// Docker gives before SIGKILL), the stalled stream cut at the budget.
// Before, every such stop took the old fixed 10 s plus the close: 10.007
// to 10.016 s.
func TestShutdownWithStalledSubscriber(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		args    []string
		timeout time.Duration
	}{
		{"default", nil, defaultShutdownTimeout},
		{"--shutdown-timeout 3s", []string{"--shutdown-timeout", "3s"}, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			stopStalled(t, tc.args, tc.timeout)
		})
	}
}

// stopStalled runs a server with a stalled subscriber, stops it with
// SIGTERM and checks it exits within timeout, having waited for the
// stalled stream until then.
func stopStalled(t *testing.T, args []string, timeout time.Duration) {
	db := filepath.Join(t.TempDir(), "x.db")
	c := startChild(t, append([]string{"serve", "--addr", "127.0.0.1:0", "--db", db}, args...)...)
	base := waitServing(t, c.stdout, c.stderr, c.exited, func() error { return c.err })
	addr := strings.TrimPrefix(base, "http://")

	// A subscriber with a small receive window that reads its answer's
	// head and then nothing.
	conn, err := testkit.SmallBufferDialer().Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /v1/streams/s/events HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(eventTimeout))
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 16), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("subscribe: %v %v", resp, err)
	}
	// More than the socket buffers on both sides hold: the server's write
	// to this subscriber blocks.
	pad := `"` + strings.Repeat("x", 900<<10) + `"`
	for range 24 {
		publishOne(t, base+"/v1/streams/s/events", "", pad)
	}

	start := time.Now()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := c.wait(t, stopTimeout); err != nil {
		t.Fatalf("after SIGTERM the child exited with %v, want status 0", err)
	}
	took := time.Since(start)
	t.Logf("exited %v after SIGTERM with a stalled subscriber", took.Round(time.Millisecond))
	if took >= timeout {
		t.Errorf("exit took %v, want under the %v shutdown timeout", took, timeout)
	}
	// The stall was real: the process waited for the stream until the
	// budget, less what is kept for closing.
	if took < timeout-2*closeReserve {
		t.Errorf("exit took %v: the subscriber was not stalled, or was cut before the budget", took)
	}
	if !strings.Contains(c.stderr.String(), "cut off at the shutdown limit") {
		t.Errorf("the log does not say a stream was cut:\n%s", c.stderr)
	}
}
