package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/retention"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// defaultShutdownTimeout bounds a graceful stop: in-flight publishes
// finish, SSE streams end, the database closes. It is under the 10 s that
// supervisors commonly give (Docker's default) before SIGKILL.
const defaultShutdownTimeout = 8 * time.Second

// closeReserve is the part of the shutdown timeout kept for what follows
// the cut of the last streams: the retention worker's stop and the
// database's close.
const closeReserve = 500 * time.Millisecond

// Defaults of the connection limits.
const (
	defaultMaxConnections = 16384
	defaultIdleTimeout    = 2 * time.Minute
)

// serveConfig holds serve's flag values as parsed, before any check.
type serveConfig struct {
	addr         string
	db           string
	retry        time.Duration
	heartbeat    time.Duration
	writeTimeout time.Duration
	readTimeout  time.Duration
	maxBody      byteSize
	bodyMemory   byteSize
	tailMemory   byteSize
	replayMemory byteSize
	memoryLimit  byteLimit
	maxConns     int
	idleTimeout  time.Duration
	shutdown     time.Duration
	logLevel     slog.Level
	logFormat    string

	retainAge      time.Duration
	retainEvents   uint64
	retainBytes    byteLimit
	retainInterval time.Duration

	idempotencyWindow time.Duration

	pprof         string
	insecurePprof bool

	metrics     bool
	metricsAddr string

	maxSubscribers      int
	maxSubscribersPerIP int
	maxStreams          int

	jwtSecretFile  string
	jwtPublicKey   string
	insecureNoAuth bool
	corsOrigins    stringList
	tlsCert        string
	tlsKey         string

	clusterConfig
}

