package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
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

// defaultGCPercent is the GOGC the server runs with unless GOGC is set.
const defaultGCPercent = 400

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := loadConfig(args, os.LookupEnv, stderr)
	if err != nil {
		return err
	}
	setRuntimeMemory(c)
	s, err := newService(ctx, c)
	if err != nil {
		return err
	}
	return s.run(ctx, stdout)
}

// setRuntimeMemory tunes the collector for the server. It changes the
// whole process, so it is no part of newService.
func setRuntimeMemory(c *config) {
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
	if _, env := os.LookupEnv("GOMEMLIMIT"); c.memoryLimitSet || !env {
		limit := int64(c.memoryLimit)
		if limit == 0 {
			limit = math.MaxInt64 // the runtime's "no limit"
		}
		debug.SetMemoryLimit(limit)
	}
}

// service is a server built and listening, not yet serving: run serves
// until its context ends, then releases everything.
type service struct {
	c             *config
	log           eventLog
	hub           *stream.Hub
	handler       *httpapi.Handler
	worker        *retention.Worker
	ln            *httpapi.Listener
	srv           *http.Server
	stopProfiling func()       // nil without --pprof
	metricsSrv    *http.Server // nil without --metrics-addr
}

// newService opens the database and listens on c.addr; on an error it
// leaves nothing open.
func newService(ctx context.Context, c *config) (*service, error) {
	if dir := filepath.Dir(c.db); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create database directory: %w", err)
		}
	}
	var m *metrics
	storeOpts := store.Options{Logger: c.logger, MaxStreams: c.maxStreams, IdempotencyWindow: c.idempotencyWindow}
	if c.metrics {
		m = newMetrics()
		storeOpts.ObserveCommit = m.observeCommit
	}
	log, err := openLog(ctx, c, storeOpts)
	if err != nil {
		return nil, err
	}
	s := &service{c: c, log: log}
	s.hub = stream.NewHub(log, stream.Options{TailBudget: int(c.tailMemory), ReplayBudget: int(c.replayMemory)})
	opts := httpapi.Options{
		Logger:       c.logger,
		Retry:        c.retry,
		Heartbeat:    c.heartbeat,
		WriteTimeout: c.writeTimeout,
		ReadTimeout:  c.readTimeout,
		MaxBody:      int64(c.maxBody),
		BodyMemory:   int64(c.bodyMemory),

		MaxSubscribers:      c.maxSubscribers,
		MaxSubscribersPerIP: c.maxSubscribersPerIP,
		Retention:           c.limits,
		Auth:                c.verifier,
		CORSOrigins:         c.origins,
	}
	if m != nil {
		opts.ObservePublish = m.observePublish
		if c.metricsAddr == "" {
			opts.Metrics = m.handler()
		}
	}
	s.handler = httpapi.NewHandler(log, s.hub, opts)
	s.worker = retention.New(log, retention.Options{Defaults: c.limits, Interval: c.retainInterval, Logger: c.logger})
	if m != nil {
		m.watch(log, s.hub, s.handler, s.worker)
	}

	raw, err := net.Listen("tcp", c.addr)
	if err != nil {
		log.Close()
		return nil, fmt.Errorf("listen: %w", err)
	}
	// The framing of plain-text HTTP/1.1 is watched for requests with two
	// lengths; under TLS the listener sees only encrypted bytes.
	s.ln = httpapi.NewListener(raw, httpapi.ListenerOptions{MaxConns: c.maxConns}, c.tls == nil)
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       c.idleTimeout,
		ErrorLog:          slog.NewLogLogger(c.logger.Handler(), slog.LevelWarn),
		ConnContext:       s.ln.ConnContext,
		// "OPTIONS *" goes to the handler like every other request (see
		// httpapi.Listener).
		DisableGeneralOptionsHandler: true,
		// No WriteTimeout: it would cut every SSE stream. Subscribers get
		// per-write deadlines instead.
		TLSConfig: c.tls,
	}
	// Shutdown alone then ends every SSE stream.
	s.srv.RegisterOnShutdown(s.handler.Close)
	if c.pprof != "" {
		if s.stopProfiling, err = serveProfiling(c.pprof, c.insecurePprof, c.logger); err != nil {
			s.ln.Close()
			log.Close()
			return nil, err
		}
	}
	if c.metricsAddr != "" {
		mln, err := net.Listen("tcp", c.metricsAddr)
		if err != nil {
			if s.stopProfiling != nil {
				s.stopProfiling()
			}
			s.ln.Close()
			log.Close()
			return nil, fmt.Errorf("--metrics-addr: %w", err)
		}
		s.metricsSrv = serveMetrics(mln, m.handler())
		c.logger.Info("metrics", "addr", "http://"+mln.Addr().String()+"/metrics")
	}
	return s, nil
}

// run serves until ctx ends or serving fails, then shuts down within
// --shutdown-timeout. It returns nil after a clean stop.
func (s *service) run(ctx context.Context, stdout io.Writer) error {
	c, logger := s.c, s.c.logger
	if s.stopProfiling != nil {
		defer s.stopProfiling()
	}
	if s.metricsSrv != nil {
		defer s.metricsSrv.Close()
	}
	workerCtx, stopWorker := context.WithCancel(context.Background())
	workerDone := make(chan struct{})
	go func() {
		defer close(workerDone)
		if err := s.worker.Run(workerCtx); err != nil {
			logger.Error("retention stopped", "err", err)
		}
	}()

	scheme := "http"
	served := make(chan error, 1)
	if c.tls != nil {
		// ServeTLS also serves HTTP/2, offered first in NextProtos.
		scheme = "https"
		go func() { served <- s.srv.ServeTLS(s.ln, "", "") }()
	} else {
		go func() { served <- s.srv.Serve(s.ln) }()
	}
	auth := "none"
	if c.verifier != nil {
		auth = strings.Join(c.verifier.Algorithms(), ",")
	}
	logger.Info("serving", "addr", s.ln.Addr().String(), "scheme", scheme, "auth", auth, "cors_origins", c.origins, "db", c.db, "last_id", s.log.LastID(),
		"memory_limit", debug.SetMemoryLimit(-1), "max_connections", c.maxConns, "idle_timeout", c.idleTimeout, "shutdown_timeout", c.shutdown)
	fmt.Fprintf(stdout, "sselog serving on %s://%s\n", scheme, s.ln.Addr())

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
	// Shutdown closes the listener, then runs the handler's Close
	// (registered when the server was built), which ends every SSE stream
	// with a last retry hint, and waits for in-flight publishes and HTTP/2
	// streams. Ending the streams only after the listener closed means no
	// subscriber is answered 503, which EventSource never retries.
	if err := s.srv.Shutdown(shutCtx); err != nil {
		logger.Warn("shutdown incomplete", "err", err)
		s.srv.Close()
	}
	// SSE streams run on connections taken over from the server, which
	// Shutdown does not wait for: each ends after a last retry hint.
	if err := s.handler.Drain(shutCtx); err != nil {
		logger.Warn("subscribers cut off at the shutdown limit", "err", err)
	}
	s.hub.Close()
	// A pass stops between chunks: every trim it committed is whole.
	stopWorker()
	<-workerDone
	if err := s.log.Close(); err != nil {
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
