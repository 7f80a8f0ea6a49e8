package ssewire_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sselog/sselog/httpapi/internal/ssewire"
)

// waitFor bounds every wait on a condition; the tests never sleep.
const waitFor = 10 * time.Second

var (
	first = []byte(": hello\n\nretry: 1000\n\n")
	frame = []byte("id: 1\ndata: x\n\n")
	hint  = []byte("retry: 5000\n\n")
)

// protos are the two ways a stream is carried: taken over (HTTP/1.1) and
// through net/http (HTTP/2).
var protos = []struct {
	name string
	h2   bool
}{
	{"HTTP/1.1", false},
	{"HTTP/2", true},
}

// serve starts a server for h, over TLS with HTTP/2 when h2 is set. Its
// teardown is the production one: the wire is closed, then waited for,
// then the server is closed. Cleanups a test registers later run first.
func serve(t *testing.T, h2 bool, wr *ssewire.Wire, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ReadHeaderTimeout = waitFor
	if h2 {
		srv.EnableHTTP2 = true
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		wr.Close()
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := wr.Wait(ctx); err != nil {
			t.Errorf("Wait at teardown: %v", err)
		}
	})
	return srv
}

// get sends a GET to srv and checks that it was carried as asked.
func get(t *testing.T, srv *httptest.Server, h2 bool) *http.Response {
	t.Helper()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if want := map[bool]int{false: 1, true: 2}[h2]; resp.ProtoMajor != want {
		t.Fatalf("response over %s, want HTTP/%d", resp.Proto, want)
	}
	return resp
}

// recv waits for a value on ch, failing the test after waitFor.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitFor):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// readFull reads exactly len(want) bytes of body and checks them.
func readFull(t *testing.T, body io.Reader, want []byte) {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(body, got); err != nil {
		t.Fatalf("reading %q: %v (read %q)", want, err, got)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %q, want %q", got, want)
	}
}

func checkSSEHeaders(t *testing.T, resp *http.Response) {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status %d, want 200", resp.StatusCode)
	}
	for k, v := range map[string]string{
		"Content-Type":      "text/event-stream",
		"Cache-Control":     "no-cache",
		"X-Accel-Buffering": "no",
	} {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
}

// dialStalled opens an HTTP/1.1 stream at srv from a client with a small
// receive buffer that never reads, so that the server's writes soon block.
func dialStalled(t *testing.T, srv *httptest.Server) {
	t.Helper()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.(*net.TCPConn).SetReadBuffer(4 << 10); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
}

// TestStart: Start answers 200 with the SSE headers (and those the caller
// set), writes first, and calls run exactly once; what run sends follows,
// and the stream ends when run returns.
func TestStart(t *testing.T) {
	for _, p := range protos {
		t.Run(p.name, func(t *testing.T) {
			wr := ssewire.New(waitFor)
			var runs atomic.Int32
			started := make(chan error, 1)
			release := make(chan struct{})
			srv := serve(t, p.h2, wr, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Request-Id", "r1")
				started <- wr.Start(w, r, first, func(s ssewire.Sink) {
					runs.Add(1)
					<-release
					_ = s.Send([][]byte{frame, frame})
				})
			})
			resp := get(t, srv, p.h2)
			checkSSEHeaders(t, resp)
			if got := resp.Header.Get("X-Request-Id"); got != "r1" {
				t.Errorf("X-Request-Id: %q, want the caller's r1", got)
			}
			if !p.h2 {
				if resp.Header.Get("Date") == "" {
					t.Error("no Date header")
				}
			}
			// The first bytes arrive before run sends anything.
			readFull(t, resp.Body, first)
			if !p.h2 {
				// Taken over: Start has returned while run goes on.
				if err := recv(t, started, "Start to return"); err != nil {
					t.Fatalf("Start: %v", err)
				}
			}
			close(release)
			rest, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if want := append(append([]byte(nil), frame...), frame...); !bytes.Equal(rest, want) {
				t.Errorf("after first: %q, want %q", rest, want)
			}
			if p.h2 {
				if err := recv(t, started, "Start to return"); err != nil {
					t.Fatalf("Start: %v", err)
				}
			}
			// The body ended: run has returned, and is not called again.
			if n := runs.Load(); n != 1 {
				t.Errorf("run called %d times, want 1", n)
			}
		})
	}
}

