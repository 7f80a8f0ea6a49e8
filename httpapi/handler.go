package httpapi

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/mux"

	"github.com/sselog/sselog/httpapi/internal/ssewire"
	"github.com/sselog/sselog/httpapi/internal/ui"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// Defaults for zero Options fields.
const (
	DefaultRetry        = 3 * time.Second
	DefaultHeartbeat    = 15 * time.Second
	DefaultWriteTimeout = 30 * time.Second
	DefaultReadTimeout  = 30 * time.Second
	DefaultMaxBody      = 1 << 20
	DefaultBodyMemory   = 64 << 20
	DefaultHistoryLimit = 100
	MaxHistoryLimit     = 1000
)

// Options configures NewHandler. The zero value is ready to use.
type Options struct {
	// Logger receives request errors. Nil discards them.
	Logger *slog.Logger
	// Retry is the reconnection delay hinted to SSE clients. Zero means
	// DefaultRetry.
	Retry time.Duration
	// Heartbeat is how long an SSE connection may stay silent before a
	// comment line is sent. Zero means DefaultHeartbeat.
	Heartbeat time.Duration
	// WriteTimeout is how long a write to a subscriber may make no progress
	// before the subscriber is disconnected. Zero means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// ReadTimeout bounds how long a publish body may take to arrive. Zero
	// means DefaultReadTimeout.
	ReadTimeout time.Duration
	// MaxBody is the largest publish body accepted, in bytes. Zero means
	// DefaultMaxBody.
	MaxBody int64
	// BodyMemory caps the bytes that the request bodies being read or
	// stored hold together. A body takes its share as its bytes arrive,
	// not as its Content-Length announces, and a request that would take
	// more than is left is answered 503 with Retry-After. Zero means
	// DefaultBodyMemory; below MaxBody it is raised to fit one body of
	// MaxBody.
	BodyMemory int64
	// Retention is the server's default retention, the same value the
	// retention worker is given, shown with each stream's override and
	// merged with it (store.Limits.Apply) as the effective limits. The zero
	// value is no limit.
	Retention store.Limits
	// MaxSubscribers caps the open SSE streams; MaxSubscribersPerIP caps
	// them per client address. A subscriber over a limit is answered 200
	// with only a jittered retry hint, so that EventSource comes back
	// later rather than giving up. Zero means no limit.
	MaxSubscribers      int
	MaxSubscribersPerIP int
	// Auth checks bearer tokens and what they grant (see token.go and
	// auth.go). Nil means no authentication: every request may do
	// everything.
	Auth *Verifier
	// CORSOrigins are the origins ("https://app.example.com") whose
	// browsers may call the API, credentials included. Empty means none:
	// no CORS headers are sent.
	CORSOrigins []string
	// Metrics, when set, is served at GET /metrics, to admin tokens only
	// when Auth is set (see metrics.go).
	Metrics http.Handler
	// ObservePublish, when set, is called with the status of every answer
	// to a publish request, refusals by the token check included. It must
	// not block.
	ObservePublish func(status int)
}

// Log is what the API needs of the event log: *store.Log, or the
// jetstream backend's Log. Reads return bounds from the same read as
// their events; writes return once durable; the sentinel errors are the
// store package's.
type Log interface {
	Append(ctx context.Context, stream string, events []store.Event) ([]store.ID, error)
	AppendOnce(ctx context.Context, stream string, key store.Key, events []store.Event) ([]store.ID, bool, error)
	Scan(stream string, after store.ID, limit int, fn func(*store.Event) error) (store.Bounds, error)
	ScanMerged(sel store.Selection, after store.ID, limit int, fn func(*store.Event) error) (store.MergedBounds, error)
	StartOfLast(stream string, n int) (store.ID, error)
	StartOfLastMerged(sel store.Selection, n int) (store.ID, error)
	LastID() store.ID
	Stream(name string) (store.StreamInfo, error)
	Streams() ([]store.StreamInfo, error)
	DeleteStream(ctx context.Context, stream string) (store.ID, error)
	Policy(stream string) (store.Policy, error)
	SetPolicy(stream string, p store.Policy) error
	DeletePolicy(stream string) error
	IdempotencyWindow() time.Duration
	Backup(w io.Writer, size func(int64)) (int64, error)
	Ping() error
}

// Handler serves the sselog API.
type Handler struct {
	log    Log
	hub    *stream.Hub
	opts   Options
	logger *slog.Logger
	router *mux.Router
	root   http.Handler // router behind the CORS layer
	retry  []byte       // the "retry:" line every stream starts with
	bodies *byteBudget  // bytes held by request bodies in flight

	wire *ssewire.Wire // owns the SSE streams' connections

	slotsMu sync.Mutex
	slots   int            // open SSE streams
	slotsIP map[string]int // open SSE streams per client address
}

