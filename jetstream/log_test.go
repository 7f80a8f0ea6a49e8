package jetstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sselog/sselog/store"
)

func TestSingleNodeAppendReopen(t *testing.T) {
	c := startTestCluster(t, 1)
	nc := connect(t, c.servers[0].ClientURL())
	path := filepath.Join(t.TempDir(), "replica.db")
	l := openTestLog(t, nc, path, 1)
	ctx := context.Background()
	var want []store.ID
	for i := range 5 {
		ids, err := l.Append(ctx, "a.b", []store.Event{{Type: "t", Data: []byte(fmt.Sprintf(`{"n":%d}`, i))}, {Data: []byte(`2`)}})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, ids...)
	}
	got := readAll(t, l, "a.b")
	if len(got) != len(want) {
		t.Fatalf("read %d events, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].ID != want[i] {
			t.Fatalf("event %d: id %s, want %s", i, got[i].ID, want[i])
		}
		if i > 0 && got[i].ID.Compare(got[i-1].ID) <= 0 {
			t.Fatalf("ids not increasing at %d", i)
		}
		// Each request is one message: two events at indexes 0 and 1.
		if idSeq(got[i].ID) != uint64(i/2+1) || got[i].ID[15] != byte(i%2) || idEpoch(got[i].ID) != l.epoch {
			t.Fatalf("event %d: seq %d index %d epoch %d", i, idSeq(got[i].ID), got[i].ID[15], idEpoch(got[i].ID))
		}
	}
	if got[0].Type != "t" || string(got[0].Data) != `{"n":0}` {
		t.Fatalf("first event %+v", got[0])
	}
	l.Close()
	l2 := openTestLog(t, nc, path, 1)
	if l2.LastID() != want[len(want)-1] || l2.Position() != uint64(len(want)/2) {
		t.Fatalf("reopened at %s/%d", l2.LastID(), l2.Position())
	}
	ids, err := l2.Append(ctx, "a.b", []store.Event{{Data: []byte(`3`)}})
	if err != nil {
		t.Fatal(err)
	}
	if ids[0].Compare(want[len(want)-1]) <= 0 {
		t.Fatal("id after reopen not above the last")
	}
}

// TestTwoFrontEnds writes through two nodes of a three-node cluster at
// once and checks that both local copies hold one sequence: every
// acknowledged event once, in the same order, with increasing ids.
func TestTwoFrontEnds(t *testing.T) {
	c := startTestCluster(t, 3)
	dir := t.TempDir()
	a := openTestLog(t, connect(t, c.servers[0].ClientURL()), filepath.Join(dir, "a.db"), 3)
	b := openTestLog(t, connect(t, c.servers[1].ClientURL()), filepath.Join(dir, "b.db"), 3)
	ctx := context.Background()
	var mu sync.Mutex
	acked := map[store.ID]string{}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		l := a
		if w%2 == 1 {
			l = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				data := fmt.Sprintf(`"w%d-%d"`, w, i)
				ids, err := l.Append(ctx, "s", []store.Event{{Data: []byte(data)}})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				acked[ids[0]] = data
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	last := a.LastID()
	if b.LastID().Compare(last) > 0 {
		last = b.LastID()
	}
	for _, l := range []*Log{a, b} {
		waitUntil(t, 10*time.Second, func() error {
			if l.LastID().Compare(last) < 0 {
				return fmt.Errorf("copy at %s, want %s", l.LastID(), last)
			}
			return nil
		})
	}
	ea, eb := readAll(t, a, "s"), readAll(t, b, "s")
	if len(ea) != len(acked) || len(eb) != len(acked) {
		t.Fatalf("copies hold %d and %d events, %d acknowledged", len(ea), len(eb), len(acked))
	}
	for i := range ea {
		if ea[i].ID != eb[i].ID || string(ea[i].Data) != string(eb[i].Data) {
			t.Fatalf("copies differ at %d", i)
		}
		if acked[ea[i].ID] != string(ea[i].Data) {
			t.Fatalf("event %s holds %s, acknowledged as %q", ea[i].ID, ea[i].Data, acked[ea[i].ID])
		}
		if i > 0 && ea[i].ID.Compare(ea[i-1].ID) <= 0 {
			t.Fatalf("ids not increasing at %d", i)
		}
	}
}

// TestRequestLimits: a request that cannot be one message (more events
// than an id can index, or more bytes than the cluster's messages hold)
// is refused with ErrBatchTooLarge (413) and stores nothing.
func TestRequestLimits(t *testing.T) {
	c := startTestCluster(t, 1)
	l := openTestLog(t, connect(t, c.servers[0].ClientURL()), filepath.Join(t.TempDir(), "r.db"), 1)
	many := make([]store.Event, maxEventsPerMessage+1)
	for i := range many {
		many[i] = store.Event{Data: []byte("1")}
	}
	if _, err := l.Append(t.Context(), "s", many); !errors.Is(err, store.ErrBatchTooLarge) {
		t.Fatalf("%d events: %v", len(many), err)
	}
	big := []store.Event{{Data: make([]byte, l.maxMessage())}}
	if _, err := l.Append(t.Context(), "s", big); !errors.Is(err, store.ErrBatchTooLarge) {
		t.Fatalf("an event of %d bytes: %v", len(big[0].Data), err)
	}
	// The largest that fits is stored.
	fits := []store.Event{{Data: bytes.Repeat([]byte("x"), l.maxMessage()-encodedLen([]request{{events: []store.Event{{Data: []byte("x")}}}})-store.MaxKeyLen)}}
	if _, err := l.Append(t.Context(), "s", fits); err != nil {
		t.Fatalf("an event of %d bytes: %v", len(fits[0].Data), err)
	}
	if n := len(readAll(t, l, "s")); n != 1 {
		t.Fatalf("stream holds %d events, want 1", n)
	}
}
