package client

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Kinds of failure, matched with errors.Is against an *Error (by its
// status) or against an error the client makes itself before sending
// anything.
var (
	// ErrInvalid is a request the server refuses as malformed (400): an
	// invalid stream name, event, type, id or parameter. The client also
	// returns it, before sending anything, for what it can check itself
	// (no events, data that is not JSON, an unusable From).
	ErrInvalid = errors.New("invalid request")
	// ErrUnauthorized is a missing, expired or invalid token (401).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrForbidden is a token that does not grant the request (403).
	ErrForbidden = errors.New("forbidden")
	// ErrNotFound is a stream or endpoint the server does not have (404).
	ErrNotFound = errors.New("not found")
	// ErrTooLarge is a publish body over the server's --max-body (413):
	// publish fewer or smaller events per call.
	ErrTooLarge = errors.New("request too large")
	// ErrKeyReused is an idempotency key the stream already holds for a
	// different request (422). Publish's own keys are random, so from
	// Publish it means a bug; from PublishWithKey, a key given twice.
	ErrKeyReused = errors.New("idempotency key reused for a different request")
	// ErrUnavailable is a failure a later attempt may not have (408, 429,
	// 500, 502, 503, 504). The client retries these itself; a caller sees
	// one only wrapped with the context's error, when the context ended
	// before an attempt succeeded.
	ErrUnavailable = errors.New("unavailable")
	// ErrProtocol is an answer that is not what an sselog server sends:
	// not JSON, the wrong number of ids, an SSE event without a ULID id.
	// It is not retried.
	ErrProtocol = errors.New("unexpected answer from the server")
)

// Error is an answer with an error status. errors.Is matches it against
// the kind its status stands for (ErrInvalid for 400, ...); a status with
// no kind (405, 415, ...) matches none.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Message is the server's explanation (the "error" field of its JSON
	// answer), or the start of a body that is not sselog's JSON (a proxy's
	// error page).
	Message string
	// RetryAfter is the wait the server asked for with Retry-After, or 0.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// Is reports whether target is the kind of e's status.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrInvalid:
		return e.Status == http.StatusBadRequest
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrForbidden:
		return e.Status == http.StatusForbidden
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrTooLarge:
		return e.Status == http.StatusRequestEntityTooLarge
	case ErrKeyReused:
		return e.Status == http.StatusUnprocessableEntity
	case ErrUnavailable:
		return retryableStatus(e.Status)
	}
	return false
}

// retryableStatus reports whether a later attempt may get another answer.
// 500 is among them: every request the client retries is safe to repeat
// (a publish carries its idempotency key), and during a restart a proxy
// in front of the server may answer 500 as well as 502 or 504.
func retryableStatus(status int) bool {
	switch status {
	case http.StatusRequestTimeout, http.StatusTooManyRequests,
		http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// maxErrorBody bounds what is read of an error answer.
const maxErrorBody = 4 << 10

// responseError reads an error answer into an *Error and closes its body.
func responseError(resp *http.Response, now time.Time) *Error {
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &Error{Status: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), now)}
	var answer struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &answer) == nil && answer.Error != "" {
		e.Message = answer.Error
	} else {
		e.Message = strings.TrimSpace(string(body))
		if e.Message == "" {
			e.Message = "(no explanation)"
		}
	}
	return e
}

// parseRetryAfter reads Retry-After, delay-seconds or an HTTP date (RFC
// 9110 10.2.3), as a wait from now; 0 when absent, unreadable or past.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		// A wait of more than a day is not one to honour literally.
		return time.Duration(min(secs, 86400)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return min(d, 24*time.Hour)
		}
	}
	return 0
}

// retryable reports whether an attempt that failed with err may succeed
// if repeated: an error status that says so, or a failure of the
// connection. A certificate the client does not trust, or an answer that
// is not sselog's, stays as it is however often it is asked for.
func retryable(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return retryableStatus(e.Status)
	}
	if errors.Is(err, ErrProtocol) || errors.Is(err, ErrInvalid) {
		return false
	}
	var (
		verify     *tls.CertificateVerificationError
		unknownCA  x509.UnknownAuthorityError
		hostname   x509.HostnameError
		invalid    x509.CertificateInvalidError
		recordHead tls.RecordHeaderError
	)
	if errors.As(err, &verify) || errors.As(err, &unknownCA) || errors.As(err, &hostname) ||
		errors.As(err, &invalid) || errors.As(err, &recordHead) {
		return false
	}
	return true
}

// retryAfter is the wait an error asks for, or 0.
func retryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}
