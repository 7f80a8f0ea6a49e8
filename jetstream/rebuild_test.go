package jetstream

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sselog/sselog/store"
)

// TestRebuildReplica: a node that lost its local copy rebuilds it from the
// cluster, and the rebuilt copy tells clients what the first one did:
// trims and deletions keep their low-water marks although JetStream no
// longer holds the events they removed, and overrides survive.
func TestRebuildReplica(t *testing.T) {
	c := startTestCluster(t, 1)
	nc := connect(t, c.servers[0].ClientURL())
	path := filepath.Join(t.TempDir(), "replica.db")
	l := openTestLog(t, nc, path, 1, func(o *Options) { o.ReclaimDelay = time.Millisecond })
	ctx := context.Background()
	var kept []store.ID
	for i := range 30 {
		ids, err := l.Append(ctx, "keep", []store.Event{{Data: []byte{'0' + byte(i%10)}}})
		if err != nil {
			t.Fatal(err)
		}
		kept = append(kept, ids...)
		if _, err := l.Append(ctx, "gone", []store.Event{{Data: []byte("1")}}); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := l.Trim("keep", store.Cut{MaxEvents: 10}, 1000)
	if err != nil || tr.Events != 20 || tr.LowWater != kept[19] {
		t.Fatalf("trim: %+v, %v", tr, err)
	}
	if _, err := l.Trim("keep", store.Cut{MaxEvents: 10}, 1000); err != nil {
		t.Fatal(err)
	}
	lw, err := l.DeleteStream(ctx, "gone")
	if err != nil {
		t.Fatal(err)
	}
	age := time.Hour
	if err := l.SetPolicy("keep", store.Policy{MaxAge: &age}); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, l)
	// JetStream holds only what the copies need: the retained events, the
	// message holding the low-water mark (it might hold retained events
	// too), and the newest control message of each kind per stream.
	var info *jetstream.StreamInfo
	waitUntil(t, 10*time.Second, func() error {
		var err error
		if info, err = l.stream.Info(ctx); err != nil {
			return err
		}
		if info.State.Msgs != 10+1+1+1+1 {
			return fmt.Errorf("JetStream holds %d messages, want 14 (10 events, the mark's, a trim, a deletion, and the policy: %+v)", info.State.Msgs, info.State)
		}
		return nil
	})
	l.Close()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	l2 := openTestLog(t, nc, path, 1)
	waitUntil(t, 10*time.Second, func() error {
		if l2.Position() < info.State.LastSeq {
			return fmt.Errorf("rebuilt copy at %d, want %d", l2.Position(), info.State.LastSeq)
		}
		return nil
	})
	after := snapshot(t, l2)
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("rebuilt copy differs:\nbefore %+v\nafter  %+v", before, after)
	}
	b, err := l2.Scan("gone", store.ID{}, 10, func(*store.Event) error { return nil })
	if err != nil || !b.Deleted || b.LowWater != lw || b.Newest.Compare(lw) < 0 {
		t.Fatalf("rebuilt tombstone: %+v, %v (want low water %s)", b, err, lw)
	}
}

type copySnapshot struct {
	Streams  []store.StreamInfo
	Policies map[string]store.Policy
	Events   []store.Event
	Bounds   store.Bounds
}

func snapshot(t *testing.T, l *Log) copySnapshot {
	t.Helper()
	var s copySnapshot
	var err error
	if s.Streams, err = l.Streams(); err != nil {
		t.Fatal(err)
	}
	if s.Policies, err = l.Policies(); err != nil {
		t.Fatal(err)
	}
	s.Events = readAll(t, l, "keep")
	s.Bounds, err = l.Scan("keep", store.ID{}, 1, func(*store.Event) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	return s
}
