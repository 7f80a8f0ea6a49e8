package jetstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// TestLaggingCopyGetsTrimInOrder: a trim decided on node A while node C's
// applier is a little behind. Were the JetStream messages below the mark
// purged at once, C would never read them, apply the retained ones before
// the trim record, and hand a subscriber caught up at e0 the events e2 and
// e3 with no reset: e1 lost to it silently. The storage is reclaimed only
// after ReclaimDelay, so C reads e1 and the record in order.
func TestLaggingCopyGetsTrimInOrder(t *testing.T) {
	c := startTestCluster(t, 3)
	dir := t.TempDir()
	a := openTestLog(t, connect(t, c.servers[0].ClientURL()), filepath.Join(dir, "a.db"), 3)
	cl := openTestLog(t, connect(t, c.servers[1].ClientURL()), filepath.Join(dir, "c.db"), 3)
	hub := stream.NewHub(cl, stream.Options{})
	t.Cleanup(hub.Close)

	blocked, release := make(chan struct{}), make(chan struct{})
	var once, released sync.Once
	// A failing check must not leave C's applier blocked: Close waits for it.
	defer released.Do(func() { close(release) })
	// Registered after the hub's hook: the hub has e0 when this blocks C's
	// applier (a slow disk, a GC pause, a busy node).
	cl.local.OnCommit(func(evs []store.Event) {
		for _, e := range evs {
			if string(e.Data) == `"e0"` {
				once.Do(func() { close(blocked) })
				<-release
			}
		}
	})
	ctx := context.Background()
	ids := map[string]store.ID{}
	app := func(name string) {
		got, err := a.Append(ctx, "s", []store.Event{{Data: []byte(`"` + name + `"`)}})
		if err != nil {
			t.Fatal(err)
		}
		ids[name] = got[0]
	}
	app("e0")
	<-blocked
	sub, err := hub.SubscribeAfter("s", ids["e0"])
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if frames, _, err := sub.Next(); err != nil || len(frames) != 0 {
		t.Fatalf("caught up at e0: %q %v", frames, err)
	}
	app("e1")
	app("e2")
	app("e3")
	tr, err := a.Trim("s", store.Cut{MaxEvents: 1}, 100)
	if err != nil || tr.LowWater != ids["e2"] {
		t.Fatalf("trim: %+v %v", tr, err)
	}
	// The trim's storage is reclaimed only after ReclaimDelay: C, behind,
	// still reads e1 and the trim record in order.
	if _, err := a.stream.GetMsg(ctx, idSeq(ids["e1"])); err != nil {
		t.Fatalf("e1's message was purged at once: %v", err)
	}
	t.Logf("A trimmed up to e2; C is at %d (e0 at %d)", cl.Position(), idSeq(ids["e0"]))
	released.Do(func() { close(release) })

	var got []string
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && !strings.Contains(strings.Join(got, ""), `"e3"`) {
		frames, wake, err := sub.Next()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range frames {
			got = append(got, string(f))
		}
		if wake != nil {
			select {
			case <-wake:
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	all := strings.Join(got, "")
	t.Logf("subscriber on C after e0 was handed:\n%s", all)
	if !strings.Contains(all, `"e1"`) && !strings.Contains(all, "event: reset") {
		t.Fatalf("e1 was neither delivered nor announced by a reset: a silent gap")
	}
}

// TestCopyAheadOfStreamRefused: a restore of an older snapshot, or a
// relaxed sync that loses a tail, leaves the JetStream stream (same epoch)
// behind a node's copy. Accepted, the copy would take every write of that
// node for a conflict and skip the other nodes' new messages (their
// sequences at or below its position): it would silently diverge. Open
// refuses it.
func TestCopyAheadOfStreamRefused(t *testing.T) {
	c := startTestCluster(t, 1)
	nc := connect(t, c.servers[0].ClientURL())
	dir := t.TempDir()
	pathA := filepath.Join(dir, "a.db")
	ctx := context.Background()
	a := openTestLog(t, nc, pathA, 1)
	for i := range 5 {
		if _, err := a.Append(ctx, "s", []store.Event{{Data: []byte(strconv.Itoa(i))}}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := a.stream.CachedInfo().Config
	a.Close()
	// The stream restored from a snapshot taken before those writes: same
	// config, same epoch, fewer messages.
	js, _ := jetstream.New(nc)
	if err := js.DeleteStream(ctx, cfg.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	a, err := Open(octx, Options{Conn: nc, Replica: pathA, Replicas: 1, Timeout: 2 * time.Second, Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Logf("Open refused the copy that is ahead (good): %v", err)
		return
	}
	t.Cleanup(func() { a.Close() })
	b := openTestLog(t, nc, filepath.Join(dir, "b.db"), 1)
	bids, err := b.Append(ctx, "s", []store.Event{{Data: []byte("from-b")}})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	var problems []string
	if _, err := a.Append(ctx, "s", []store.Event{{Data: []byte("from-a")}}); err != nil {
		problems = append(problems, fmt.Sprintf("A's write: %v", err))
	}
	found := false
	for _, e := range readAll(t, a, "s") {
		if e.ID == bids[0] {
			found = true
		}
	}
	if !found {
		problems = append(problems, fmt.Sprintf("A's copy (position %d) never applied B's event %s at seq %d", a.Position(), bids[0], idSeq(bids[0])))
	}
	if len(problems) > 0 {
		t.Fatal(strings.Join(problems, "; "))
	}
}

// TestSameKeyGroupOverStreamLimit: two requests with one key to a new
// stream in one group, the stream limit reached: both are refused as a
// standalone log refuses them, and neither is answered without ids (the
// HTTP handler indexes ids[0]).
func TestSameKeyGroupOverStreamLimit(t *testing.T) {
	c := startTestCluster(t, 1)
	nc := connect(t, c.servers[0].ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := Open(ctx, Options{Conn: nc, Replica: filepath.Join(t.TempDir(), "a.db"), Replicas: 1, Store: store.Options{MaxStreams: 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if _, err := l.Append(ctx, "x", []store.Event{{Data: []byte("1")}}); err != nil {
		t.Fatal(err)
	}
	key := store.Key{Name: "k"}
	var group []*op
	for range 2 {
		o, err := l.newAppend("new", []store.Event{{Data: []byte("1")}})
		if err != nil {
			t.Fatal(err)
		}
		k := key
		o.key = &k
		o.done = make(chan struct{})
		group = append(group, o)
	}
	// What the writer does with a group it collected (the writer goroutine
	// is idle: nothing else is queued).
	if l.write(group) {
		t.Fatal("group sent")
	}
	for i, o := range group {
		t.Logf("request %d: ids %v err %v", i, o.ids, o.err)
	}
	if group[1].err == nil && len(group[1].ids) == 0 {
		t.Fatal("the second request is answered with no ids and no error")
	}
}

// TestCloseStopsEverything: Close while writers are busy answers
// every caller and leaves no goroutine of the Log behind.
func TestCloseStopsEverything(t *testing.T) {
	c := startTestCluster(t, 1)
	nc := connect(t, c.servers[0].ClientURL())
	l := openTestLog(t, nc, filepath.Join(t.TempDir(), "a.db"), 1)
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				var err error
				if i%7 == 3 {
					_, err = l.Trim("s", store.Cut{MaxEvents: 5}, 10)
				} else {
					_, _, err = l.AppendOnce(ctx, "s", store.Key{Name: fmt.Sprintf("k%d-%d", w, i)}, []store.Event{{Data: []byte("x")}})
				}
				if err != nil {
					return
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	l.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("callers still waiting 10s after Close")
	}
	time.Sleep(200 * time.Millisecond)
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	for _, g := range strings.Split(string(buf[:n]), "\n\n") {
		if strings.Contains(g, "sselog/jetstream.(*Log)") {
			t.Errorf("left behind:\n%s", g)
		}
	}
}

// TestResumeOnCopyBehind: a client resuming on node B with an id written
// through node A a moment ago is held until B's copy has it; if the copy
// is still behind after resumeWait, the read fails with ErrUnavailable
// (503: the client retries), never with a foreign position (a false
// "unknown" reset).
func TestResumeOnCopyBehind(t *testing.T) {
	c := startTestCluster(t, 3)
	dir := t.TempDir()
	a := openTestLog(t, connect(t, c.servers[0].ClientURL()), filepath.Join(dir, "a.db"), 3)
	b := openTestLog(t, connect(t, c.servers[1].ClientURL()), filepath.Join(dir, "b.db"), 3)
	hold := make(chan struct{})
	b.local.OnCommit(func([]store.Event) { <-hold })
	var release sync.Once
	// Close waits for the applier: a failing check must not leave it held.
	defer release.Do(func() { close(hold) })
	// B's applier stops inside its commit of the first write (its hook
	// holds it), so the second never reaches B's copy.
	first, err := a.Append(t.Context(), "s", []store.Event{{Data: []byte("1")}})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, func() error {
		if b.Position() < idSeq(first[0]) {
			return fmt.Errorf("B's copy at %d", b.Position())
		}
		return nil
	})
	ids, err := a.Append(t.Context(), "s", []store.Event{{Data: []byte("2")}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = b.Scan("s", ids[0], 10, func(*store.Event) error { return nil })
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("resume on a copy held behind: %v", err)
	}
	if waited := time.Since(start); waited < resumeWait {
		t.Fatalf("gave up after %s, before resumeWait (%s)", waited, resumeWait)
	}
	release.Do(func() { close(hold) })
	bounds, err := b.Scan("s", ids[0], 10, func(*store.Event) error { return nil })
	if err != nil || bounds.Foreign || bounds.Newest != ids[0] {
		t.Fatalf("resume once the copy has it: %+v %v", bounds, err)
	}
}
