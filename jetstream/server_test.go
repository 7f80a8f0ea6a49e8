package jetstream

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
)

const testSecret = "0123456789abcdef-test-secret"

// TestServerCluster: three nodes sharing a secret, named from their route
// addresses, form a full mesh (two peers each) with one JetStream meta
// leader that every node follows; a 3-replica stream written through one
// node reads back through another; the secret is never logged.
func TestServerCluster(t *testing.T) {
	t.Parallel()
	nodes, logs := startServerCluster(t, 3, func(_ int, cfg *ServerConfig) { cfg.ClusterSecret = testSecret })

	for _, n := range nodes {
		if u := n.ClientURL(); !strings.HasPrefix(u, "nats://127.0.0.1:") {
			t.Errorf("ClientURL %q, want nats://127.0.0.1:PORT", u)
		}
	}
	js0 := connectJS(t, nodes[0])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js0.CreateStream(ctx, natsjs.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3, Storage: natsjs.FileStorage}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	ack, err := js0.Publish(ctx, "t.a", []byte("hello"))
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	st, err := connectJS(t, nodes[2]).Stream(ctx, "T")
	if err != nil {
		t.Fatalf("stream through another node: %v", err)
	}
	if got := len(st.CachedInfo().Cluster.Replicas) + 1; got != 3 {
		t.Errorf("stream has %d replicas, want 3", got)
	}
	msg, err := st.GetMsg(ctx, ack.Sequence)
	if err != nil || string(msg.Data) != "hello" {
		t.Fatalf("read through another node: %v, %v", msg, err)
	}
	for i, l := range logs {
		l.mustNotContain(t, fmt.Sprintf("node %d", i), testSecret, routePassword(testSecret))
	}
}

