package jetstream

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

const (
	// MinClusterSecretLen is the shortest ClusterSecret StartServer
	// accepts, in bytes. The route port answers every attempt, with no rate
	// limit or lockout, and one right guess reads and writes every stream:
	// the secret must resist online guessing (16 random bytes: 128 bits).
	MinClusterSecretLen = 16
	// serverStartTimeout bounds StartServer's wait for the listeners.
	serverStartTimeout = 10 * time.Second
	// routeUser is the user name routes authenticate with (NATS wants one);
	// the password is derived from the secret.
	routeUser = "sselog"
)

// Errors of StartServer's configuration checks.
var (
	// ErrInsecureRoutes is returned by StartServer for a ClusterListen off
	// loopback without a ClusterSecret: whoever reaches the route port would
	// join the cluster and read and write every stream.
	ErrInsecureRoutes = errors.New("routes off loopback need a cluster secret")
	// ErrShortSecret is returned by StartServer for a ClusterSecret shorter
	// than MinClusterSecretLen bytes.
	ErrShortSecret = errors.New("cluster secret is too short")
)

// ServerConfig configures an embedded NATS server with JetStream.
type ServerConfig struct {
	// Name is this node's server name, unique in the cluster (JetStream's
	// peers are named by it). Empty means the ClusterListen address, with
	// the host name in place of an unspecified host (0.0.0.0), or "sselog"
	// for a single node.
	Name string
	// ClusterName, ClusterListen ("host:port" of this node's route port) and
	// ClusterPeers (the other nodes' route ports) form a cluster; all nodes
	// share ClusterName. ClusterListen empty means a single node without
	// routes; then ClusterName and ClusterPeers must be empty too.
	ClusterName   string
	ClusterListen string
	ClusterPeers  []string
	// ClusterSecret authenticates routes: every node of a cluster must have
	// the same one, of at least MinClusterSecretLen bytes. Required when
	// ClusterListen is not a loopback address (else ErrInsecureRoutes). It
	// is never logged.
	ClusterSecret string
	// ClusterTLSCert, ClusterTLSKey and ClusterTLSCA are PEM files for route
	// TLS (all three or none): each node presents its certificate, and
	// accepts and dials only nodes whose certificate CA signed.
	ClusterTLSCert, ClusterTLSKey, ClusterTLSCA string
	// StoreDir is JetStream's storage directory, created if missing.
	// Required.
	StoreDir string
	// SyncInterval is how often JetStream fsyncs in the background. Zero
	// means "always": every write is fsynced before it is acknowledged.
	SyncInterval time.Duration
	// ClientListen is the client port's "host:port"; it must be a loopback
	// address, since the client port has no authentication. Empty means
	// "127.0.0.1:0"; port 0 means a free port (see ClientURL).
	ClientListen string
	// Logger receives NATS's notices, warnings and errors. Nil discards.
	Logger *slog.Logger
}

// embeddedMaxPayload is the embedded server's largest message, NATS's
// recommended ceiling.
const embeddedMaxPayload = 8 << 20

// Server is a running embedded NATS server.
type Server struct {
	ns *server.Server
}

// StartServer checks cfg, starts the server and waits until its listeners
// accept connections. A clustered node returns before its peers are
// reachable: JetStream elects its meta leader once a quorum has routes.
func StartServer(cfg ServerConfig) (*Server, error) {
	opts, hide, err := serverOptions(cfg)
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	if err := os.MkdirAll(cfg.StoreDir, 0o700); err != nil {
		return nil, fmt.Errorf("nats server: store dir: %w", err)
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	lg := &natsLogger{l: cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)), hide: hide}
	ns.SetLoggerV2(lg, false, false, false)
	ns.Start()

	// NATS reports failures after NewServer (a port in use, JetStream's
	// store) with Fatalf and keeps running: watch for one rather than
	// waiting out the timeout.
	fail := func(err error) (*Server, error) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("nats server: %w", err)
	}
	ready, deadline := false, time.Now().Add(serverStartTimeout)
	for !ready && lg.fatal.Load() == nil && time.Now().Before(deadline) {
		ready = ns.ReadyForConnections(50 * time.Millisecond)
	}
	if msg := lg.fatal.Load(); msg != nil {
		return fail(errors.New(*msg))
	}
	if !ready {
		return fail(fmt.Errorf("not ready after %s", serverStartTimeout))
	}
	if !ns.JetStreamEnabled() {
		return fail(errors.New("jetstream is not enabled"))
	}
	return &Server{ns: ns}, nil
}

