package jetstream

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/sselog/sselog/store"
)

// TestPingWithoutQuorum: a node cut off from the stream's quorum fails its
// health check (GET /healthz answers 503), and passes it again, and
// writes, once the quorum is back.
func TestPingWithoutQuorum(t *testing.T) {
	c := startTestCluster(t, 3)
	l := openTestLog(t, connect(t, c.servers[0].ClientURL()), filepath.Join(t.TempDir(), "r.db"), 3)
	if err := l.Ping(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(t.Context(), "h", []store.Event{{Data: []byte("1")}}); err != nil {
		t.Fatal(err)
	}
	c.servers[1].Shutdown()
	c.servers[2].Shutdown()
	waitUntil(t, 30*time.Second, func() error {
		if err := l.Ping(); !errors.Is(err, store.ErrUnavailable) {
			return fmt.Errorf("ping with one node of three: %v", err)
		}
		return nil
	})
	c.restart(t, 1)
	c.restart(t, 2)
	waitUntil(t, 30*time.Second, func() error { return l.Ping() })
	waitUntil(t, 30*time.Second, func() error {
		_, err := l.Append(t.Context(), "h", []store.Event{{Data: []byte("2")}})
		return err
	})
}
