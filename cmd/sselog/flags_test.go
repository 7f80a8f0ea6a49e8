package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/retention"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

func TestParseWithEnv(t *testing.T) {
	t.Parallel()
	defaults := serveConfig{
		addr:         "127.0.0.1:8080",
		db:           filepath.Join("data", "sselog.db"),
		retry:        httpapi.DefaultRetry,
		heartbeat:    httpapi.DefaultHeartbeat,
		writeTimeout: httpapi.DefaultWriteTimeout,
		readTimeout:  httpapi.DefaultReadTimeout,
		maxBody:      httpapi.DefaultMaxBody,
		bodyMemory:   httpapi.DefaultBodyMemory,
		tailMemory:   stream.DefaultTailBudget,
		replayMemory: stream.DefaultReplayBudget,
		memoryLimit:  byteLimit(defaultMemoryLimit()),
		maxConns:     defaultMaxConnections,
		idleTimeout:  defaultIdleTimeout,
		shutdown:     defaultShutdownTimeout,
		logLevel:     slog.LevelInfo,
		logFormat:    "text",

		retainAge:      retention.DefaultMaxAge,
		retainInterval: retention.DefaultInterval,

		idempotencyWindow: store.DefaultIdempotencyWindow,
		metrics:           true,
	}
	allEnv := map[string]string{
		"SSELOG_ADDR":               "0.0.0.0:9000",
		"SSELOG_DB":                 "/var/lib/sselog/e.db",
		"SSELOG_RETRY":              "5s",
		"SSELOG_HEARTBEAT":          "7s",
		"SSELOG_WRITE_TIMEOUT":      "9s",
		"SSELOG_READ_TIMEOUT":       "11s",
		"SSELOG_MAX_BODY":           "2MiB",
		"SSELOG_LOG_LEVEL":          "debug",
		"SSELOG_LOG_FORMAT":         "json",
		"SSELOG_RETAIN_AGE":         "24h",
		"SSELOG_RETAIN_EVENTS":      "1000",
		"SSELOG_RETAIN_BYTES":       "1GiB",
		"SSELOG_RETAIN_INTERVAL":    "30s",
		"SSELOG_JWT_SECRET_FILE":    "/etc/sselog/secret",
		"SSELOG_JWT_PUBLIC_KEY":     "/etc/sselog/key.pem",
		"SSELOG_INSECURE_NO_AUTH":   "true",
		"SSELOG_CORS_ORIGIN":        "https://a.example, https://b.example",
		"SSELOG_TLS_CERT":           "/etc/sselog/cert.pem",
		"SSELOG_TLS_KEY":            "/etc/sselog/tls.key",
		"SSELOG_MAX_BODY_MEMORY":    "32MiB",
		"SSELOG_TAIL_MEMORY":        "16MiB",
		"SSELOG_REPLAY_MEMORY":      "8MiB",
		"SSELOG_MEMORY_LIMIT":       "2GiB",
		"SSELOG_MAX_CONNECTIONS":    "500",
		"SSELOG_IDLE_TIMEOUT":       "1m",
		"SSELOG_SHUTDOWN_TIMEOUT":   "5s",
		"SSELOG_PPROF":              "127.0.0.1:6060",
		"SSELOG_INSECURE_PPROF":     "true",
		"SSELOG_IDEMPOTENCY_WINDOW": "2h",
		"SSELOG_METRICS_ADDR":       "127.0.0.1:9090",
	}
	fromEnv := serveConfig{
		addr: "0.0.0.0:9000", db: "/var/lib/sselog/e.db",
		retry: 5 * time.Second, heartbeat: 7 * time.Second, writeTimeout: 9 * time.Second,
		readTimeout: 11 * time.Second, maxBody: 2 << 20, logLevel: slog.LevelDebug, logFormat: "json",
		retainAge: 24 * time.Hour, retainEvents: 1000, retainBytes: 1 << 30, retainInterval: 30 * time.Second,
		jwtSecretFile: "/etc/sselog/secret", jwtPublicKey: "/etc/sselog/key.pem", insecureNoAuth: true,
		corsOrigins: stringList{"https://a.example", "https://b.example"},
		tlsCert:     "/etc/sselog/cert.pem", tlsKey: "/etc/sselog/tls.key",
		bodyMemory: 32 << 20, tailMemory: 16 << 20, replayMemory: 8 << 20, memoryLimit: 2 << 30,
		maxConns: 500, idleTimeout: time.Minute, shutdown: 5 * time.Second,
		pprof: "127.0.0.1:6060", insecurePprof: true,
		idempotencyWindow: 2 * time.Hour,
		metrics:           true, metricsAddr: "127.0.0.1:9090",
	}
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		want    serveConfig
		wantErr string // a substring of the error; "" means success
	}{
		{name: "defaults", want: defaults},
		{name: "every flag from the environment", env: allEnv, want: fromEnv},
		{
			name: "flags override the environment",
			env:  allEnv,
			args: []string{
				"--addr", "127.0.0.1:1", "--db", "f.db", "--retry", "1s", "--heartbeat", "2s",
				"--write-timeout", "3s", "--read-timeout", "4s", "--max-body", "512KiB", "--log-level", "warn", "--log-format", "text",
				"--retain-age", "0", "--retain-events", "0", "--retain-bytes", "0", "--retain-interval", "5s",
				"--jwt-secret-file", "s", "--jwt-public-key", "k.pem", "--insecure-no-auth=false", "--cors-origin", "https://c.example",
				"--tls-cert", "c.pem", "--tls-key", "c.key",
				"--max-body-memory", "4MiB", "--tail-memory", "1MiB", "--replay-memory", "2MiB", "--memory-limit", "0",
				"--max-connections", "0", "--idle-timeout", "3s", "--shutdown-timeout", "2s", "--pprof", "", "--insecure-pprof=false",
				"--idempotency-window", "90m", "--metrics=false", "--metrics-addr", "",
			},
			want: serveConfig{
				addr: "127.0.0.1:1", db: "f.db", retry: time.Second, heartbeat: 2 * time.Second,
				writeTimeout: 3 * time.Second, readTimeout: 4 * time.Second, maxBody: 512 << 10, logLevel: slog.LevelWarn, logFormat: "text",
				retainInterval: 5 * time.Second,
				jwtSecretFile:  "s", jwtPublicKey: "k.pem", corsOrigins: stringList{"https://c.example"}, tlsCert: "c.pem", tlsKey: "c.key",
				bodyMemory: 4 << 20, tailMemory: 1 << 20, replayMemory: 2 << 20,
				idleTimeout: 3 * time.Second, shutdown: 2 * time.Second,
				idempotencyWindow: 90 * time.Minute,
			},
		},
		{
			name: "one flag overrides, the rest from the environment",
			env:  allEnv,
			args: []string{"--max-body=1048576"},
			want: func() serveConfig { c := fromEnv; c.maxBody = 1 << 20; return c }(),
		},
		{
			name: "unrelated and unprefixed variables are ignored",
			env:  map[string]string{"SSELOG_NOPE": "1", "ADDR": "x", "MAX_BODY": "x", "sselog_addr": "x"},
			want: defaults,
		},
		{
			name: "repeated flag adds",
			args: []string{"--cors-origin", "https://a.example", "--cors-origin", "https://b.example,https://c.example"},
			want: func() serveConfig {
				c := defaults
				c.corsOrigins = stringList{"https://a.example", "https://b.example", "https://c.example"}
				return c
			}(),
		},
		{
			name: "repeated flag on the command line replaces the environment's",
			env:  allEnv,
			args: []string{"--cors-origin", "https://c.example", "--insecure-no-auth=false"},
			want: func() serveConfig {
				c := fromEnv
				c.corsOrigins, c.insecureNoAuth = stringList{"https://c.example"}, false
				return c
			}(),
		},
		{
			name: "a flag on the command line overrides a bad environment value",
			env:  map[string]string{"SSELOG_MAX_BODY": "lots"},
			args: []string{"--max-body", "2MiB"},
			want: func() serveConfig { c := defaults; c.maxBody = 2 << 20; return c }(),
		},
		{name: "bad bool in the environment", env: map[string]string{"SSELOG_INSECURE_NO_AUTH": "maybe"}, wantErr: "SSELOG_INSECURE_NO_AUTH"},
		{name: "bad size in the environment", env: map[string]string{"SSELOG_MAX_BODY": "lots"}, wantErr: "SSELOG_MAX_BODY"},
		{name: "bad duration in the environment", env: map[string]string{"SSELOG_RETRY": "soon"}, wantErr: "SSELOG_RETRY"},
		{name: "bad level in the environment", env: map[string]string{"SSELOG_LOG_LEVEL": "loud"}, wantErr: "SSELOG_LOG_LEVEL"},
		{name: "bad flag", args: []string{"--max-body", "0"}, wantErr: "invalid size"},
		{name: "unknown flag", args: []string{"--port", "80"}, wantErr: "port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fs, c := serveFlags(io.Discard)
			lookup := func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
			err := parseWithEnv(fs, tt.args, lookup)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// The cluster flags have their own table (cluster_test.go);
			// here they keep their defaults.
			want := tt.want
			want.backend, want.natsSync = cmp.Or(want.backend, "bbolt"), cmp.Or(want.natsSync, "always")
			if !reflect.DeepEqual(*c, want) {
				t.Errorf("config\n got %+v\nwant %+v", *c, want)
			}
		})
	}
}