// TestRetryOnly: the answer is 200 with the SSE headers and only the body;
// over HTTP/1.1 it closes the connection, over HTTP/2 it must not.
func TestRetryOnly(t *testing.T) {
	for _, p := range protos {
		t.Run(p.name, func(t *testing.T) {
			wr := ssewire.New(waitFor)
			srv := serve(t, p.h2, wr, func(w http.ResponseWriter, r *http.Request) {
				ssewire.RetryOnly(w, r, hint)
			})
			resp := get(t, srv, p.h2)
			checkSSEHeaders(t, resp)
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(body, hint) {
				t.Errorf("body %q, want only %q", body, hint)
			}
			// net/http's client takes "Connection: close" out of the
			// header and into Close: the answer has a length, so Close
			// is the header's doing.
			if resp.Close != !p.h2 {
				t.Errorf("over %s: closes the connection %v, want %v", resp.Proto, resp.Close, !p.h2)
			}
			if p.h2 {
				return
			}
			// On the wire: the header is there, and the server closes.
			c, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.SetReadDeadline(time.Now().Add(waitFor)); err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			raw, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("the server did not close the connection: %v", err)
			}
			if !bytes.Contains(raw, []byte("\r\nConnection: close\r\n")) || !bytes.HasSuffix(raw, hint) {
				t.Errorf("raw answer %q, want Connection: close and only the hint", raw)
			}
		})
	}
}

// TestClose: Close makes every running stream's Closing true and calls its
// OnGone function, so that it sends a last hint and returns; a Start after
// Close returns ErrClosed without writing, and the caller answers.
func TestClose(t *testing.T) {
	for _, p := range protos {
		t.Run(p.name, func(t *testing.T) {
			const streams = 3
			wr := ssewire.New(waitFor)
			type report struct{ closingBefore, closingAfter, gone bool }
			reports := make(chan report, streams)
			running := make(chan struct{}, streams)
			var runs atomic.Int32
			srv := serve(t, p.h2, wr, func(w http.ResponseWriter, r *http.Request) {
				err := wr.Start(w, r, first, func(s ssewire.Sink) {
					runs.Add(1)
					fired := make(chan struct{}, 1)
					stop := s.OnGone(func() {
						select {
						case fired <- struct{}{}:
						default:
						}
					})
					defer stop()
					before := s.Closing()
					running <- struct{}{}
					select {
					case <-fired:
					case <-time.After(waitFor):
					}
					reports <- report{before, s.Closing(), s.Gone()}
					_ = s.Send([][]byte{hint})
				})
				if errors.Is(err, ssewire.ErrClosed) {
					http.Error(w, "closed", http.StatusServiceUnavailable)
				}
			})
			var bodies []io.Reader
			for range streams {
				resp := get(t, srv, p.h2)
				readFull(t, resp.Body, first)
				bodies = append(bodies, resp.Body)
			}
			for range streams {
				recv(t, running, "the streams to run")
			}

			wr.Close()
			for range streams {
				r := recv(t, reports, "OnGone's function after Close")
				if r.closingBefore || !r.closingAfter || r.gone {
					t.Errorf("Closing before Close %v, after %v; Gone %v: want false, true, false", r.closingBefore, r.closingAfter, r.gone)
				}
			}
			for _, b := range bodies {
				rest, err := io.ReadAll(b)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(rest, hint) {
					t.Errorf("stream ended with %q, want the last hint %q", rest, hint)
				}
			}

			resp := get(t, srv, p.h2)
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusServiceUnavailable || string(body) != "closed\n" {
				t.Errorf("after Close: %d %q, want the caller's 503 %q", resp.StatusCode, body, "closed\n")
			}
			if n := runs.Load(); n != streams {
				t.Errorf("run called %d times, want %d (none after Close)", n, streams)
			}
		})
	}
}

// TestWaitStreamsEnd: Wait returns nil once the taken-over streams have
// ended, and not before.
func TestWaitStreamsEnd(t *testing.T) {
	wr := ssewire.New(waitFor)
	running := make(chan struct{}, 1)
	release := make(chan struct{})
	srv := serve(t, false, wr, func(w http.ResponseWriter, r *http.Request) {
		_ = wr.Start(w, r, first, func(s ssewire.Sink) {
			running <- struct{}{}
			<-release
		})
	})
	resp := get(t, srv, false)
	recv(t, running, "the stream to run")

	waited := make(chan error, 1)
	go func() { waited <- wr.Wait(context.Background()) }()
	// Shutdown does not wait for a taken-over stream: Wait must.
	select {
	case err := <-waited:
		t.Fatalf("Wait returned %v while a stream was running", err)
	default:
	}
	close(release)
	if err := recv(t, waited, "Wait"); err != nil {
		t.Errorf("Wait: %v, want nil", err)
	}
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Errorf("the stream did not end cleanly: %v", err)
	}
}