func serveFlags(stderr io.Writer) (*flag.FlagSet, *serveConfig) {
	c := &serveConfig{
		maxBody:      httpapi.DefaultMaxBody,
		bodyMemory:   httpapi.DefaultBodyMemory,
		tailMemory:   stream.DefaultTailBudget,
		replayMemory: stream.DefaultReplayBudget,
		memoryLimit:  byteLimit(defaultMemoryLimit()),
	}
	fs := flag.NewFlagSet("sselog serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "listen address")
	fs.StringVar(&c.db, "db", filepath.Join("data", "sselog.db"), "database file (its directory is created)")
	fs.DurationVar(&c.retry, "retry", httpapi.DefaultRetry, "reconnection delay hinted to SSE clients")
	fs.DurationVar(&c.heartbeat, "heartbeat", httpapi.DefaultHeartbeat, "idle time before an SSE comment line is sent")
	fs.DurationVar(&c.writeTimeout, "write-timeout", httpapi.DefaultWriteTimeout, "a subscriber whose writes make no progress this long is disconnected")
	fs.DurationVar(&c.readTimeout, "read-timeout", httpapi.DefaultReadTimeout, "a publish body must arrive within this time")
	fs.Var(&c.maxBody, "max-body", "largest publish body (bytes, or with KiB/MiB/KB/MB)")
	fs.Var(&c.bodyMemory, "max-body-memory", "most memory the request bodies being received or stored may hold together; a publish beyond it is answered 503 with Retry-After (at least --max-body)")
	fs.Var(&c.tailMemory, "tail-memory", "most memory the in-memory tails of all followed streams may hold together; beyond it tails are cut, and their subscribers read from the database")
	fs.Var(&c.replayMemory, "replay-memory", "most memory the pages of replays in progress may hold together; beyond it replays read smaller pages")
	fs.Var(&c.memoryLimit, "memory-limit", "soft limit on the Go runtime's memory (debug.SetMemoryLimit): the collector works harder as the heap nears it (default: GOMEMLIMIT if set, else half the memory of the machine or cgroup; at least 64MiB; 0: none)")
	fs.IntVar(&c.maxConns, "max-connections", defaultMaxConnections, "most client connections open at once, SSE streams included; more wait in the listen backlog (0: no limit)")
	fs.DurationVar(&c.idleTimeout, "idle-timeout", defaultIdleTimeout, "a keep-alive connection with no request for this long is closed")
	fs.DurationVar(&c.shutdown, "shutdown-timeout", defaultShutdownTimeout, "on SIGTERM or SIGINT the process exits within this time: streams that have not ended by then (stalled subscribers) are cut")
	fs.DurationVar(&c.retainAge, "retain-age", retention.DefaultMaxAge, "default retention: events older than this are trimmed (0: no age limit)")
	fs.Uint64Var(&c.retainEvents, "retain-events", 0, "default retention: keep at most this many events per stream (0: no limit)")
	fs.Var(&c.retainBytes, "retain-bytes", "default retention: keep at most this many stored bytes per stream, with KiB/MiB/GiB (0: no limit)")
	fs.DurationVar(&c.retainInterval, "retain-interval", retention.DefaultInterval, "time between retention passes")
	fs.DurationVar(&c.idempotencyWindow, "idempotency-window", store.DefaultIdempotencyWindow, "how long a publish's Idempotency-Key is remembered: a repeat within it stores nothing and gets the first answer")
	fs.TextVar(&c.logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.IntVar(&c.maxSubscribers, "max-subscribers", 0, "most open SSE streams; more are told to retry later (0: no limit)")
	fs.IntVar(&c.maxSubscribersPerIP, "max-subscribers-per-ip", 0, "most open SSE streams per client address (0: no limit)")
	fs.IntVar(&c.maxStreams, "max-streams", 0, "most streams; publishing to a new one beyond it is refused with 429 (0: no limit)")
	fs.StringVar(&c.pprof, "pprof", "", "serve Go's profiling endpoints (/debug/pprof/), without authentication, on this loopback address, e.g. 127.0.0.1:6060 (off when empty)")
	fs.BoolVar(&c.metrics, "metrics", true, "serve Prometheus metrics at GET /metrics (to admin tokens only when a token key is set); false turns them off")
	fs.StringVar(&c.metricsAddr, "metrics-addr", "", "serve GET /metrics on this address instead, without authentication, e.g. 127.0.0.1:9090: keep it on a private network (anyone who reaches it reads the server's figures)")
	fs.BoolVar(&c.insecurePprof, "insecure-pprof", false, "let --pprof listen on a non-loopback address: anyone who can connect may profile the server and read its memory")
	fs.StringVar(&c.jwtSecretFile, "jwt-secret-file", "", "file holding the HMAC secret that signs bearer tokens (HS256/384/512; at least 32 bytes; a trailing newline is ignored)")
	fs.StringVar(&c.jwtPublicKey, "jwt-public-key", "", "PEM file with the public key that verifies bearer tokens (RSA: RS*/PS*, ECDSA: ES*, Ed25519: EdDSA)")
	fs.BoolVar(&c.insecureNoAuth, "insecure-no-auth", false, "serve without tokens on a non-loopback address: anyone who can connect may do anything")
	fs.Var(&c.corsOrigins, "cors-origin", "origin allowed to call the API from a browser, with credentials, e.g. https://app.example.com (repeatable, or comma-separated)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM certificate (chain) file: serve HTTPS and HTTP/2 (with --tls-key)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM private key file for --tls-cert")
	clusterFlags(fs, &c.clusterConfig)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: sselog serve [flags]\n\nEvery flag can also be set by environment, as SSELOG_<FLAG> (SSELOG_ADDR, SSELOG_MAX_BODY, ...); flags win.\n\n")
		fs.PrintDefaults()
	}
	return fs, c
}

// config is what a service is built from: the flag values, checked, with
// the files they name loaded.
type config struct {
	serveConfig
	logger   *slog.Logger
	verifier *httpapi.Verifier // nil: anonymous access
	origins  []string
	tls      *tls.Config  // nil: plain HTTP
	limits   store.Limits // the default retention, for the handler and the worker alike
	// memoryLimitSet is true when --memory-limit was given, on the command
	// line or as SSELOG_MEMORY_LIMIT: it then wins over GOMEMLIMIT.
	memoryLimitSet bool
}

// loadConfig turns serve's arguments and environment (looked up with
// lookup) into a config. It reports the first problem in a fixed order, and
// touches nothing on disk but the key and certificate files it reads.
func loadConfig(args []string, lookup func(string) (string, bool), stderr io.Writer) (*config, error) {
	fs, sc := serveFlags(stderr)
	if err := parseWithEnv(fs, args, lookup); err != nil {
		return nil, err
	}
	// Flag parsing stops at the first non-flag, so a stray word would
	// silently drop every flag after it.
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags only; see sselog serve -h)", fs.Arg(0))
	}
	c := &config{serveConfig: *sc}
	var err error
	if c.logger, err = newLogger(stderr, c.logFormat, c.logLevel); err != nil {
		return nil, err
	}
	dbSet := false
	fs.Visit(func(f *flag.Flag) {
		c.memoryLimitSet = c.memoryLimitSet || f.Name == "memory-limit"
		dbSet = dbSet || f.Name == "db"
	})
	if c.backend == "jetstream" && !dbSet {
		c.db = defaultReplicaDB
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	c.limits = store.Limits{MaxAge: c.retainAge, MaxEvents: c.retainEvents, MaxBytes: uint64(c.retainBytes)}
	// Security settings are checked before anything touches the disk.
	if c.verifier, err = loadVerifier(c.jwtSecretFile, c.jwtPublicKey); err != nil {
		return nil, err
	}
	if c.verifier == nil {
		if err := checkAnonymous(c.addr, c.insecureNoAuth, c.logger); err != nil {
			return nil, err
		}
	} else if c.insecureNoAuth {
		return nil, errors.New("--insecure-no-auth contradicts --jwt-secret-file or --jwt-public-key: give one or the other")
	}
	if c.origins, err = checkOrigins(c.corsOrigins); err != nil {
		return nil, err
	}
	if c.tls, err = loadTLS(c.tlsCert, c.tlsKey); err != nil {
		return nil, err
	}
	return c, nil
}

