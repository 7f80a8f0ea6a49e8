package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sselog/sselog/store"
)

// mustClose closes l where a test needs the file released before it goes on.
func mustClose(tb testing.TB, l *store.Log) {
	tb.Helper()
	if err := l.Close(); err != nil {
		tb.Fatalf("close: %v", err)
	}
}

// payload is 98-105 bytes of compact JSON, the size the HTTP layer
// typically stores.
func payload(n int) []byte {
	return fmt.Appendf(nil, `{"user":"u-%06d","action":"page_view","path":"/articles/%06d","ref":"newsletter","ok":true,"seq":%d}`, n%1000000, n%1000000, n)
}

// makeEvents builds n events of the given type with distinct payloads.
func makeEvents(typ string, n, seq int) []store.Event {
	evs := make([]store.Event, n)
	for i := range evs {
		evs[i] = store.Event{Type: typ, Data: payload(seq + i)}
	}
	return evs
}

// mustAppend appends and fails the test on error. Only for the test's own
// goroutine.
func mustAppend(tb testing.TB, l *store.Log, stream string, evs ...store.Event) []store.ID {
	tb.Helper()
	ids, err := l.Append(tb.Context(), stream, evs)
	if err != nil {
		tb.Fatalf("append %d events to %s: %v", len(evs), stream, err)
	}
	if len(ids) != len(evs) {
		tb.Fatalf("append to %s: %d ids for %d events", stream, len(ids), len(evs))
	}
	return ids
}

// readAll reads a whole stream in small pages, the way a replaying
// subscriber does, so paging from an exclusive cursor is exercised too.
func readAll(tb testing.TB, l *store.Log, stream string) []store.Event {
	tb.Helper()
	var out []store.Event
	var after store.ID
	for {
		page, err := l.ReadAfter(stream, after, 97)
		if err != nil {
			tb.Fatalf("read %s after %s: %v", stream, after, err)
		}
		if len(page) == 0 {
			return out
		}
		// Without this a cursor that is not exclusive would page forever.
		if page[0].ID.Compare(after) <= 0 {
			tb.Fatalf("read %s after %s returned %s first", stream, after, page[0].ID)
		}
		out = append(out, page...)
		after = page[len(page)-1].ID
	}
}

// idsOf returns the ids of evs.
func idsOf(evs []store.Event) []store.ID {
	out := make([]store.ID, len(evs))
	for i := range evs {
		out[i] = evs[i].ID
	}
	return out
}

// checkIncreasing fails unless ids strictly increase.
func checkIncreasing(tb testing.TB, what string, ids []store.ID) {
	tb.Helper()
	for i := 1; i < len(ids); i++ {
		if ids[i].Compare(ids[i-1]) <= 0 {
			tb.Fatalf("%s: id %d (%s) does not follow id %d (%s)", what, i, ids[i], i-1, ids[i-1])
		}
	}
}

// maxID returns the greatest of ids, or the zero ID.
func maxID(ids ...store.ID) store.ID {
	var m store.ID
	for _, id := range ids {
		if id.Compare(m) > 0 {
			m = id
		}
	}
	return m
}

// fakeClock is a clock the test steps by hand, including backwards.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// holdWriter appends one event to stream "gate" and keeps the writer inside
// that commit's hooks until release is called, so that a test can queue
// appends behind a busy writer. Cleanup releases it too, ahead of testkit.OpenAt's
// Close, so a failing test does not hang in Close.
func holdWriter(t *testing.T, l *store.Log) (release func()) {
	t.Helper()
	held, unblock := make(chan struct{}), make(chan struct{})
	first := true // touched only by the writer, whose hook calls are sequential
	l.OnCommit(func([]store.Event) {
		if first {
			first = false
			close(held)
			<-unblock
		}
	})
	gateErr := make(chan error, 1)
	go func() {
		// Not t.Context: cleanup may release the writer after it is canceled.
		_, err := l.Append(context.Background(), "gate", makeEvents("gate", 1, 0))
		gateErr <- err
	}()
	release = sync.OnceFunc(func() {
		close(unblock)
		select {
		case err := <-gateErr:
			if err != nil {
				t.Errorf("gate append: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("gate append not answered 10s after release")
		}
	})
	t.Cleanup(release)
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the gate append never reached the commit hook")
	}
	return release
}