// TestServerClusterRefusesIntruder: servers with the cluster's name and
// routes to all its nodes, one without the secret and one with a wrong one
// (at once), are refused on every attempt and read nothing.
func TestServerClusterRefusesIntruder(t *testing.T) {
	t.Parallel()
	nodes, logs := startServerCluster(t, 3, func(_ int, cfg *ServerConfig) { cfg.ClusterSecret = testSecret })
	writeTestStream(t, nodes[0])
	t.Cleanup(func() {
		for i, l := range logs {
			l.mustNotContain(t, fmt.Sprintf("node %d", i), testSecret, routePassword(testSecret))
		}
	})

	for _, tc := range []struct {
		name, secret string
		refusal      func(msg string) bool // tells this intruder's refusals apart
	}{
		{"no secret", "", func(m string) bool { return strings.HasSuffix(m, "authentication error") }},
		{"wrong secret", "fedcba9876543210-wrong-secret", func(m string) bool {
			return strings.HasSuffix(m, `authentication error - User "sselog"`)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			since := time.Now()
			intruder := mustStartServer(t, ServerConfig{
				ClusterName:   "sselog-test",
				ClusterListen: routePorts(t, 1)[0],
				ClusterPeers:  clusterAddrs(nodes),
				ClusterSecret: tc.secret,
				StoreDir:      t.TempDir(),
			})
			waitRefusedTwice(t, logs, since, tc.refusal)
			assertMesh(t, nodes)
			waitNoRoutes(t, intruder)
			if jsz, err := intruder.NATS().Jsz(nil); err != nil || jsz.Meta == nil || jsz.Meta.Leader != "" {
				t.Errorf("intruder's JetStream meta view %+v, %v; want no leader", jsz.Meta, err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if st, err := connectJS(t, intruder).Stream(ctx, "T"); err == nil {
				t.Fatalf("intruder reads stream T: %+v", st.CachedInfo())
			}
		})
	}
}

// TestServerClusterTLS: three nodes with certificates from one CA form a
// cluster over route TLS; a node with the right secret but a certificate
// from another CA is refused at the handshake by every node.
func TestServerClusterTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := newTestCA(t, "cluster CA")
	caFile := writePEM(t, dir, "ca.pem", ca.certPEM)
	nodes, logs := startServerCluster(t, 3, func(i int, cfg *ServerConfig) {
		cfg.ClusterSecret = testSecret
		cfg.ClusterTLSCert, cfg.ClusterTLSKey = ca.issue(t, dir, fmt.Sprintf("node%d", i))
		cfg.ClusterTLSCA = caFile
	})
	writeTestStream(t, nodes[0])

	other := newTestCA(t, "another CA")
	cert, key := other.issue(t, dir, "intruder")
	since := time.Now()
	// The intruder trusts both CAs, so the refusals are the cluster's.
	intruder := mustStartServer(t, ServerConfig{
		ClusterName:    "sselog-test",
		ClusterListen:  routePorts(t, 1)[0],
		ClusterPeers:   clusterAddrs(nodes),
		ClusterSecret:  testSecret,
		ClusterTLSCert: cert, ClusterTLSKey: key,
		ClusterTLSCA: writePEM(t, dir, "both.pem", slices.Concat(other.certPEM, ca.certPEM)),
		StoreDir:     t.TempDir(),
	})
	waitRefusedTwice(t, logs, since, func(m string) bool { return strings.Contains(m, "TLS route handshake error") })
	assertMesh(t, nodes)
	waitNoRoutes(t, intruder)
}

// TestStartServerRefuses: configurations that would expose the log, or that
// cannot work, fail before anything listens.
func TestStartServerRefuses(t *testing.T) {
	t.Parallel()
	port := routePorts(t, 1)[0][len("127.0.0.1:"):]
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cluster := func(listen string) ServerConfig {
		return ServerConfig{ClusterName: "c", ClusterListen: listen, StoreDir: t.TempDir()}
	}
	for _, tc := range []struct {
		name string
		cfg  ServerConfig
		is   error  // errors.Is, or nil
		msg  string // in the message, when is is nil
	}{
		{"routes on all interfaces without secret", cluster("0.0.0.0:" + port), ErrInsecureRoutes, ""},
		{"routes on empty host without secret", cluster(":" + port), ErrInsecureRoutes, ""},
		{"routes on a public address without secret", cluster("192.0.2.1:" + port), ErrInsecureRoutes, ""},
		{"short secret", func() ServerConfig {
			c := cluster("127.0.0.1:" + port)
			c.ClusterSecret = "0123456789abcde" // 15 bytes
			return c
		}(), ErrShortSecret, ""},
		{"client port off loopback", ServerConfig{ClientListen: "0.0.0.0:0", StoreDir: t.TempDir()}, nil, "loopback"},
		{"client port in use", ServerConfig{ClientListen: busy.Addr().String(), StoreDir: t.TempDir()}, nil, "listen"},
		{"no store dir", ServerConfig{}, nil, "store dir"},
		{"negative sync interval", ServerConfig{StoreDir: t.TempDir(), SyncInterval: -time.Second}, nil, "sync"},
		{"cluster without name", ServerConfig{ClusterListen: "127.0.0.1:" + port, StoreDir: t.TempDir()}, nil, "cluster name"},
		{"cluster on port 0", cluster("127.0.0.1:0"), nil, "fixed port"},
		{"peers without cluster listen", ServerConfig{ClusterPeers: []string{"127.0.0.1:" + port}, StoreDir: t.TempDir()}, nil, "cluster"},
		{"partial route TLS", func() ServerConfig {
			c := cluster("127.0.0.1:" + port)
			c.ClusterTLSCert = "cert.pem"
			return c
		}(), nil, "TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			s, err := StartServer(tc.cfg)
			if err == nil {
				s.Shutdown()
				t.Fatal("StartServer succeeded")
			}
			if tc.is != nil && !errors.Is(err, tc.is) || tc.is == nil && !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err %q, want %v %q", err, tc.is, tc.msg)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("refused after %s, want at once", d)
			}
		})
	}
}