// ClientURL is the client port's URL, such as nats://127.0.0.1:4222.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// NATS is the underlying server, for tests and diagnostics.
func (s *Server) NATS() *server.Server { return s.ns }

// Shutdown stops the server and waits until it has stopped. It may be
// called more than once.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// serverOptions checks cfg and turns it into NATS options, with the strings
// the logger must hide.
func serverOptions(cfg ServerConfig) (*server.Options, []string, error) {
	if cfg.StoreDir == "" {
		return nil, nil, errors.New("a store dir is required")
	}
	if cfg.SyncInterval < 0 {
		return nil, nil, fmt.Errorf("negative sync interval %s", cfg.SyncInterval)
	}
	clientListen := cmp.Or(cfg.ClientListen, "127.0.0.1:0")
	chost, cport, err := splitHostPort(clientListen)
	if err != nil {
		return nil, nil, fmt.Errorf("client listen: %w", err)
	}
	if !isLoopback(chost) {
		return nil, nil, fmt.Errorf("client listen %q: not a loopback address (the client port has no authentication)", clientListen)
	}
	if cport == 0 {
		cport = server.RANDOM_PORT // NATS reads port 0 as its default, 4222
	}
	opts := &server.Options{
		ServerName: cfg.Name,
		Host:       chost,
		Port:       cport,
		NoSigs:     true, // signals belong to the program embedding us
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		// The same fields NATS's "sync_interval: always" sets. For
		// replicated streams NATS then fsyncs the Raft log on every write
		// and the stream's own files on flush: acknowledged means fsynced
		// on a quorum either way.
		SyncAlways:             cfg.SyncInterval == 0,
		SyncInterval:           cfg.SyncInterval,
		DisableJetStreamBanner: true,
		// One event is one message: NATS's default of 1 MiB would refuse
		// an event of sselog's default --max-body with its headers.
		MaxPayload: embeddedMaxPayload,
	}
	if cfg.ClusterListen == "" {
		if cfg.ClusterName+cfg.ClusterSecret+cfg.ClusterTLSCert+cfg.ClusterTLSKey+cfg.ClusterTLSCA != "" || len(cfg.ClusterPeers) > 0 {
			return nil, nil, errors.New("cluster settings without a cluster listen address")
		}
		opts.ServerName = cmp.Or(opts.ServerName, "sselog")
		return opts, nil, nil
	}
	hide, err := clusterOptions(cfg, opts)
	return opts, hide, err
}