func TestByteSize(t *testing.T) {
	t.Parallel()
	valid := []struct {
		in   string
		want int64
	}{
		{"1MiB", 1 << 20},
		{"512KiB", 512 << 10},
		{"1048576", 1048576},
		{"1MB", 1_000_000},
		{"64KB", 64_000},
		{"2GiB", 2 << 30},
		{"3GB", 3_000_000_000},
		{"10B", 10},
		{"1", 1},
		{" 4 MiB ", 4 << 20},
		{"1024GiB", 1 << 40},
	}
	for _, tt := range valid {
		var b byteSize
		if err := b.Set(tt.in); err != nil || int64(b) != tt.want {
			t.Errorf("Set(%q) = %d, %v; want %d", tt.in, b, err, tt.want)
		}
		if err := b.Set(b.String()); err != nil || int64(b) != tt.want {
			t.Errorf("Set(String()) of %q = %d, %v: does not round-trip", tt.in, b, err)
		}
	}
	invalid := []string{
		"", "0", "-1", "-1MiB", "0KiB", "abc", "MiB", "1TiB", "1TB", "1.5MiB", "1e6",
		"1 M", "1KiBs", "0x10", "1025GiB", "9223372036854775807", "99999999999999999999",
	}
	for _, in := range invalid {
		b := byteSize(42)
		err := b.Set(in)
		if err == nil {
			t.Errorf("Set(%q) = %d, want an error", in, b)
			continue
		}
		if b != 42 {
			t.Errorf("failed Set(%q) changed the value to %d", in, b)
		}
		if !strings.Contains(err.Error(), "invalid size") {
			t.Errorf("Set(%q) error %q does not say what is wrong", in, err)
		}
	}
}

