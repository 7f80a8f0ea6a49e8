package main

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

func noEnv(string) (string, bool) { return "", false }

// TestConfigCheckOrder: when several values are out of range, the one
// reported is always the same, the first in the order the flags are listed
// in -h. Before, a map's iteration order chose among bad durations and
// among bad limits, so the message could change from one run to the next.
func TestConfigCheckOrder(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{
			name: "two durations",
			args: []string{"--shutdown-timeout", "0s", "--retry", "0s"},
			want: "--retry must be positive",
		},
		{
			name: "every duration",
			args: []string{
				"--retain-interval", "0s", "--shutdown-timeout", "0s", "--idle-timeout", "0s",
				"--read-timeout", "0s", "--write-timeout", "0s", "--heartbeat", "0s",
			},
			want: "--heartbeat must be positive",
		},
		{
			name: "a duration from the environment and one from the command line",
			env:  map[string]string{"SSELOG_READ_TIMEOUT": "0s"},
			args: []string{"--idle-timeout", "-1s"},
			want: "--read-timeout must be positive",
		},
		{
			name: "every limit",
			args: []string{"--max-streams", "-1", "--max-subscribers-per-ip", "-1", "--max-subscribers", "-1", "--max-connections", "-1"},
			want: "--max-connections must not be negative",
		},
		{
			name: "two limits",
			args: []string{"--max-streams", "-1", "--max-subscribers-per-ip", "-1"},
			want: "--max-subscribers-per-ip must not be negative",
		},
		{
			name: "a limit and a duration",
			args: []string{"--max-subscribers", "-1", "--retain-interval", "0s"},
			want: "--retain-interval must be positive",
		},
		{
			name: "the memory limit before the durations",
			args: []string{"--retry", "0s", "--memory-limit", "1MiB"},
			want: "--memory-limit 1MiB is below",
		},
		{
			name: "a shutdown timeout inside the reserve before the body sizes",
			args: []string{"--max-body-memory", "1KiB", "--shutdown-timeout", "100ms"},
			want: "--shutdown-timeout must be more than",
		},
		{
			name: "the retention age last",
			args: []string{"--retain-age", "-1h", "--max-streams", "-1"},
			want: "--max-streams must not be negative",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			lookup := func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
			// Go randomizes map iteration on each range: with the old maps,
			// twenty runs all agreeing by chance was under one in a million.
			for range 20 {
				_, err := loadConfig(tt.args, lookup, io.Discard)
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("err = %v, want one containing %q", err, tt.want)
				}
			}
		})
	}
}

// TestServiceRun builds a service from a config and runs it until its
// context ends, as serve does, without the process-wide memory settings.
func TestServiceRun(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "x.db")
	logs := newSyncBuffer()
	c, err := loadConfig([]string{"--addr", "127.0.0.1:0", "--db", db}, noEnv, logs)
	if err != nil {
		t.Fatal(err)
	}
	s, err := newService(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout := newSyncBuffer()
	done := make(chan struct{})
	var runErr error
	go func() {
		runErr = s.run(ctx, stdout)
		close(done)
	}()
	base := waitServing(t, stdout, logs, done, func() error { return runErr })
	if want := "http://" + s.ln.Addr().String(); base != want {
		t.Errorf("serving on %s, want the service's listener %s", base, want)
	}
	publishOne(t, base+"/v1/streams/s/events", "", `"hello"`)

	cancel()
	select {
	case <-done:
	case <-time.After(stopTimeout):
		t.Fatalf("run did not return within %v of cancel\nlog:\n%s", stopTimeout, logs)
	}
	if runErr != nil {
		t.Fatalf("run returned %v after cancel, want nil", runErr)
	}
	if !strings.Contains(logs.String(), "msg=stopped") {
		t.Errorf("the log does not end with stopped:\n%s", logs)
	}
	// run closed the database: it opens again at once, with the event.
	if got := testkit.OpenAt(t, db, store.Options{}).LastID(); got.IsZero() {
		t.Errorf("after run, the database holds no event")
	}
	if _, err := http.Get(base + "/v1/streams/s/events"); err == nil {
		t.Errorf("the listener is still open after run returned")
	}
}
