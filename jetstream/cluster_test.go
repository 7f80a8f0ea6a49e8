package jetstream

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sselog/sselog/store"
)

// testCluster is n embedded NATS servers with JetStream, joined by routes
// on loopback, as nats-server's own tests run theirs.
type testCluster struct {
	servers []*Server
	configs []ServerConfig
}

const clusterTestSecret = "a-test-secret-of-enough-bytes"

// routePorts reserves n distinct free loopback ports. The listeners are
// closed before NATS binds them, which leaves a short race with other
// processes; on this machine's loopback that has not bitten.
func routePorts(t testing.TB, n int) []string {
	t.Helper()
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs
}

func startTestCluster(t testing.TB, n int) *testCluster {
	t.Helper()
	c := &testCluster{}
	dir := t.TempDir()
	var routes []string
	if n > 1 {
		routes = routePorts(t, n)
	}
	for i := range n {
		cfg := ServerConfig{Name: fmt.Sprintf("n%d", i), StoreDir: filepath.Join(dir, fmt.Sprintf("n%d", i))}
		if n > 1 {
			cfg.ClusterName = "test"
			cfg.ClusterListen = routes[i]
			cfg.ClusterSecret = clusterTestSecret
			for j, r := range routes {
				if j != i {
					cfg.ClusterPeers = append(cfg.ClusterPeers, r)
				}
			}
		}
		c.configs = append(c.configs, cfg)
	}
	for _, cfg := range c.configs {
		s, err := StartServer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.servers = append(c.servers, s)
		t.Cleanup(s.Shutdown)
	}
	waitUntil(t, 20*time.Second, func() error {
		for _, s := range c.servers {
			if !s.NATS().JetStreamEnabled() {
				return fmt.Errorf("%s: jetstream off", s.NATS().Name())
			}
			// As nats-server's own helper: a meta leader that knows every
			// peer, and every node current with it, or stream placement
			// can still fail.
			if n > 1 && !s.NATS().JetStreamIsCurrent() {
				return fmt.Errorf("%s: not current", s.NATS().Name())
			}
		}
		if n > 1 {
			for _, s := range c.servers {
				if s.NATS().JetStreamIsLeader() {
					if p := s.NATS().JetStreamClusterPeers(); len(p) != n {
						return fmt.Errorf("meta leader knows %d peers", len(p))
					}
					return nil
				}
			}
			return fmt.Errorf("no meta leader")
		}
		return nil
	})
	return c
}

// restart starts server i again with its configuration and storage.
func (c *testCluster) restart(t testing.TB, i int) {
	t.Helper()
	s, err := StartServer(c.configs[i])
	if err != nil {
		t.Fatal(err)
	}
	c.servers[i] = s
	t.Cleanup(s.Shutdown)
}

// streamLeader is the index of the server leading the sselog stream.
func (c *testCluster) streamLeader(stream string) int {
	for i, s := range c.servers {
		if s.NATS().Running() && s.NATS().JetStreamIsStreamLeader("$G", stream) {
			return i
		}
	}
	return -1
}

// connect dials server i, reconnecting forever, as a front-end does.
func connect(t testing.TB, urls ...string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func openTestLog(t testing.TB, nc *nats.Conn, path string, replicas int, mods ...func(*Options)) *Log {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts := Options{Conn: nc, Replica: path, Replicas: replicas, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))}
	for _, mod := range mods {
		mod(&opts)
	}
	l, err := Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// testWriter sends the log's lines to the test's output.
type testWriter struct{ tb testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// waitUntil polls cond until it returns nil, failing the test with its
// last error after timeout.
func waitUntil(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readAll(t testing.TB, l interface {
	Scan(string, store.ID, int, func(*store.Event) error) (store.Bounds, error)
}, stream string) []store.Event {
	t.Helper()
	var out []store.Event
	var after store.ID
	for {
		n := 0
		_, err := l.Scan(stream, after, 500, func(e *store.Event) error {
			out = append(out, store.Event{ID: e.ID, Stream: e.Stream, Type: e.Type, Data: append([]byte(nil), e.Data...)})
			after = e.ID
			n++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return out
		}
	}
}