// TestServerSingleNode: without ClusterListen a node runs JetStream alone,
// stores and reads, and shuts down (twice, harmlessly).
func TestServerSingleNode(t *testing.T) {
	t.Parallel()
	s, err := StartServer(ServerConfig{StoreDir: filepath.Join(t.TempDir(), "new", "dir")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	if !strings.HasPrefix(s.ClientURL(), "nats://127.0.0.1:") || s.NATS().Name() != "sselog" {
		t.Errorf("ClientURL %q, name %q", s.ClientURL(), s.NATS().Name())
	}
	writeTestStream(t, s)
	s.Shutdown()
	s.Shutdown()
	if s.NATS().Running() {
		t.Error("running after Shutdown")
	}
}

// TestServerSyncInterval: zero sets JetStream's SyncAlways, the field NATS's
// own "sync_interval: always" sets, as the running server reports it; a
// positive interval is passed on as is.
func TestServerSyncInterval(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		interval time.Duration
		always   bool
	}{{0, true}, {5 * time.Second, false}} {
		s := mustStartServer(t, ServerConfig{StoreDir: t.TempDir(), SyncInterval: tc.interval})
		jc := s.NATS().JetStreamConfig()
		if jc == nil || jc.SyncAlways != tc.always || tc.interval != 0 && jc.SyncInterval != tc.interval {
			t.Errorf("SyncInterval %s: JetStream config %+v, want SyncAlways %v", tc.interval, jc, tc.always)
		}
	}
}

// startServerCluster starts n nodes on loopback with fresh storage, named
// from their addresses, edits each config with mod (may be nil), and waits
// for a full mesh and one JetStream meta leader that can place streams on
// all nodes. It returns the nodes and each node's log.
func startServerCluster(t *testing.T, n int, mod func(i int, cfg *ServerConfig)) ([]*Server, []*logRecorder) {
	t.Helper()
	addrs := routePorts(t, n)
	nodes := make([]*Server, n)
	logs := make([]*logRecorder, n)
	for i := range n {
		logs[i] = &logRecorder{}
		cfg := ServerConfig{
			ClusterName:   "sselog-test",
			ClusterListen: addrs[i],
			ClusterPeers:  slices.Delete(slices.Clone(addrs), i, i+1),
			StoreDir:      t.TempDir(),
			Logger:        slog.New(logs[i]),
		}
		if mod != nil {
			mod(i, &cfg)
		}
		nodes[i] = mustStartServer(t, cfg)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for i, l := range logs {
				t.Logf("node %d log:\n%s", i, strings.Join(l.lines(), "\n"))
			}
		}
	})
	waitUntil(t, 20*time.Second, func() error {
		if err := meshError(t, nodes); err != nil {
			return err
		}
		// NATS's own waitOnClusterReady: one meta leader that has stats
		// from every peer (else placement fails), every node current.
		var leaders []string
		for _, s := range nodes {
			if s.NATS().JetStreamIsLeader() {
				leaders = append(leaders, s.NATS().Name())
				if p := s.NATS().JetStreamClusterPeers(); len(p) != n {
					return fmt.Errorf("meta leader %s knows peers %v", s.NATS().Name(), p)
				}
			}
			if !s.NATS().JetStreamIsCurrent() {
				return fmt.Errorf("%s is not current with the meta leader", s.NATS().Name())
			}
		}
		if len(leaders) != 1 {
			return fmt.Errorf("meta leaders %v, want one", leaders)
		}
		return nil
	})
	return nodes, logs
}

// waitRefusedTwice waits until every node has logged a route refusal (an
// error on a route connection that refused says is one) since a time, then
// another one at least NATS's route reconnect delay (1 s) later. An
// intruder dials each of its routes, and dials again at least that long
// after a connection fails: so each node has refused it, and refused it
// again after it retried. A route is registered only after the TLS
// handshake and the CONNECT's credentials pass, so no attempt got further.
// (Counting refusals would not do: one attempt opens several connections at
// once, for the route pool and the system account's pinned route.)
func waitRefusedTwice(t *testing.T, logs []*logRecorder, since time.Time, refused func(msg string) bool) {
	t.Helper()
	waitUntil(t, 15*time.Second, func() error {
		for i, l := range logs {
			ts := l.times(since, func(m string) bool { return strings.Contains(m, " - rid:") && refused(m) })
			if len(ts) < 2 || ts[len(ts)-1].Sub(ts[0]) < time.Second {
				return fmt.Errorf("node %d logged route refusals at %v", i, ts)
			}
		}
		return nil
	})
}