// runQuick calls run for arguments that must end without serving.
func runQuick(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out, errOut strings.Builder
	err = run(ctx, args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestRunCommandLine(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "never", "x.db")
	serve := func(extra ...string) []string {
		return append([]string{"serve", "--addr", "127.0.0.1:0", "--db", db}, extra...)
	}
	tests := []struct {
		name       string
		args       []string
		wantErr    string // a substring of the error; "" means nil
		wantStdout string
		wantStderr string
	}{
		{name: "no arguments", args: nil, wantErr: flag.ErrHelp.Error(), wantStderr: "Usage:\n  sselog serve"},
		{name: "help", args: []string{"help"}, wantStdout: "Usage:\n  sselog serve"},
		{name: "-h", args: []string{"-h"}, wantStdout: "Usage:\n  sselog serve"},
		{name: "unknown command", args: []string{"serv"}, wantErr: `unknown command "serv"`, wantStderr: "Usage:"},
		{name: "serve -h", args: serve("-h"), wantErr: flag.ErrHelp.Error(), wantStderr: "SSELOG_MAX_BODY"},
		{name: "bad log format", args: serve("--log-format", "xml"), wantErr: "--log-format must be text or json"},
		{name: "bad log level", args: serve("--log-level", "loud"), wantErr: "log-level"},
		{name: "zero retry", args: serve("--retry", "0s"), wantErr: "--retry must be positive"},
		{name: "negative heartbeat", args: serve("--heartbeat", "-1s"), wantErr: "--heartbeat must be positive"},
		{name: "zero write timeout", args: serve("--write-timeout", "0s"), wantErr: "--write-timeout must be positive"},
		{name: "zero max body", args: serve("--max-body", "0"), wantErr: "invalid size"},
		{name: "bad duration", args: serve("--retry", "3"), wantErr: "retry"},
		{name: "negative retain age", args: serve("--retain-age", "-1h"), wantErr: "--retain-age must not be negative"},
		{name: "negative max streams", args: serve("--max-streams", "-1"), wantErr: "--max-streams must not be negative"},
		{name: "zero retain interval", args: serve("--retain-interval", "0s"), wantErr: "--retain-interval must be positive"},
		{name: "zero idempotency window", args: serve("--idempotency-window", "0s"), wantErr: "--idempotency-window must be positive"},
		{name: "bad idempotency window", args: serve("--idempotency-window", "a day"), wantErr: "idempotency-window"},
		{name: "metrics address without metrics", args: serve("--metrics=false", "--metrics-addr", "127.0.0.1:0"), wantErr: "--metrics-addr needs --metrics"},
		{name: "bad retain bytes", args: serve("--retain-bytes", "-5"), wantErr: "invalid size"},
		{name: "bad retain events", args: serve("--retain-events", "many"), wantErr: "retain-events"},
		{name: "tls cert without key", args: serve("--tls-cert", "c.pem"), wantErr: "--tls-cert and --tls-key go together"},
		{name: "tls key without cert", args: serve("--tls-key", "c.key"), wantErr: "--tls-cert and --tls-key go together"},
		{name: "missing tls files", args: serve("--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/c.key"), wantErr: "no such file"},
		{name: "secret and public key", args: serve("--jwt-secret-file", "s", "--jwt-public-key", "k.pem"), wantErr: "exclude each other"},
		{name: "missing secret file", args: serve("--jwt-secret-file", "/nonexistent/secret"), wantErr: "--jwt-secret-file: open /nonexistent/secret"},
		{name: "missing public key file", args: serve("--jwt-public-key", "/nonexistent/k.pem"), wantErr: "--jwt-public-key: open /nonexistent/k.pem"},
		{name: "wildcard origin", args: serve("--cors-origin", "*"), wantErr: "no wildcard"},
		{name: "origin with a path", args: serve("--cors-origin", "https://app.example.com/app"), wantErr: "want an origin"},
		{name: "origin without a scheme", args: serve("--cors-origin", "app.example.com"), wantErr: "want an origin"},
		{name: "all interfaces without a key", args: serve("--addr", "0.0.0.0:0"), wantErr: "--insecure-no-auth"},
		{name: "no host without a key", args: serve("--addr", ":0"), wantErr: "not a loopback address"},
		// A stray word ends flag parsing: "1 MiB" would silently drop every
		// flag after it.
		{name: "stray argument", args: serve("--max-body", "1", "MiB", "--retry", "1s"), wantErr: `unexpected argument "MiB"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, err := runQuick(t, tt.args...)
			if tt.wantErr == "" && err != nil {
				t.Errorf("err = %v, want nil", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("err = %v, want one containing %q", err, tt.wantErr)
			}
			if !strings.Contains(stdout, tt.wantStdout) || (tt.wantStdout == "" && stdout != "") {
				t.Errorf("stdout = %q, want it to contain %q", stdout, tt.wantStdout)
			}
			if !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tt.wantStderr)
			}
		})
	}
	// Bad configuration is refused before anything touches the disk.
	if _, err := os.Stat(filepath.Dir(db)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused configuration created %s: %v", filepath.Dir(db), err)
	}
}

func TestRunMainStatus(t *testing.T) {
	t.Parallel()
	var stdout, stderr strings.Builder
	if code := runMain(nil, &stdout, &stderr); code != 2 {
		t.Errorf("sselog with no arguments exits %d, want 2", code)
	}
	if !strings.HasPrefix(stderr.String(), usage) || strings.Contains(stderr.String(), "sselog: flag") || stdout.Len() != 0 {
		t.Errorf("sselog with no arguments: stdout %q, stderr %q; want only the usage, on stderr", stdout.String(), stderr.String())
	}
	stdout.Reset()
	stderr.Reset()
	if code := runMain([]string{"frob"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), `sselog: unknown command "frob"`) {
		t.Errorf("sselog frob: exit %d, stderr %q", code, stderr.String())
	}
	stdout.Reset()
	stderr.Reset()
	if code := runMain([]string{"help"}, &stdout, &stderr); code != 0 || stdout.String() != usage {
		t.Errorf("sselog help: exit %d, stdout %q", code, stdout.String())
	}
}

func TestServeListenFailureReleasesDatabase(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "x.db")
	_, _, err := runQuick(t, "serve", "--addr", "127.0.0.1:99999", "--db", db)
	if err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("err = %v, want a listen error", err)
	}
	// A database left open would make this wait out the lock timeout and
	// fail.
	testkit.OpenAt(t, db, store.Options{})
}
