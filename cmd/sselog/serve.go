package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
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

// defaultGCPercent is the GOGC the server runs with unless GOGC is set.
const defaultGCPercent = 400

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

	pprof         string
	insecurePprof bool

	maxSubscribers      int
	maxSubscribersPerIP int
	maxStreams          int

	jwtSecretFile  string
	jwtPublicKey   string
	insecureNoAuth bool
	corsOrigins    stringList
	tlsCert        string
	tlsKey         string
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
	fs.TextVar(&c.logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.IntVar(&c.maxSubscribers, "max-subscribers", 0, "most open SSE streams; more are told to retry later (0: no limit)")
	fs.IntVar(&c.maxSubscribersPerIP, "max-subscribers-per-ip", 0, "most open SSE streams per client address (0: no limit)")
	fs.IntVar(&c.maxStreams, "max-streams", 0, "most streams; publishing to a new one beyond it is refused with 429 (0: no limit)")
	fs.StringVar(&c.pprof, "pprof", "", "serve Go's profiling endpoints (/debug/pprof/), without authentication, on this loopback address, e.g. 127.0.0.1:6060 (off when empty)")
	fs.BoolVar(&c.insecurePprof, "insecure-pprof", false, "let --pprof listen on a non-loopback address: anyone who can connect may profile the server and read its memory")
	fs.StringVar(&c.jwtSecretFile, "jwt-secret-file", "", "file holding the HMAC secret that signs bearer tokens (HS256/384/512; at least 32 bytes; a trailing newline is ignored)")
	fs.StringVar(&c.jwtPublicKey, "jwt-public-key", "", "PEM file with the public key that verifies bearer tokens (RSA: RS*/PS*, ECDSA: ES*, Ed25519: EdDSA)")
	fs.BoolVar(&c.insecureNoAuth, "insecure-no-auth", false, "serve without tokens on a non-loopback address: anyone who can connect may do anything")
	fs.Var(&c.corsOrigins, "cors-origin", "origin allowed to call the API from a browser, with credentials, e.g. https://app.example.com (repeatable, or comma-separated)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM certificate (chain) file: serve HTTPS and HTTP/2 (with --tls-key)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM private key file for --tls-cert")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: sselog serve [flags]\n\nEvery flag can also be set by environment, as SSELOG_<FLAG> (SSELOG_ADDR, SSELOG_MAX_BODY, ...); flags win.\n\n")
		fs.PrintDefaults()
	}
	return fs, c
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := serveFlags(stderr)
	if err := parseWithEnv(fs, args, os.LookupEnv); err != nil {
		return err
	}
	// Flag parsing stops at the first non-flag, so a stray word would
	// silently drop every flag after it.
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (flags only; see sselog serve -h)", fs.Arg(0))
	}
	logger, err := newLogger(stderr, c.logFormat, c.logLevel)
	if err != nil {
		return err
	}
	// The server's live heap is small (tails, subscriptions) and its
	// garbage is per request: collecting at 5x the live heap instead of 2x
	// costs a few MB and gave a quarter more publish throughput on two
	// cores (see BENCHMARKS.md). GOGC, when set, wins.
	if _, ok := os.LookupEnv("GOGC"); !ok {
		debug.SetGCPercent(defaultGCPercent)
	}
	// The memory limit is set before anything is allocated in earnest. A
	// --memory-limit given (on the command line or as SSELOG_MEMORY_LIMIT)
	// wins over GOMEMLIMIT; GOMEMLIMIT wins over the default.
	if c.memoryLimit != 0 && c.memoryLimit < minMemoryLimit {
		return fmt.Errorf("--memory-limit %s is below %dMiB: the collector would run without pause (0 means no limit)", c.memoryLimit.String(), minMemoryLimit>>20)
	}
	memoryLimitSet := false
	fs.Visit(func(f *flag.Flag) { memoryLimitSet = memoryLimitSet || f.Name == "memory-limit" })
	if _, env := os.LookupEnv("GOMEMLIMIT"); memoryLimitSet || !env {
		limit := int64(c.memoryLimit)
		if limit == 0 {
			limit = math.MaxInt64 // the runtime's "no limit"
		}
		debug.SetMemoryLimit(limit)
	}
	for name, d := range map[string]time.Duration{"retry": c.retry, "heartbeat": c.heartbeat, "write-timeout": c.writeTimeout, "read-timeout": c.readTimeout, "retain-interval": c.retainInterval, "idle-timeout": c.idleTimeout, "shutdown-timeout": c.shutdown} {
		if d <= 0 {
			return fmt.Errorf("--%s must be positive", name)
		}
	}
	if c.shutdown <= closeReserve {
		return fmt.Errorf("--shutdown-timeout must be more than %v", closeReserve)
	}
	if c.bodyMemory < c.maxBody {
		return fmt.Errorf("--max-body-memory %s is less than --max-body %s: no body of the largest size could be accepted", c.bodyMemory.String(), c.maxBody.String())
	}
	if c.pprof != "" && !isLoopback(c.pprof) && !c.insecurePprof {
		return fmt.Errorf("--pprof %s is not a loopback address: the profiler has no authentication and shows the server's memory; listen on 127.0.0.1, or give --insecure-pprof", c.pprof)
	}
	for name, n := range map[string]int{"max-subscribers": c.maxSubscribers, "max-subscribers-per-ip": c.maxSubscribersPerIP, "max-streams": c.maxStreams, "max-connections": c.maxConns} {
		if n < 0 {
			return fmt.Errorf("--%s must not be negative (0 means no limit)", name)
		}
	}
	if c.retainAge < 0 {
		return errors.New("--retain-age must not be negative (0 means no age limit)")
	}
	limits := retention.Limits{MaxAge: c.retainAge, MaxEvents: c.retainEvents, MaxBytes: uint64(c.retainBytes)}
	// Security settings are checked before anything touches the disk.
	verifier, err := loadVerifier(c.jwtSecretFile, c.jwtPublicKey)
	if err != nil {
		return err
	}
	if verifier == nil {
		if err := checkAnonymous(c.addr, c.insecureNoAuth, logger); err != nil {
			return err
		}
	} else if c.insecureNoAuth {
		return errors.New("--insecure-no-auth contradicts --jwt-secret-file or --jwt-public-key: give one or the other")
	}
	origins, err := checkOrigins(c.corsOrigins)
	if err != nil {
		return err
	}
	tlsConfig, err := loadTLS(c.tlsCert, c.tlsKey)
	if err != nil {
		return err
	}

	if dir := filepath.Dir(c.db); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create database directory: %w", err)
		}
	}
	log, err := store.Open(c.db, store.Options{Logger: logger, MaxStreams: c.maxStreams})
	if err != nil {
		return err
	}
	hub := stream.NewHub(log, stream.Options{TailBudget: int(c.tailMemory), ReplayBudget: int(c.replayMemory)})
	handler := httpapi.NewHandler(log, hub, httpapi.Options{
		Logger:       logger,
		Retry:        c.retry,
		Heartbeat:    c.heartbeat,
		WriteTimeout: c.writeTimeout,
		ReadTimeout:  c.readTimeout,
		MaxBody:      int64(c.maxBody),
		BodyMemory:   int64(c.bodyMemory),

		MaxSubscribers:      c.maxSubscribers,
		MaxSubscribersPerIP: c.maxSubscribersPerIP,
		Retention:           limits,
		Auth:                verifier,
		CORSOrigins:         origins,
	})
	worker := retention.New(log, retention.Options{Defaults: limits, Interval: c.retainInterval, Logger: logger})
	workerCtx, stopWorker := context.WithCancel(context.Background())
	workerDone := make(chan struct{})
	go func() {
		defer close(workerDone)
		if err := worker.Run(workerCtx); err != nil {
			logger.Error("retention stopped", "err", err)
		}
	}()

	raw, err := net.Listen("tcp", c.addr)
	if err != nil {
		stopWorker()
		<-workerDone
		log.Close()
		return fmt.Errorf("listen: %w", err)
	}
	// The framing of plain-text HTTP/1.1 is watched for requests with two
	// lengths; under TLS the listener sees only encrypted bytes.
	ln := httpapi.NewListener(raw, httpapi.ListenerOptions{MaxConns: c.maxConns}, tlsConfig == nil)
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       c.idleTimeout,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		ConnContext:       ln.ConnContext,
		// "OPTIONS *" goes to the handler like every other request (see
		// httpapi.Listener).
		DisableGeneralOptionsHandler: true,
		// No WriteTimeout: it would cut every SSE stream. Subscribers get
		// per-write deadlines instead.
	}
	if c.pprof != "" {
		stopProfiling, err := serveProfiling(c.pprof, c.insecurePprof, logger)
		if err != nil {
			stopWorker()
			<-workerDone
			ln.Close()
			log.Close()
			return err
		}
		defer stopProfiling()
	}
	scheme := "http"
	served := make(chan error, 1)
	if tlsConfig != nil {
		// ServeTLS also serves HTTP/2, offered first in NextProtos.
		scheme = "https"
		srv.TLSConfig = tlsConfig
		go func() { served <- srv.ServeTLS(ln, "", "") }()
	} else {
		go func() { served <- srv.Serve(ln) }()
	}
	auth := "none"
	if verifier != nil {
		auth = strings.Join(verifier.Algorithms(), ",")
	}
	logger.Info("serving", "addr", ln.Addr().String(), "scheme", scheme, "auth", auth, "cors_origins", origins, "db", c.db, "last_id", log.LastID(),
		"memory_limit", debug.SetMemoryLimit(-1), "max_connections", c.maxConns, "idle_timeout", c.idleTimeout, "shutdown_timeout", c.shutdown)
	fmt.Fprintf(stdout, "sselog serving on %s://%s\n", scheme, ln.Addr())

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
	}
	logger.Info("shutting down")
	// Streams still running when the time is up are cut, with room left
	// to close the database before the promised exit.
	shutCtx, cancel := context.WithTimeout(context.Background(), c.shutdown-closeReserve)
	defer cancel()
	// Shutdown closes the listener, then runs the hub's Close, and waits
	// for in-flight publishes; it never ends an SSE stream by itself, which
	// is what closing the hub does. Closing the hub only after the listener
	// means no subscriber is answered 503, which EventSource never retries.
	srv.RegisterOnShutdown(hub.Close)
	if err := srv.Shutdown(shutCtx); err != nil {
		logger.Warn("shutdown incomplete", "err", err)
		srv.Close()
	}
	// SSE streams run on connections taken over from the server, which
	// Shutdown does not wait for: each ends after a last retry hint.
	if err := handler.Drain(shutCtx); err != nil {
		logger.Warn("subscribers cut off at the shutdown limit", "err", err)
	}
	// A pass stops between chunks: every trim it committed is whole.
	stopWorker()
	<-workerDone
	if err := log.Close(); err != nil {
		return err
	}
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", serveErr)
	}
	logger.Info("stopped")
	return nil
}

// serveProfiling serves net/http/pprof on its own listener, so that the
// API's router never exposes it.
func serveProfiling(addr string, insecure bool, logger *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	if insecure && !isLoopback(addr) {
		logger.Warn("--insecure-pprof: profiling without authentication on a non-loopback address", "addr", "http://"+ln.Addr().String()+"/debug/pprof/")
	} else {
		logger.Info("profiling", "addr", "http://"+ln.Addr().String()+"/debug/pprof/")
	}
	return func() { srv.Close() }, nil
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