// clusterOptions fills in opts's routes from cfg.
func clusterOptions(cfg ServerConfig, opts *server.Options) ([]string, error) {
	host, port, err := splitHostPort(cfg.ClusterListen)
	if err != nil {
		return nil, fmt.Errorf("cluster listen: %w", err)
	}
	if port == 0 {
		return nil, fmt.Errorf("cluster listen %q: a fixed port is required, as the peers dial it", cfg.ClusterListen)
	}
	if cfg.ClusterName == "" {
		return nil, errors.New("a cluster name is required with a cluster listen address")
	}
	switch {
	case cfg.ClusterSecret == "" && !isLoopback(host):
		return nil, fmt.Errorf("cluster listen %q: %w", cfg.ClusterListen, ErrInsecureRoutes)
	case cfg.ClusterSecret != "" && len(cfg.ClusterSecret) < MinClusterSecretLen:
		return nil, fmt.Errorf("%w: %d bytes, need %d", ErrShortSecret, len(cfg.ClusterSecret), MinClusterSecretLen)
	}
	unspecified := host == "" || net.ParseIP(host).IsUnspecified()
	if opts.ServerName == "" {
		h := host
		if unspecified {
			if h, err = os.Hostname(); err != nil {
				return nil, fmt.Errorf("server name: %w", err)
			}
		}
		opts.ServerName = net.JoinHostPort(h, strconv.Itoa(port))
	}
	// NoAdvertise: clients of this node (sselog itself) must stay on it,
	// not learn other nodes' loopback client ports.
	opts.Cluster = server.ClusterOpts{Name: cfg.ClusterName, Host: host, Port: port, NoAdvertise: true}

	// NATS sizes JetStream's first meta group from the number of routes
	// (each duplicate counts). A route to this node itself, as NATS's own
	// examples list, made a fresh cluster of three with two nodes up elect
	// no meta leader (measured: none in 40 s; without it, 0.6 s), so only
	// the peers are listed.
	peers := slices.Clone(cfg.ClusterPeers)
	slices.Sort(peers)
	peers = slices.Compact(peers)
	var user *url.Userinfo
	var hide []string
	if cfg.ClusterSecret != "" {
		pass := routePassword(cfg.ClusterSecret)
		opts.Cluster.Username, opts.Cluster.Password = routeUser, pass
		user = url.UserPassword(routeUser, pass)
		hide = []string{cfg.ClusterSecret, pass}
	}
	for _, p := range peers {
		if _, _, err := splitHostPort(p); err != nil {
			return nil, fmt.Errorf("cluster peer: %w", err)
		}
		opts.Routes = append(opts.Routes, &url.URL{Scheme: "nats-route", Host: p, User: user})
	}

	if cfg.ClusterTLSCert+cfg.ClusterTLSKey+cfg.ClusterTLSCA != "" {
		if cfg.ClusterTLSCert == "" || cfg.ClusterTLSKey == "" || cfg.ClusterTLSCA == "" {
			return nil, errors.New("route TLS needs a certificate, a key and a CA, or none")
		}
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
			CertFile: cfg.ClusterTLSCert, KeyFile: cfg.ClusterTLSKey, CaFile: cfg.ClusterTLSCA,
			Verify: true, MinVersion: tls.VersionTLS13,
		})
		if err != nil {
			return nil, fmt.Errorf("route TLS: %w", err)
		}
		// As NATS does for a cluster's tls block: a node is both the server
		// and the client of its routes, so the CA verifies both directions.
		tc.ClientAuth = tls.RequireAndVerifyClientCert
		tc.RootCAs = tc.ClientCAs
		opts.Cluster.TLSConfig = tc
	}
	return hide, nil
}

// routePassword derives the routes' password from the secret, so that NATS
// never holds the secret itself, and never takes it for a bcrypt hash (NATS
// compares a password starting with "$2" as one).
func routePassword(secret string) string {
	sum := sha256.Sum256([]byte("sselog route password\x00" + secret))
	return hex.EncodeToString(sum[:])
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("address %q: bad port", addr)
	}
	return host, port, nil
}

func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || ip != nil && ip.IsLoopback()
}

// natsLogger maps NATS's logger onto slog. Debug and trace stay off: they
// include protocol traffic.
type natsLogger struct {
	l     *slog.Logger
	hide  []string               // replaced in every message, in case NATS ever prints them
	fatal atomic.Pointer[string] // the first Fatalf, for StartServer
}

func (n *natsLogger) log(level slog.Level, format string, v []any) string {
	msg := fmt.Sprintf(format, v...)
	for _, h := range n.hide {
		msg = strings.ReplaceAll(msg, h, "[REDACTED]")
	}
	n.l.Log(context.Background(), level, msg)
	return msg
}

func (n *natsLogger) Noticef(format string, v ...any) { n.log(slog.LevelInfo, format, v) }
func (n *natsLogger) Warnf(format string, v ...any)   { n.log(slog.LevelWarn, format, v) }
func (n *natsLogger) Errorf(format string, v ...any)  { n.log(slog.LevelError, format, v) }
func (n *natsLogger) Debugf(string, ...any)           {}
func (n *natsLogger) Tracef(string, ...any)           {}

// Fatalf must not exit as NATS's own logger does: the server reports, and
// StartServer returns the error.
func (n *natsLogger) Fatalf(format string, v ...any) {
	msg := n.log(slog.LevelError, format, v)
	n.fatal.CompareAndSwap(nil, &msg)
}
