package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"time"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/retention"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// shutdownTimeout bounds a graceful stop: in-flight publishes finish, SSE
// streams end, the database closes.
const shutdownTimeout = 10 * time.Second

type serveConfig struct {
	addr         string
	db           string
	retry        time.Duration
	heartbeat    time.Duration
	writeTimeout time.Duration
	readTimeout  time.Duration
	maxBody      byteSize
	logLevel     slog.Level
	logFormat    string

	retainAge      time.Duration
	retainEvents   uint64
	retainBytes    byteLimit
	retainInterval time.Duration

	pprof string
}

func serveFlags(stderr io.Writer) (*flag.FlagSet, *serveConfig) {
	c := &serveConfig{maxBody: httpapi.DefaultMaxBody}
	fs := flag.NewFlagSet("sselog serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "listen address")
	fs.StringVar(&c.db, "db", filepath.Join("data", "sselog.db"), "database file (its directory is created)")
	fs.DurationVar(&c.retry, "retry", httpapi.DefaultRetry, "reconnection delay hinted to SSE clients")
	fs.DurationVar(&c.heartbeat, "heartbeat", httpapi.DefaultHeartbeat, "idle time before an SSE comment line is sent")
	fs.DurationVar(&c.writeTimeout, "write-timeout", httpapi.DefaultWriteTimeout, "a subscriber whose writes make no progress this long is disconnected")
	fs.DurationVar(&c.readTimeout, "read-timeout", httpapi.DefaultReadTimeout, "a publish body must arrive within this time")
	fs.Var(&c.maxBody, "max-body", "largest publish body (bytes, or with KiB/MiB/KB/MB)")
	fs.DurationVar(&c.retainAge, "retain-age", retention.DefaultMaxAge, "default retention: events older than this are trimmed (0: no age limit)")
	fs.Uint64Var(&c.retainEvents, "retain-events", 0, "default retention: keep at most this many events per stream (0: no limit)")
	fs.Var(&c.retainBytes, "retain-bytes", "default retention: keep at most this many stored bytes per stream, with KiB/MiB/GiB (0: no limit)")
	fs.DurationVar(&c.retainInterval, "retain-interval", retention.DefaultInterval, "time between retention passes")
	fs.TextVar(&c.logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.pprof, "pprof", "", "serve Go's profiling endpoints (/debug/pprof/) on this address, e.g. 127.0.0.1:6060 (off when empty; never expose it)")
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
	for name, d := range map[string]time.Duration{"retry": c.retry, "heartbeat": c.heartbeat, "write-timeout": c.writeTimeout, "read-timeout": c.readTimeout, "retain-interval": c.retainInterval} {
		if d <= 0 {
			return fmt.Errorf("--%s must be positive", name)
		}
	}
	if c.retainAge < 0 {
		return errors.New("--retain-age must not be negative (0 means no age limit)")
	}
	limits := retention.Limits{MaxAge: c.retainAge, MaxEvents: c.retainEvents, MaxBytes: uint64(c.retainBytes)}

	if dir := filepath.Dir(c.db); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create database directory: %w", err)
		}
	}
	log, err := store.Open(c.db, store.Options{Logger: logger})
	if err != nil {
		return err
	}
	hub := stream.NewHub(log, stream.Options{})
	handler := httpapi.NewHandler(log, hub, httpapi.Options{
		Logger:       logger,
		Retry:        c.retry,
		Heartbeat:    c.heartbeat,
		WriteTimeout: c.writeTimeout,
		ReadTimeout:  c.readTimeout,
		MaxBody:      int64(c.maxBody),
		Retention:    limits,
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

	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		stopWorker()
		<-workerDone
		log.Close()
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		// No WriteTimeout: it would cut every SSE stream. Subscribers get
		// per-write deadlines instead.
	}
	if c.pprof != "" {
		stopProfiling, err := serveProfiling(c.pprof, logger)
		if err != nil {
			stopWorker()
			<-workerDone
			ln.Close()
			log.Close()
			return err
		}
		defer stopProfiling()
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	logger.Info("serving", "addr", ln.Addr().String(), "db", c.db, "last_id", log.LastID())
	fmt.Fprintf(stdout, "sselog serving on http://%s\n", ln.Addr())

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
	}
	logger.Info("shutting down")
	shutCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
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
func serveProfiling(addr string, logger *slog.Logger) (stop func(), err error) {
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
	logger.Info("profiling", "addr", "http://"+ln.Addr().String()+"/debug/pprof/")
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