// check reports the first value out of range. Lists, not maps, hold the
// flags checked alike: with a map, which of two bad values was reported
// would change from run to run.
func (c *serveConfig) check() error {
	if c.memoryLimit != 0 && c.memoryLimit < minMemoryLimit {
		return fmt.Errorf("--memory-limit %s is below %dMiB: the collector would run without pause (0 means no limit)", c.memoryLimit.String(), minMemoryLimit>>20)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"retry", c.retry},
		{"heartbeat", c.heartbeat},
		{"write-timeout", c.writeTimeout},
		{"read-timeout", c.readTimeout},
		{"idle-timeout", c.idleTimeout},
		{"shutdown-timeout", c.shutdown},
		{"retain-interval", c.retainInterval},
		{"idempotency-window", c.idempotencyWindow},
	} {
		if d.v <= 0 {
			return fmt.Errorf("--%s must be positive", d.name)
		}
	}
	if c.shutdown <= closeReserve {
		return fmt.Errorf("--shutdown-timeout must be more than %v", closeReserve)
	}
	if c.bodyMemory < c.maxBody {
		return fmt.Errorf("--max-body-memory %s is less than --max-body %s: no body of the largest size could be accepted", c.bodyMemory.String(), c.maxBody.String())
	}
	if c.metricsAddr != "" && !c.metrics {
		return errors.New("--metrics-addr needs --metrics")
	}
	if c.pprof != "" && !isLoopback(c.pprof) && !c.insecurePprof {
		return fmt.Errorf("--pprof %s is not a loopback address: the profiler has no authentication and shows the server's memory; listen on 127.0.0.1, or give --insecure-pprof", c.pprof)
	}
	for _, n := range []struct {
		name string
		v    int
	}{
		{"max-connections", c.maxConns},
		{"max-subscribers", c.maxSubscribers},
		{"max-subscribers-per-ip", c.maxSubscribersPerIP},
		{"max-streams", c.maxStreams},
	} {
		if n.v < 0 {
			return fmt.Errorf("--%s must not be negative (0 means no limit)", n.name)
		}
	}
	if c.retainAge < 0 {
		return errors.New("--retain-age must not be negative (0 means no age limit)")
	}
	return c.checkCluster()
}

func newLogger(w io.Writer, format string, level slog.Level) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format must be text or json, not %q", format)
	}
}

// loadVerifier reads the token key named by --jwt-secret-file or
// --jwt-public-key; nil when neither is set.
func loadVerifier(secretFile, publicKeyFile string) (*httpapi.Verifier, error) {
	var key any
	var flagName, file string
	switch {
	case secretFile != "" && publicKeyFile != "":
		return nil, errors.New("--jwt-secret-file and --jwt-public-key exclude each other: give one")
	case secretFile != "":
		flagName, file = "--jwt-secret-file", secretFile
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", flagName, err)
		}
		// Files written with echo end in a newline that is no part of the
		// secret.
		key = bytes.TrimRight(b, "\r\n")
	case publicKeyFile != "":
		flagName, file = "--jwt-public-key", publicKeyFile
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", flagName, err)
		}
		if key, err = httpapi.ParsePublicKey(b); err != nil {
			return nil, fmt.Errorf("%s %s: %w", flagName, file, err)
		}
	default:
		return nil, nil
	}
	v, err := httpapi.NewVerifier(httpapi.VerifierOptions{Key: key})
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", flagName, file, err)
	}
	return v, nil
}

// checkAnonymous decides whether a server without a token key may listen
// on addr: on a loopback address it may; elsewhere only with
// --insecure-no-auth, which is logged as a warning.
func checkAnonymous(addr string, insecure bool, logger *slog.Logger) error {
	if isLoopback(addr) {
		logger.Info("no --jwt-secret-file or --jwt-public-key: anonymous access, on a loopback address")
		return nil
	}
	if !insecure {
		return fmt.Errorf("--addr %s is not a loopback address, and no token key is set: give --jwt-secret-file or --jwt-public-key, or --insecure-no-auth to let anyone who can connect publish, read, delete and back up everything", addr)
	}
	logger.Warn("--insecure-no-auth: serving without authentication on a non-loopback address; anyone who can connect may publish, read, delete streams and download backups", "addr", addr)
	return nil
}

// isLoopback reports whether addr's host is "localhost" or a loopback IP
// (127.0.0.0/8, ::1, or IPv4 loopback mapped into IPv6). An empty host
// listens on every interface, and a host name other than localhost might
// resolve anywhere: neither is loopback.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// checkOrigins checks each --cors-origin is an origin, scheme://host[:port]
// with nothing after it, and returns them.
func checkOrigins(list []string) ([]string, error) {
	for _, o := range list {
		if o == "*" || o == "null" {
			return nil, fmt.Errorf("--cors-origin %q: name each origin (credentials are allowed, so there is no wildcard)", o)
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || strings.Contains(u.Host, "*") {
			return nil, fmt.Errorf("--cors-origin %q: want an origin such as https://app.example.com or http://localhost:3000", o)
		}
	}
	return list, nil
}

// loadTLS reads the certificate and key for HTTPS; nil when neither is set.
func loadTLS(certFile, keyFile string) (*tls.Config, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("--tls-cert and --tls-key go together: give both or neither")
	}
	if certFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %s, --tls-key %s: %w", certFile, keyFile, err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"},
	}, nil
}
