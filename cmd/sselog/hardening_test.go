package main

import (
	"bufio"
	"io"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeLimitRefusals: limits that cannot work, and a profiler offered
// to the network, stop the server before it touches the database.
func TestServeLimitRefusals(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"profiler on every interface", []string{"--pprof", "0.0.0.0:0"}, "not a loopback address"},
		{"profiler on an empty host", []string{"--pprof", ":0"}, "not a loopback address"},
		{"body memory below the largest body", []string{"--max-body", "2MiB", "--max-body-memory", "1MiB"}, "less than --max-body"},
		{"shutdown too short to close", []string{"--shutdown-timeout", "100ms"}, "--shutdown-timeout must be more than"},
		{"negative connections", []string{"--max-connections", "-1"}, "--max-connections must not be negative"},
		{"zero idle timeout", []string{"--idle-timeout", "0s"}, "--idle-timeout must be positive"},
		{"memory limit not a size", []string{"--memory-limit", "lots"}, "invalid size"},
		{"memory limit too small", []string{"--memory-limit", "1MiB"}, "below 64MiB"},
		{"memory limit a byte too small", []string{"--memory-limit", "67108863"}, "below 64MiB"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			expectRefusedServe(t, tt.args, tt.wantErr)
		})
	}
}

var profilingLine = regexp.MustCompile(`msg="--insecure-pprof[^"]*" addr=http://([^ ]+)/debug/pprof/`)

// TestServeInsecurePprof: with --insecure-pprof the profiler may listen
// beyond loopback, and the log warns that it does.
func TestServeInsecurePprof(t *testing.T) {
	t.Parallel()
	c := startChild(t, "serve", "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "x.db"), "--pprof", "0.0.0.0:0", "--insecure-pprof")
	waitServing(t, c.stdout, c.stderr, c.exited, func() error { return c.err })
	m := waitLog(t, c, profilingLine)
	_, port, _ := net.SplitHostPort(m[1])
	resp, err := http.Get("http://127.0.0.1:" + port + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("profiler: %d", resp.StatusCode)
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	if err := c.wait(t, stopTimeout); err != nil {
		t.Fatal(err)
	}
}

var memoryLimitLine = regexp.MustCompile(`memory_limit=(\d+)`)

// TestServeMemoryLimit: the runtime's soft memory limit is --memory-limit
// when given, else GOMEMLIMIT when set, else half the machine's memory.
func TestServeMemoryLimit(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		env  []string
		args []string
		want int64
	}{
		{"default", nil, nil, defaultMemoryLimit()},
		{"flag", nil, []string{"--memory-limit", "300MiB"}, 300 << 20},
		{"GOMEMLIMIT wins over the default", []string{"GOMEMLIMIT=100MiB"}, nil, 100 << 20},
		{"the flag wins over GOMEMLIMIT", []string{"GOMEMLIMIT=100MiB"}, []string{"--memory-limit", "300MiB"}, 300 << 20},
		{"no limit", nil, []string{"--memory-limit", "0"}, math.MaxInt64},
		{"the least accepted", nil, []string{"--memory-limit", "64MiB"}, 64 << 20},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"serve", "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "x.db")}, tt.args...)
			c := startHelper(t, "TestHelperServe", tt.env, args...)
			waitServing(t, c.stdout, c.stderr, c.exited, func() error { return c.err })
			m := waitLog(t, c, memoryLimitLine)
			if got, _ := strconv.ParseInt(m[1], 10, 64); got != tt.want {
				t.Errorf("memory limit %d, want %d", got, tt.want)
			}
			c.cmd.Process.Signal(syscall.SIGTERM)
			if err := c.wait(t, stopTimeout); err != nil {
				t.Fatal(err)
			}
		})
	}
	if def := defaultMemoryLimit(); def < 64<<20 {
		t.Errorf("default memory limit %d: too small for any server", def)
	}
}

// waitLog waits for a line of the child's log that re matches, and returns
// the match. The log and the line on stdout that says the server is up
// travel separate pipes: either may arrive first.
func waitLog(t *testing.T, c *child, re *regexp.Regexp) []string {
	t.Helper()
	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	for {
		if m := re.FindStringSubmatch(c.stderr.String()); m != nil {
			return m
		}
		select {
		case <-c.stderr.changed:
		case <-deadline.C:
			t.Fatalf("nothing in the log matches %s:\n%s", re, c.stderr)
		}
	}
}

// TestServeAmbiguousLength: the server as run refuses a request with both
// Content-Length and Transfer-Encoding, and closes its connection.
func TestServeAmbiguousLength(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "x.db"))
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(eventTimeout))
	io.WriteString(conn, "POST /v1/streams/s/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\na\r\n{\"data\":1}\r\n0\r\n\r\n"+
		"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !resp.Close {
		t.Fatalf("answer %d (close %v), want 400 with Connection: close", resp.StatusCode, resp.Close)
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("after the 400: %q, %v; want the connection closed", rest, err)
	}
	hist, err := http.Get(srv.URL + "/v1/streams/s/history")
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(hist.Body)
	hist.Body.Close()
	if hist.StatusCode != http.StatusOK || strings.Contains(string(out), `"id"`) {
		t.Fatalf("history after the refused publish: %d %s; want no event", hist.StatusCode, out)
	}
}
