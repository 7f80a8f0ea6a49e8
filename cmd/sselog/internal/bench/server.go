package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Deadlines of the spawned server's life.
const (
	spawnStartTimeout = 15 * time.Second
	spawnStopTimeout  = 15 * time.Second // the server's own shutdown bound is 10 s
)

// spawned is a server the tool started: its own executable running
// `serve` on a free port with a database in a temporary directory.
type spawned struct {
	cmd    *exec.Cmd
	dir    string
	url    string
	stderr *tailBuffer
	exited chan struct{}
	err    error // the process's exit, valid once exited is closed
}

var servingLine = regexp.MustCompile(`^sselog serving on (http://\S+)`)

// spawnServer starts `<this executable> serve --addr 127.0.0.1:0 --db <tmp>`
// and waits for the line that says where it listens. SSELOG_* environment
// variables reach the server, so they can set its other options.
func spawnServer(ctx context.Context, extra []string) (*spawned, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("spawn: %w", err)
	}
	dir, err := os.MkdirTemp("", "sselog-bench-")
	if err != nil {
		return nil, fmt.Errorf("spawn: %w", err)
	}
	args := append([]string{"serve", "--addr", "127.0.0.1:0", "--db", filepath.Join(dir, "bench.db")}, extra...)
	cmd := exec.Command(exe, args...)
	s := &spawned{cmd: cmd, dir: dir, stderr: &tailBuffer{max: 16 << 10}, exited: make(chan struct{})}
	cmd.Stderr = s.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("spawn: %w", err)
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("spawn: %w", err)
	}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := servingLine.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout) // keep the pipe drained
		s.err = cmd.Wait()
		close(s.exited)
	}()
	timer := time.NewTimer(spawnStartTimeout)
	defer timer.Stop()
	select {
	case s.url = <-found:
		return s, nil
	case <-s.exited:
		err = fmt.Errorf("spawned server exited before serving (%v): %s", s.err, s.stderr)
	case <-timer.C:
		err = fmt.Errorf("spawned server did not say where it serves within %v: %s", spawnStartTimeout, s.stderr)
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.stop()
	return nil, err
}

func (s *spawned) pid() int { return s.cmd.Process.Pid }

// stop ends the server with SIGTERM (SIGKILL if it does not stop in time)
// and removes its database. It reports an unclean exit.
func (s *spawned) stop() error {
	defer os.RemoveAll(s.dir)
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(spawnStopTimeout)
	defer timer.Stop()
	select {
	case <-s.exited:
	case <-timer.C:
		_ = s.cmd.Process.Kill()
		<-s.exited
		return fmt.Errorf("spawned server did not stop within %v after SIGTERM; killed", spawnStopTimeout)
	}
	if s.err != nil {
		return fmt.Errorf("spawned server: %v: %s", s.err, s.stderr)
	}
	return nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(bytes.TrimSpace(b.buf))
}

// readRSS returns the resident set size of process pid in bytes, from the
// VmRSS line of /proc/<pid>/status.
func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("resident memory: %w", err)
	}
	return parseRSS(b)
}

func parseRSS(status []byte) (int64, error) {
	for line := range bytes.Lines(status) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("resident memory: unexpected VmRSS line %q", bytes.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("resident memory: %w", err)
		}
		return kb << 10, nil
	}
	return 0, errors.New("resident memory: no VmRSS line (a kernel thread, or not Linux?)")
}

// clockTicks is USER_HZ, the unit of the times in /proc/<pid>/stat; it is
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// readCPU returns the user plus system CPU time process pid has used, from
// /proc/<pid>/stat.
func readCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("cpu time: %w", err)
	}
	// The command name, in parentheses, may hold spaces: count fields from
	// after its closing parenthesis, where field 3 (state) starts.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("cpu time: malformed stat")
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return 0, errors.New("cpu time: malformed stat")
	}
	utime, err1 := strconv.ParseInt(string(f[11]), 10, 64) // field 14
	stime, err2 := strconv.ParseInt(string(f[12]), 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("cpu time: %w", err)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}
