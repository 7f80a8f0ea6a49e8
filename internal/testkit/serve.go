package testkit

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// ServeOptions says how Serve builds its server. The zero value serves
// plain HTTP/1.1.
type ServeOptions struct {
	// HTTP2 serves TLS with HTTP/2 enabled; use the server's Client().
	// False serves plain HTTP/1.1.
	HTTP2 bool
	// Config, when not nil, adjusts the http.Server before it starts
	// (ErrorLog, ConnState, RegisterOnShutdown, timeouts). Nil leaves
	// Serve's defaults.
	Config func(*http.Server)
}

// readHeaderTimeout is set on every server, as production does.
const readHeaderTimeout = 10 * time.Second

// Serve serves h on a real loopback listener and closes the server when the
// test ends. A test that needs an orderly teardown (Shutdown, then more)
// registers its own cleanup after calling Serve, so that it runs first.
func Serve(tb testing.TB, h http.Handler, opts ServeOptions) *httptest.Server {
	tb.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ReadHeaderTimeout = readHeaderTimeout
	if opts.Config != nil {
		opts.Config(srv.Config)
	}
	if opts.HTTP2 {
		srv.EnableHTTP2 = true
		srv.StartTLS()
	} else {
		srv.Start()
	}
	tb.Cleanup(srv.Close)
	return srv
}

// Client is an HTTP client for tests: it follows no redirects (they are
// part of what is tested), keeps enough idle connections for concurrent
// publishers, and closes them when the test ends. It has no timeout: SSE
// streams are meant to stay open, so bound requests with a context.
func Client(tb testing.TB) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
