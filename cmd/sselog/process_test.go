package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

// childArgsEnv carries the arguments of a re-executed test binary. It has
// no SSELOG_ prefix so that it can never be mistaken for a flag.
const childArgsEnv = "TEST_SSELOG_CHILD_ARGS"

// TestHelperServe is not a test: it is the body of the child processes the
// tests below start, which run exactly what main runs.
func TestHelperServe(t *testing.T) {
	enc, ok := os.LookupEnv(childArgsEnv)
	if !ok {
		t.Skip("the body of a child process, run by other tests")
	}
	var args []string
	if err := json.Unmarshal([]byte(enc), &args); err != nil {
		fmt.Fprintln(os.Stderr, "bad", childArgsEnv, err)
		os.Exit(3)
	}
	os.Exit(runMain(args, os.Stdout, os.Stderr))
}

// child is sselog running as its own process.
type child struct {
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	exited chan struct{} // closed when cmd.Wait has returned
	err    error         // cmd.Wait's result, once exited is closed
}

func startChild(t *testing.T, args ...string) *child {
	t.Helper()
	return startHelper(t, "TestHelperServe", nil, args...)
}

// startHelper re-executes the test binary to run only the test named
// helper, which reads args from childArgsEnv, with env added to its
// environment.
func startHelper(t *testing.T, helper string, env []string, args ...string) *child {
	t.Helper()
	c, _ := startHelperPiped(t, helper, env, false, args...)
	return c
}

// startHelperPiped is startHelper that, with pipe set, also returns a pipe
// to the child's standard input.
func startHelperPiped(t *testing.T, helper string, env []string, pipe bool, args ...string) (*child, io.WriteCloser) {
	t.Helper()
	enc, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	c := &child{
		cmd:    exec.Command(os.Args[0], "-test.run=^"+helper+"$", "-test.count=1"),
		stdout: newSyncBuffer(),
		stderr: newSyncBuffer(),
		exited: make(chan struct{}),
	}
	// The race detector otherwise sleeps a second at exit, which would
	// count against the child's shutdown time.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	c.cmd.Env = append(append(os.Environ(), childArgsEnv+"="+string(enc), "GORACE="+gorace), env...)
	c.cmd.Stdout, c.cmd.Stderr = c.stdout, c.stderr
	c.cmd.WaitDelay = time.Second
	var stdin io.WriteCloser
	if pipe {
		if stdin, err = c.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-c.exited:
		default:
			// Still running: the test failed before it ended the child.
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
		if t.Failed() {
			t.Logf("child stderr:\n%s", c.stderr)
		}
	})
	return c, stdin
}

// wait waits for the child to exit and returns cmd.Wait's error.
func (c *child) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-c.exited:
		return c.err
	case <-time.After(timeout):
		t.Fatalf("child still running after %v\nstderr:\n%s", timeout, c.stderr)
		return nil
	}
}

func TestChildSIGTERM(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "x.db")
	c := startChild(t, "serve", "--addr", "127.0.0.1:0", "--db", db)
	base := waitServing(t, c.stdout, c.stderr, c.exited, func() error { return c.err })

	url := base + "/v1/streams/s/events"
	id := publishOne(t, url, "", `"before"`)
	// A live stream open at SIGTERM: shutdown has to end it.
	sub := subscribe(t, url, zeroID)
	sub.waitFor(t, 1)

	start := time.Now()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := c.wait(t, stopTimeout); err != nil {
		t.Fatalf("after SIGTERM the child exited with %v, want status 0\nstderr:\n%s", err, c.stderr)
	}
	t.Logf("exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	if _, err := sub.waitEnd(t); !errors.Is(err, io.EOF) {
		t.Errorf("stream ended with %v, want a clean end (EOF)", err)
	}
	l := testkit.OpenAt(t, db, store.Options{})
	if got := storedEvents(t, l, "s"); len(got) != 1 || got[0].ID != id {
		t.Errorf("after SIGTERM the database holds %v, want the one event %s", got, id)
	}
}

func TestChildDatabaseInUse(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "x.db")
	first := startServer(t, "--addr", "127.0.0.1:0", "--db", db)

	start := time.Now()
	c := startChild(t, "serve", "--addr", "127.0.0.1:0", "--db", db)
	// The lock wait is a second; the rest is the race-enabled binary
	// starting.
	err := c.wait(t, 5*time.Second)
	t.Logf("second process exited after %v: %v", time.Since(start).Round(time.Millisecond), err)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Errorf("second process: %v, want a non-zero exit status", err)
	}
	stderr := c.stderr.String()
	if !strings.Contains(stderr, db) || !strings.Contains(stderr, "in use") {
		t.Errorf("stderr %q does not name %s and say it is in use", stderr, db)
	}
	if strings.Contains(c.stdout.String(), "serving") {
		t.Errorf("second process claimed to serve: %q", c.stdout)
	}
	publishOne(t, first.eventsURL("s"), "", `1`)
	first.stop(t)
}
