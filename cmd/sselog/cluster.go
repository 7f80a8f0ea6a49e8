package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/jetstream"
	"github.com/sselog/sselog/retention"
	"github.com/sselog/sselog/store"
)

// clusterConfig holds the flags of the jetstream backend.
type clusterConfig struct {
	backend           string
	natsURL           string
	natsCreds         string
	natsDir           string
	natsSync          string
	clusterName       string
	clusterListen     string
	clusterPeers      stringList
	clusterSecretFile string
	clusterTLSCert    string
	clusterTLSKey     string
	clusterTLSCA      string
	replicas          int
}

func clusterFlags(fs *flag.FlagSet, c *clusterConfig) {
	fs.StringVar(&c.backend, "backend", "bbolt", "where the log lives: bbolt (this machine's --db) or jetstream (a NATS JetStream cluster, with --db as this node's local copy)")
	fs.StringVar(&c.natsURL, "nats-url", "", "jetstream: an existing NATS cluster's URLs, comma-separated (nats://h1:4222,nats://h2:4222; tls:// for TLS); empty: run an embedded NATS server")
	fs.StringVar(&c.natsCreds, "nats-creds", "", "jetstream: NATS credentials file for --nats-url")
	fs.StringVar(&c.natsDir, "nats-dir", "", "jetstream: the embedded server's JetStream storage (default: nats/ beside --db)")
	fs.StringVar(&c.natsSync, "nats-sync", "always", "jetstream: the embedded server's fsync: always (each write is fsynced on a majority before it is acknowledged) or an interval such as 1s (faster; a write acknowledged within the interval can be lost if a majority loses power together)")
	fs.StringVar(&c.clusterName, "cluster-name", "", "jetstream: the embedded cluster's name, the same on every node")
	fs.StringVar(&c.clusterListen, "cluster-listen", "", "jetstream: this node's NATS route port, host:port (empty: a single embedded node)")
	fs.Var(&c.clusterPeers, "cluster-peers", "jetstream: the other nodes' route ports, host:port, comma-separated")
	fs.StringVar(&c.clusterSecretFile, "cluster-secret-file", "", "jetstream: file holding the secret every node's routes present (at least 16 bytes; required when --cluster-listen is not loopback)")
	fs.StringVar(&c.clusterTLSCert, "cluster-tls-cert", "", "jetstream: PEM certificate for route TLS (with --cluster-tls-key and --cluster-tls-ca)")
	fs.StringVar(&c.clusterTLSKey, "cluster-tls-key", "", "jetstream: PEM key for --cluster-tls-cert")
	fs.StringVar(&c.clusterTLSCA, "cluster-tls-ca", "", "jetstream: PEM CA that signs every node's route certificate")
	fs.IntVar(&c.replicas, "replicas", 0, "jetstream: copies of the log JetStream keeps (default 3; 1 for a single embedded node)")
}

// checkCluster reports the first cluster flag that does not fit.
func (c *clusterConfig) checkCluster() error {
	switch c.backend {
	case "bbolt":
		// A unit file that forgot --backend jetstream must not run a
		// standalone server beside the cluster, with a log of its own.
		if f := c.jetstreamFlag(); f != "" {
			return fmt.Errorf("%s needs --backend jetstream: with the bbolt backend it would be ignored", f)
		}
		return nil
	case "jetstream":
	default:
		return fmt.Errorf("--backend must be bbolt or jetstream, not %q", c.backend)
	}
	if c.natsURL != "" && (c.clusterListen != "" || len(c.clusterPeers) > 0 || c.clusterName != "") {
		return errors.New("--nats-url joins an existing cluster: it excludes --cluster-listen, --cluster-peers and --cluster-name, which run an embedded one")
	}
	if c.natsCreds != "" && c.natsURL == "" {
		return errors.New("--nats-creds needs --nats-url")
	}
	if c.clusterListen == "" && (len(c.clusterPeers) > 0 || c.clusterName != "") {
		return errors.New("--cluster-peers and --cluster-name need --cluster-listen")
	}
	if c.clusterListen != "" && c.clusterName == "" {
		return errors.New("--cluster-listen needs --cluster-name")
	}
	if c.replicas < 0 || c.replicas > 5 {
		return errors.New("--replicas must be 1 to 5")
	}
	// JetStream refuses a stream with more replicas than servers, and
	// every node would give up after its wait for the stream.
	if nodes := 1 + len(c.clusterPeers); c.natsURL == "" && c.clusterListen == "" && c.replicas > 1 {
		return fmt.Errorf("--replicas %d needs an embedded cluster (--cluster-listen): a single node keeps one copy", c.replicas)
	} else if c.clusterListen != "" && c.replicas > nodes {
		return fmt.Errorf("--replicas %d is more than the cluster's %d nodes (this one and --cluster-peers)", c.replicas, nodes)
	}
	if c.natsSync != "always" {
		if d, err := time.ParseDuration(c.natsSync); err != nil || d <= 0 {
			return fmt.Errorf("--nats-sync must be always or a positive interval, not %q", c.natsSync)
		}
	}
	return nil
}