// NewHandler returns the API over log, with subscribers followed by hub.
func NewHandler(log Log, hub *stream.Hub, opts Options) *Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Retry <= 0 {
		opts.Retry = DefaultRetry
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = DefaultHeartbeat
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = DefaultReadTimeout
	}
	if opts.MaxBody <= 0 {
		opts.MaxBody = DefaultMaxBody
	}
	if opts.BodyMemory <= 0 {
		opts.BodyMemory = DefaultBodyMemory
	}
	// A body of the largest size must fit, or it could never be accepted.
	opts.BodyMemory = max(opts.BodyMemory, opts.MaxBody+1)
	h := &Handler{log: log, hub: hub, opts: opts, logger: opts.Logger, router: mux.NewRouter(), wire: ssewire.New(opts.WriteTimeout), slotsIP: make(map[string]int)}
	h.bodies = &byteBudget{max: opts.BodyMemory}
	h.retry = []byte("retry: " + strconv.FormatInt(opts.Retry.Milliseconds(), 10) + "\n\n")

	r := h.router
	// Without this, mux answers "/v1/streams/../x" with a bare redirect, and
	// a client that follows it turns a POST into a GET. Uncleaned paths
	// simply match no route.
	r.SkipClean(true)
	r.HandleFunc("/healthz", h.healthz).Methods(http.MethodGet, http.MethodHead)
	if opts.Metrics != nil {
		r.Handle("/metrics", h.authorize(needAdmin, opts.Metrics.ServeHTTP)).Methods(http.MethodGet)
	}
	// Every route but /healthz says what it needs from a token (auth.go).
	r.HandleFunc("/v1/streams", h.authorize(needToken, h.listStreams)).Methods(http.MethodGet)
	// The merged endpoints check the token's grants against their stream
	// parameters themselves (parseSelection).
	r.HandleFunc("/v1/events", h.authorize(needToken, h.mergedSubscribe)).Methods(http.MethodGet)
	r.HandleFunc("/v1/history", h.authorize(needToken, h.mergedHistory)).Methods(http.MethodGet)
	r.HandleFunc("/v1/streams/{stream}/events", h.observePublish(h.authorize(needPublish, h.publish))).Methods(http.MethodPost)
	r.HandleFunc("/v1/streams/{stream}/events", h.authorize(needSubscribe, h.subscribe)).Methods(http.MethodGet)
	r.HandleFunc("/v1/streams/{stream}/history", h.authorize(needSubscribe, h.history)).Methods(http.MethodGet)
	r.HandleFunc("/v1/streams/{stream}", h.authorize(needRead, h.getStream)).Methods(http.MethodGet)
	r.HandleFunc("/v1/streams/{stream}", h.authorize(needAdmin, h.deleteStream)).Methods(http.MethodDelete)
	r.HandleFunc("/v1/streams/{stream}/retention", h.authorize(needRead, h.getRetention)).Methods(http.MethodGet)
	r.HandleFunc("/v1/streams/{stream}/retention", h.authorize(needAdmin, h.putRetention)).Methods(http.MethodPut)
	r.HandleFunc("/v1/streams/{stream}/retention", h.authorize(needAdmin, h.deleteRetention)).Methods(http.MethodDelete)
	r.HandleFunc("/v1/backup", h.authorize(needAdmin, h.backup)).Methods(http.MethodGet)
	// The viewer page: static files that hold no data, so no token; the
	// page's own API calls carry one.
	// A relative Location (http.Redirect would make it absolute), so that
	// it also works behind a proxy's path prefix.
	r.HandleFunc("/ui", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "ui/")
		w.WriteHeader(http.StatusMovedPermanently)
	}).Methods(http.MethodGet, http.MethodHead)
	r.PathPrefix("/ui/").Handler(http.StripPrefix("/ui/", ui.Handler())).Methods(http.MethodGet, http.MethodHead)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.writeError(w, r, errorf(http.StatusNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.writeError(w, r, errorf(http.StatusMethodNotAllowed, "method %s not allowed on %s", r.Method, r.URL.Path))
	})
	// Preflights are answered before the router, which knows no OPTIONS.
	h.root = withCORS(opts.CORSOrigins, r)
	return h
}

// Close ends every SSE stream, each after a last, jittered retry hint, and
// answers streams that arrive later with only such a hint. It does not
// wait: register it with http.Server.RegisterOnShutdown, and Shutdown alone
// ends every stream. Streams then end on their own; Drain waits for them.
func (h *Handler) Close() { h.wire.Close() }

// Drain closes the handler's streams (Close) and waits for those running
// on connections taken over from net/http, which http.Server.Shutdown
// does not wait for. When ctx ends first, it closes their connections and
// returns ctx's error. Call it after Shutdown, before closing the log, for
// a stop in which no stream reads a closed log.
func (h *Handler) Drain(ctx context.Context) error {
	return h.wire.Wait(ctx) // which closes first
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// First, for every request: the verdicts are taken in order.
	if r.ProtoMajor == 1 && ambiguousLength(r.Context()) {
		// RFC 9112 6.1: the connection must not carry another request,
		// since a proxy in front may have framed this one differently.
		w.Header().Set("Connection", "close")
		h.writeError(w, r, errorf(http.StatusBadRequest, "the request's length is ambiguous: it has both Content-Length and Transfer-Encoding, or follows a request whose framing this server could not follow"))
		return
	}
	if r.ProtoMajor == 1 && r.Body != http.NoBody {
		// A body nobody reads is still read by net/http after the answer,
		// without a deadline, before the connection serves another
		// request: a client that announces one and sends nothing would
		// hold its connection, and a --max-connections slot, for good.
		// Over HTTP/1 a deadline set ahead costs nothing (see package watchdog
		// for HTTP/2); net/http sets its own again for the next request.
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(h.opts.ReadTimeout))
	}
	h.root.ServeHTTP(w, r)
}

func (h *Handler) healthz(w http.ResponseWriter, r *http.Request) {
	if err := h.log.Ping(); err != nil {
		h.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (h *Handler) listStreams(w http.ResponseWriter, r *http.Request) {
	streams, err := h.log.Streams()
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	streams = h.visibleStreams(r, streams)
	if streams == nil {
		streams = []store.StreamInfo{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"streams": streams})
}
