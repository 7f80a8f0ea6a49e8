package httpapi

import (
	"context"
	"io"
	"net"
	"sync"
)

// ListenerOptions configures NewListener. The zero value is ready to use.
type ListenerOptions struct {
	// MaxConns caps the connections open at once; Accept waits while the
	// cap is reached, and the kernel's backlog holds the connections
	// arriving meanwhile. Zero means no cap.
	MaxConns int
}

// Listener is the API's listener: it caps the open connections, and it
// watches the HTTP/1.x framing of each plain-text connection for requests
// that announce their body's length twice, which the handler then refuses.
//
// Use it with an http.Server whose ConnContext is the Listener's, and whose
// DisableGeneralOptionsHandler is set (an "OPTIONS *" request would
// otherwise be answered without reaching the handler, and the handler would
// match later requests with the wrong framing). Over TLS the framing is not
// watched: the bytes it would read are encrypted.
type Listener struct {
	net.Listener
	slots     chan struct{} // one per open connection; nil without a cap
	watch     bool
	closed    chan struct{} // closed by Close: a waiting Accept returns
	closeOnce sync.Once
}

// NewListener wraps ln. Pass watch=false when TLS is served on top of it.
func NewListener(ln net.Listener, opts ListenerOptions, watch bool) *Listener {
	l := &Listener{Listener: ln, watch: watch, closed: make(chan struct{})}
	if opts.MaxConns > 0 {
		l.slots = make(chan struct{}, opts.MaxConns)
	}
	return l
}

// Accept waits for a free slot, then for a connection.
func (l *Listener) Accept() (net.Conn, error) {
	if l.slots != nil {
		select {
		case l.slots <- struct{}{}:
		case <-l.closed:
			return nil, net.ErrClosed
		}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		if l.slots != nil {
			<-l.slots
		}
		return nil, err
	}
	wc := &watchedConn{Conn: c, l: l}
	if l.watch {
		wc.framing = &framing{}
	}
	return wc, nil
}

// Close closes the listener; an Accept waiting for a slot returns.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// ConnContext makes a connection known to the handlers of its requests.
func (l *Listener) ConnContext(ctx context.Context, c net.Conn) context.Context {
	if wc, ok := c.(*watchedConn); ok {
		return context.WithValue(ctx, connKey{}, wc)
	}
	return ctx
}

type connKey struct{}

// watchedConn is a connection accepted by a Listener.
type watchedConn struct {
	net.Conn
	l         *Listener
	closeOnce sync.Once
	framing   *framing // nil when not watched
}

func (c *watchedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if c.framing != nil && n > 0 {
		c.framing.feed(b[:n])
	}
	return n, err
}

// RawConn is the connection beneath the wrapper, for the SSE streams that
// take it over (ssewire.RawConner).
func (c *watchedConn) RawConn() net.Conn { return c.Conn }

// ReadFrom and CloseWrite keep what net/http finds on a *net.TCPConn:
// sendfile for bodies copied from files, and the half-close before a
// connection is closed after its answer.
func (c *watchedConn) ReadFrom(r io.Reader) (int64, error) { return io.Copy(c.Conn, r) }

func (c *watchedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *watchedConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		if c.l.slots != nil {
			<-c.l.slots
		}
	})
	return err
}

// ambiguousLength reports whether the request ctx belongs to, on a watched
// connection, announced its body's length with both Content-Length and
// Transfer-Encoding. It must be called once per request, in order: each
// call takes the verdict of the connection's next request.
func ambiguousLength(ctx context.Context) bool {
	c, ok := ctx.Value(connKey{}).(*watchedConn)
	if !ok || c.framing == nil {
		return false
	}
	return c.framing.next()
}
