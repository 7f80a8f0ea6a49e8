package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
)

// Connection settings of subscriber groups.
const (
	// dialConcurrency bounds the subscriptions being opened at once, so that
	// the server's accept backlog never overflows (a dropped SYN costs a
	// second or more) and the server is not swamped by handshakes.
	dialConcurrency = 64
	// subscriberBuf sizes each of a subscriber's two read buffers: enough
	// for a burst of small events per read, small enough for ten thousand.
	subscriberBuf = 4 << 10
	// fileMargin is the open files needed beyond one per subscriber:
	// standard streams, publishers' connections, the runtime's own.
	fileMargin = 128
)

// group is a set of subscriber connections, each read by its own goroutine.
type group struct {
	mu      sync.Mutex
	conns   []*sseConn
	closing bool
	wg      sync.WaitGroup
	// failed counts subscriptions that could not be opened; firstErr is the
	// first reason.
	failed   atomic.Int64
	errOnce  sync.Once
	firstErr error
}

// openGroup opens n subscriptions, at most dialConcurrency at a time, each
// under the deadline of e.timeout from now: subscriber i to path(i), or to
// e's stream when path is nil. Once subscriber i
// has its retry hint (the server has registered it), read(g, i, c) runs in its
// goroutine and reads c until c fails or the group is closed. openGroup
// returns when every subscription is open or has failed; on any failure
// the group is closed and the first error returned.
func openGroup(ctx context.Context, e *env, n int, path func(i int) string, read func(g *group, i int, c *sseConn)) (*group, error) {
	if err := raiseFileLimit(n + fileMargin); err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	g := &group{conns: make([]*sseConn, 0, n)}
	sem := make(chan struct{}, dialConcurrency)
	var opened sync.WaitGroup
	opened.Add(n)
	for i := range n {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			p := e.t.subscribePath
			if path != nil {
				p = path(i)
			}
			c, err := g.dial(dctx, e, p, sem)
			opened.Done()
			if err != nil {
				g.fail(err)
				return
			}
			read(g, i, c)
		}()
	}
	opened.Wait()
	if f := g.failed.Load(); f > 0 {
		g.close()
		return nil, fmt.Errorf("%d of %d subscriptions failed to open; first: %w", f, n, g.firstErr)
	}
	return g, nil
}

func (g *group) dial(ctx context.Context, e *env, path string, sem chan struct{}) (*sseConn, error) {
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting to connect: %w", ctx.Err())
	}
	c, err := dialSSE(ctx, e.t, path, "", subscriberBuf)
	<-sem
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		c.Close()
		return nil, fmt.Errorf("closed while connecting")
	}
	g.conns = append(g.conns, c)
	return c, nil
}

func (g *group) fail(err error) {
	g.failed.Add(1)
	g.errOnce.Do(func() { g.firstErr = err })
}

// closed reports whether close has begun: a read error after that is the
// tool's doing, not the server's.
func (g *group) closed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closing
}

// close closes every connection and waits for the readers to return.
func (g *group) close() {
	g.mu.Lock()
	g.closing = true
	for _, c := range g.conns {
		c.Close()
	}
	g.mu.Unlock()
	g.wg.Wait()
}