// waitNoRoutes waits until s has no route. A refused dial may count as a
// route on the dialling side until the refusal arrives, so this polls
// rather than sampling once; the nodes' side is what waitRefusedTwice and
// meshError check.
func waitNoRoutes(t *testing.T, s *Server) {
	t.Helper()
	waitUntil(t, 5*time.Second, func() error {
		if p := routePeers(t, s); len(p) != 0 {
			return fmt.Errorf("%s has routes to %v", s.NATS().Name(), p)
		}
		return nil
	})
}

// meshError says how nodes differ from a full mesh: every node routed to
// every other one, and to nothing else.
func meshError(t *testing.T, nodes []*Server) error {
	var names []string
	for _, s := range nodes {
		names = append(names, s.NATS().Name())
	}
	slices.Sort(names)
	for _, s := range nodes {
		want := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == s.NATS().Name() })
		if got := routePeers(t, s); !slices.Equal(got, want) {
			return fmt.Errorf("%s has routes to %v, want %v", s.NATS().Name(), got, want)
		}
	}
	return nil
}

func assertMesh(t *testing.T, nodes []*Server) {
	t.Helper()
	if err := meshError(t, nodes); err != nil {
		t.Error(err)
	}
}

// routePeers lists, sorted, the servers s has routes to. NumRoutes would
// count connections: NATS pools several per peer.
func routePeers(t *testing.T, s *Server) []string {
	t.Helper()
	rz, err := s.NATS().Routez(nil)
	if err != nil {
		t.Fatal(err)
	}
	var peers []string
	for _, r := range rz.Routes {
		if !slices.Contains(peers, r.RemoteName) {
			peers = append(peers, r.RemoteName)
		}
	}
	slices.Sort(peers)
	return peers
}

func clusterAddrs(nodes []*Server) []string {
	var addrs []string
	for _, s := range nodes {
		addrs = append(addrs, s.NATS().ClusterAddr().String())
	}
	return addrs
}

// writeTestStream creates stream T (as many replicas as s has peers plus
// one) and stores one message in it, read back through s.
func writeTestStream(t *testing.T, s *Server) {
	t.Helper()
	js := connectJS(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.CreateStream(ctx, natsjs.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: len(routePeers(t, s)) + 1})
	if err != nil {
		t.Fatalf("create stream: %v", err)
	}
	ack, err := js.Publish(ctx, "t.a", []byte("x"))
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	if m, err := st.GetMsg(ctx, ack.Sequence); err != nil || string(m.Data) != "x" {
		t.Fatalf("read back: %v, %v", m, err)
	}
}

func mustStartServer(t *testing.T, cfg ServerConfig) *Server {
	t.Helper()
	s, err := StartServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

func connectJS(t *testing.T, s *Server) natsjs.JetStream {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := natsjs.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// logRecorder is a slog.Handler that keeps records, safe for NATS's
// goroutines.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Clone())
	return nil
}

func (r *logRecorder) records() []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.recs)
}

func (r *logRecorder) lines() []string {
	var lines []string
	for _, rec := range r.records() {
		lines = append(lines, rec.Level.String()+" "+rec.Message)
	}
	return lines
}

// times lists the times of the messages logged since a time that match.
func (r *logRecorder) times(since time.Time, match func(msg string) bool) []time.Time {
	var ts []time.Time
	for _, rec := range r.records() {
		if !rec.Time.Before(since) && match(rec.Message) {
			ts = append(ts, rec.Time)
		}
	}
	return ts
}

func (r *logRecorder) mustNotContain(t *testing.T, name string, secrets ...string) {
	t.Helper()
	for _, m := range r.lines() {
		for _, s := range secrets {
			if strings.Contains(m, s) {
				t.Errorf("%s logged a secret: %q", name, m)
			}
		}
	}
}

type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue writes a certificate for 127.0.0.1, good as a route's server and
// client, and its key, and returns the two files.
func (ca *testCA) issue(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, dir, name+".pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		writePEM(t, dir, name+"-key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}))
}

func writePEM(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