// TestWaitCutsStalled: when Wait's context ends before a stream does, Wait
// closes the stream's connection, so that its blocked write fails, and
// returns the context's error. The stream ignores Close and would
// otherwise block until the write timeout, a minute away.
func TestWaitCutsStalled(t *testing.T) {
	wr := ssewire.New(time.Minute)
	running := make(chan struct{}, 1)
	ended := make(chan error, 1)
	var sent atomic.Int64
	srv := serve(t, false, wr, func(w http.ResponseWriter, r *http.Request) {
		_ = wr.Start(w, r, first, func(s ssewire.Sink) {
			running <- struct{}{}
			chunk := make([]byte, 64<<10)
			for {
				if err := s.Send([][]byte{chunk}); err != nil {
					ended <- err
					return
				}
				sent.Add(int64(len(chunk)))
			}
		})
	})
	dialStalled(t, srv)
	recv(t, running, "the stream to run")

	wr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	waited := make(chan error, 1)
	begun := time.Now()
	go func() { waited <- wr.Wait(ctx) }()
	if err := recv(t, waited, "Wait"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait: %v, want the context's error", err)
	}
	took := time.Since(begun)
	// Wait waits for the stream to return, so its error is in hand.
	select {
	case err := <-ended:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("the stalled write failed with %v, want its connection closed", err)
		}
	default:
		t.Error("Wait returned before the stream did")
	}
	t.Logf("sent %d KiB before stalling; Wait took %v", sent.Load()>>10, took)
}

// TestGone: a client that goes away makes Gone true and calls OnGone's
// function; the wire is not closing.
func TestGone(t *testing.T) {
	for _, p := range protos {
		t.Run(p.name, func(t *testing.T) {
			wr := ssewire.New(waitFor)
			type report struct{ fired, gone, closing bool }
			reports := make(chan report, 1)
			running := make(chan bool, 1)
			srv := serve(t, p.h2, wr, func(w http.ResponseWriter, r *http.Request) {
				_ = wr.Start(w, r, first, func(s ssewire.Sink) {
					fired := make(chan struct{}, 1)
					stop := s.OnGone(func() {
						select {
						case fired <- struct{}{}:
						default:
						}
					})
					defer stop()
					running <- s.Gone()
					select {
					case <-fired:
						reports <- report{true, s.Gone(), s.Closing()}
					case <-time.After(waitFor):
						reports <- report{false, s.Gone(), s.Closing()}
					}
				})
			})
			resp := get(t, srv, p.h2)
			readFull(t, resp.Body, first)
			if recv(t, running, "the stream to run") {
				t.Fatal("Gone before the client left")
			}
			resp.Body.Close()
			r := recv(t, reports, "the stream's report")
			if !r.fired || !r.gone || r.closing {
				t.Errorf("OnGone called %v, Gone %v, Closing %v: want true, true, false", r.fired, r.gone, r.closing)
			}
		})
	}
}

// TestWriteTimeout: a write that makes no progress for the write timeout
// is cut, no sooner than the timeout after it began.
func TestWriteTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	for _, p := range protos {
		t.Run(p.name, func(t *testing.T) {
			wr := ssewire.New(timeout)
			type result struct {
				err     error
				stalled time.Duration // from the start of the failed Send
				sent    int64
			}
			results := make(chan result, 1)
			srv := serve(t, p.h2, wr, func(w http.ResponseWriter, r *http.Request) {
				_ = wr.Start(w, r, first, func(s ssewire.Sink) {
					chunk := make([]byte, 64<<10)
					var sent int64
					for {
						began := time.Now()
						if err := s.Send([][]byte{chunk}); err != nil {
							results <- result{err, time.Since(began), sent}
							return
						}
						sent += int64(len(chunk))
					}
				})
			})
			if p.h2 {
				// Headers read, body never: flow control stalls the stream.
				get(t, srv, true)
			} else {
				dialStalled(t, srv)
			}
			r := recv(t, results, "the stalled write to be cut")
			if r.stalled < timeout {
				t.Errorf("cut after %v, before the %v timeout", r.stalled, timeout)
			}
			if !p.h2 && !errors.Is(r.err, os.ErrDeadlineExceeded) {
				t.Errorf("cut with %v, want a deadline error", r.err)
			}
			t.Logf("sent %d KiB, then cut after %v: %v", r.sent>>10, r.stalled, r.err)
		})
	}
}
