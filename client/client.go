package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Defaults of the retry pauses (WithBackoff).
const (
	// DefaultMinBackoff is the spread of the pause after a first failure.
	DefaultMinBackoff = 100 * time.Millisecond
	// DefaultMaxBackoff is the most the spread doubles to.
	DefaultMaxBackoff = 10 * time.Second
)

// Client talks to one sselog server. It is safe for concurrent use; build
// one and share it.
type Client struct {
	base       string // scheme://host[/prefix], without a trailing slash
	token      func(context.Context) (string, error)
	hc         *http.Client // for requests that end
	streaming  *http.Client // hc without its Timeout, for SSE
	minBackoff time.Duration
	maxBackoff time.Duration
	now        func() time.Time
}

// Option sets up a Client in New.
type Option func(*Client)

// WithToken sends token as "Authorization: Bearer <token>" with every
// request.
func WithToken(token string) Option {
	return func(c *Client) {
		c.token = func(context.Context) (string, error) { return token, nil }
	}
}

// WithTokenFunc asks fn for the token before every request, SSE
// reconnections included: a long subscription outlives a token (the server
// ends a stream when its token expires), and fn can hand out a fresh one.
// An error from fn is returned as it is, and is not retried.
func WithTokenFunc(fn func(ctx context.Context) (string, error)) Option {
	return func(c *Client) { c.token = fn }
}

// WithHTTPClient sends requests with hc instead of http.DefaultClient.
// Its Timeout, if any, bounds each attempt of a request that ends (a
// publish, a history page); Subscribe uses hc without it, since an SSE
// response is meant to last.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) { c.hc = hc }
}

// WithBackoff sets the pauses between attempts. After the n-th failure in
// a row the client waits for what the server asked (Retry-After, or an SSE
// retry hint), and then a random part of min·2ⁿ⁻¹, capped at max ("full
// jitter"), so that clients that failed together do not come back
// together. Zero values keep DefaultMinBackoff and DefaultMaxBackoff.
func WithBackoff(min, max time.Duration) Option {
	return func(c *Client) {
		if min != 0 {
			c.minBackoff = min
		}
		if max != 0 {
			c.maxBackoff = max
		}
	}
}

// New returns a client of the server at baseURL (http or https, host, and
// optionally a path prefix under which a proxy serves the API).
func New(baseURL string, options ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("%w: base URL %q: want http(s)://host[:port][/prefix], such as http://127.0.0.1:8080", ErrInvalid, baseURL)
	}
	c := &Client{
		base:       strings.TrimSuffix(u.String(), "/"),
		hc:         http.DefaultClient,
		minBackoff: DefaultMinBackoff,
		maxBackoff: DefaultMaxBackoff,
		now:        time.Now,
	}
	for _, o := range options {
		o(c)
	}
	if c.hc == nil {
		return nil, fmt.Errorf("%w: WithHTTPClient(nil)", ErrInvalid)
	}
	if c.minBackoff <= 0 || c.maxBackoff < c.minBackoff {
		return nil, fmt.Errorf("%w: backoff from %v to %v: want 0 < min <= max", ErrInvalid, c.minBackoff, c.maxBackoff)
	}
	streaming := *c.hc
	streaming.Timeout = 0
	c.streaming = &streaming
	return c, nil
}

// streamURL is the URL of a stream's endpoint: "" for the stream itself,
// or "/events", "/history".
func (c *Client) streamURL(stream, endpoint string) string {
	return c.base + "/v1/streams/" + url.PathEscape(stream) + endpoint
}

// newRequest builds a request with the token, if any.
func (c *Client) newRequest(ctx context.Context, method, u string, body []byte) (*http.Request, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if body != nil {
		// The transport may resend the body on a fresh connection; so may
		// the retries, which build a new request from the same bytes.
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != nil {
		tok, err := c.token(ctx)
		if err != nil {
			return nil, fmt.Errorf("token: %w", errFinal{err})
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
	}
	return req, nil
}

// errFinal marks an error that retrying cannot fix although it does not
// look like one (the token function's).
type errFinal struct{ err error }

func (e errFinal) Error() string { return e.err.Error() }
func (e errFinal) Unwrap() error { return e.err }

// pause is how long to wait before the next attempt after failures
// failures in a row (at least 1): floor, which the server asked for, and
// then a random part of the backoff spread.
func (c *Client) pause(floor time.Duration, failures int) time.Duration {
	spread := c.minBackoff
	for i := 1; i < failures && spread < c.maxBackoff; i++ {
		spread *= 2
	}
	return floor + rand.N(min(spread, c.maxBackoff))
}

// sleep waits d, or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// retry runs attempt until it succeeds, fails in a way retrying cannot fix,
// or ctx ends. attempt must be safe to repeat. The error is attempt's, or
// ctx's wrapped together with the last attempt's.
func (c *Client) retry(ctx context.Context, attempt func() error) error {
	var last error
	for failures := 1; ; failures++ {
		err := attempt()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctxError(ctx, last)
		}
		var final errFinal
		if errors.As(err, &final) || !retryable(err) {
			return err
		}
		last = err
		if !sleep(ctx, c.pause(retryAfter(err), failures)) {
			return ctxError(ctx, last)
		}
	}
}

// ctxError is ctx's error, with the last failure before it if there was
// one: both errors.Is(err, context.DeadlineExceeded) and, say,
// errors.Is(err, ErrUnavailable) hold.
func ctxError(ctx context.Context, last error) error {
	if last == nil {
		return ctx.Err()
	}
	return fmt.Errorf("%w (the last attempt: %w)", ctx.Err(), last)
}