// jetstreamFlag names the first flag set that only the jetstream backend
// reads, or returns "".
func (c *clusterConfig) jetstreamFlag() string {
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"--nats-url", c.natsURL != ""},
		{"--nats-creds", c.natsCreds != ""},
		{"--nats-dir", c.natsDir != ""},
		{"--nats-sync", c.natsSync != "always"},
		{"--cluster-name", c.clusterName != ""},
		{"--cluster-listen", c.clusterListen != ""},
		{"--cluster-peers", len(c.clusterPeers) > 0},
		{"--cluster-secret-file", c.clusterSecretFile != ""},
		{"--cluster-tls-cert", c.clusterTLSCert != ""},
		{"--cluster-tls-key", c.clusterTLSKey != ""},
		{"--cluster-tls-ca", c.clusterTLSCA != ""},
		{"--replicas", c.replicas != 0},
	} {
		if f.set {
			return f.name
		}
	}
	return ""
}

// eventLog is what the server needs of a backend.
type eventLog interface {
	httpapi.Log
	retention.Log
	OnCommit(fn func([]store.Event))
	OnDelete(fn func(stream string, lowWater store.ID))
	IdempotencyKeys() int
	Path() string
	Close() error
}

// openLog opens the backend c names. For jetstream it starts the embedded
// server (unless --nats-url), connects, and opens the log; close releases
// all of it.
func openLog(ctx context.Context, c *config, opts store.Options) (eventLog, error) {
	if c.backend != "jetstream" {
		return store.Open(c.db, opts)
	}
	var srv *jetstream.Server
	var nc *nats.Conn
	var err error
	replicas := c.replicas
	if c.natsURL != "" {
		var nopts []nats.Option
		if c.natsCreds != "" {
			nopts = append(nopts, nats.UserCredentials(c.natsCreds))
		}
		nopts = append(nopts, nats.Name("sselog"), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
		if nc, err = nats.Connect(c.natsURL, nopts...); err != nil {
			return nil, fmt.Errorf("--nats-url: %w", err)
		}
		if replicas == 0 {
			replicas = jetstream.DefaultReplicas
		}
	} else {
		cfg := jetstream.ServerConfig{
			ClusterName:    c.clusterName,
			ClusterListen:  c.clusterListen,
			ClusterPeers:   c.clusterPeers,
			ClusterTLSCert: c.clusterTLSCert,
			ClusterTLSKey:  c.clusterTLSKey,
			ClusterTLSCA:   c.clusterTLSCA,
			StoreDir:       c.natsDir,
			Logger:         c.logger.With("component", "nats"),
		}
		if cfg.StoreDir == "" {
			cfg.StoreDir = filepath.Join(filepath.Dir(c.db), "nats")
		}
		if c.natsSync != "always" {
			cfg.SyncInterval, _ = time.ParseDuration(c.natsSync)
		}
		if c.clusterSecretFile != "" {
			b, err := os.ReadFile(c.clusterSecretFile)
			if err != nil {
				return nil, fmt.Errorf("--cluster-secret-file: %w", err)
			}
			cfg.ClusterSecret = string(bytes.TrimRight(b, "\r\n"))
		}
		if srv, err = jetstream.StartServer(cfg); err != nil {
			return nil, err
		}
		if nc, err = nats.Connect("", nats.InProcessServer(srv.NATS()), nats.Name("sselog"), nats.MaxReconnects(-1)); err != nil {
			srv.Shutdown()
			return nil, fmt.Errorf("connect to the embedded NATS server: %w", err)
		}
		if replicas == 0 {
			replicas = jetstream.DefaultReplicas
			if c.clusterListen == "" {
				replicas = 1
			}
		}
		c.logger.Info("embedded NATS server", "client_url", srv.ClientURL(), "cluster", c.clusterName, "routes", c.clusterListen, "store", cfg.StoreDir, "sync", c.natsSync)
	}
	// A write's commit is its acknowledgement by the cluster; the local
	// copy's transactions are not counted again.
	observe := opts.ObserveCommit
	opts.ObserveCommit = nil
	// Open waits for the cluster's quorum and for the copy to catch up,
	// which for a rebuilt copy of a long log takes a while.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	l, err := jetstream.Open(ctx, jetstream.Options{
		Conn:          nc,
		Replicas:      replicas,
		Replica:       c.db,
		Store:         opts,
		Logger:        c.logger,
		ObserveCommit: observe,
	})
	if err != nil {
		nc.Close()
		if srv != nil {
			srv.Shutdown()
		}
		return nil, err
	}
	return &clusterLog{Log: l, nc: nc, srv: srv}, nil
}

// clusterLog closes the connection and the embedded server with the log.
type clusterLog struct {
	*jetstream.Log
	nc  *nats.Conn
	srv *jetstream.Server
}

func (l *clusterLog) Close() error {
	err := l.Log.Close()
	l.nc.Close()
	if l.srv != nil {
		l.srv.Shutdown()
	}
	return err
}

// defaultReplicaDB is --db's default with --backend jetstream: the local
// copy never takes the standalone database's place.
var defaultReplicaDB = filepath.Join("data", "replica.db")
