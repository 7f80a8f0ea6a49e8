package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/sselog/sselog/httpapi/internal/eventjson"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// requestError is an error about the request itself, with the status that
// says so.
type requestError struct {
	status int
	msg    string
}

func (e *requestError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &requestError{status: status, msg: fmt.Sprintf(format, args...)}
}

// errorStatus is the one place errors become HTTP statuses, with the
// message a client is shown for them.
//
// A 4xx message describes the request, and is the error's own text. A 5xx
// message is a fixed sentence: the error's text may name files or carry an
// operating-system error, which belong in the log only.
func errorStatus(err error) (status int, public string) {
	var re *requestError
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &re):
		// Written for the client by this package, whatever its status.
		return re.status, re.msg
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", tooBig.Limit)
	case errors.Is(err, store.ErrInvalidStream),
		errors.Is(err, store.ErrInvalidEvent),
		errors.Is(err, store.ErrEmptyBatch),
		errors.Is(err, store.ErrInvalidID),
		errors.Is(err, store.ErrInvalidPolicy),
		errors.Is(err, store.ErrInvalidKey),
		errors.Is(err, eventjson.ErrMalformed):
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, ErrNoToken), errors.Is(err, ErrInvalidToken):
		return http.StatusUnauthorized, err.Error()
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden, err.Error()
	case errors.Is(err, store.ErrKeyReused):
		return http.StatusUnprocessableEntity, err.Error()
	case errors.Is(err, store.ErrStreamNotFound):
		return http.StatusNotFound, err.Error()
	case errors.Is(err, store.ErrTooManyStreams):
		return http.StatusTooManyRequests, err.Error()
	case errors.Is(err, store.ErrBatchTooLarge):
		return http.StatusRequestEntityTooLarge, err.Error()
	case errors.Is(err, store.ErrUnsupported):
		return http.StatusNotImplemented, "not available with the jetstream backend: back a cluster up with JetStream's snapshots (nats stream backup SSELOG DIR); see the README"
	case errors.Is(err, store.ErrUnavailable):
		// The write may or may not be stored: a retry with the same
		// Idempotency-Key stores it once.
		return http.StatusServiceUnavailable, "the cluster is unavailable, or this node is catching up with it; retry (a publish may or may not be stored: retry it with the same Idempotency-Key)"
	case errors.Is(err, store.ErrClosed), errors.Is(err, stream.ErrClosed):
		return http.StatusServiceUnavailable, "the server is shutting down; retry later"
	case errors.Is(err, store.ErrWrite):
		// The disk failed, not the request: nothing was stored, and a
		// retry may succeed once space is freed.
		return http.StatusServiceUnavailable, "the database could not store the events (nothing was stored); retry later"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		// The client went away or gave up; the answer is for the log only.
		return http.StatusServiceUnavailable, "the request was cancelled"
	default:
		return http.StatusInternalServerError, "internal error"
	}
}

// writeError answers with err's status and a JSON body {"error": "..."}.
// Server faults are logged with their detail, which the client is not
// shown.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := errorStatus(err)
	switch {
	case errors.Is(err, context.Canceled):
		h.logger.Debug("client gone before the answer", "method", r.Method, "path", r.URL.Path, "err", err)
	case errors.Is(err, store.ErrWrite):
		// The store logs the failed commit once, for all its requests.
		h.logger.Debug("request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	case status >= 500:
		h.logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	// RFC 6750 3: the challenge says which token problem it is.
	switch {
	case errors.Is(err, ErrInvalidToken):
		w.Header().Set("WWW-Authenticate", `Bearer realm="sselog", error="invalid_token"`)
	case errors.Is(err, ErrNoToken):
		w.Header().Set("WWW-Authenticate", `Bearer realm="sselog"`)
	case errors.Is(err, ErrForbidden):
		w.Header().Set("WWW-Authenticate", `Bearer realm="sselog", error="insufficient_scope"`)
	}
	writeJSON(w, status, map[string]string{"error": msg})
}

// writeJSON answers with v as JSON. Event data is sent as it is stored,
// as SSE sends it: without encoding/json's HTML escaping of "<", ">" and
// "&", which would hand a history reader other bytes than a subscriber
// for the same event. The answer is never a page: nosniff keeps a browser
// from taking it for one.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}
