package stream

import (
	"testing"

	"github.com/sselog/sselog/store"
)

// hookLog is a Log whose commits the test makes: it hands the hub's hook
// whatever batch the test builds, as one commit.
type hookLog struct {
	commit func([]store.Event)
}

func (*hookLog) Scan(string, store.ID, int, func(*store.Event) error) (store.Bounds, error) {
	return store.Bounds{}, nil
}

func (*hookLog) ScanMerged(store.Selection, store.ID, int, func(*store.Event) error) (store.MergedBounds, error) {
	return store.MergedBounds{}, nil
}
func (*hookLog) LastID() store.ID                          { return store.ID{} }
func (l *hookLog) OnCommit(fn func([]store.Event))         { l.commit = fn }
func (*hookLog) OnDelete(func(stream string, lw store.ID)) {}

// TestMergedOneWakePerCommit: a merged subscriber is woken once for a
// commit that touches three of its streams, and a commit that touches none
// of any merged subscriber's streams builds no merged frame and queues
// nothing.
func TestMergedOneWakePerCommit(t *testing.T) {
	log := &hookLog{}
	h := NewHub(log, Options{})
	defer h.Close()
	in := map[string]bool{"a": true, "b": true, "c": true}
	m, err := h.SubscribeMerged(MergedOptions{Selection: store.Selection{Names: []string{"a", "b", "c"}}, Match: func(s string) bool { return in[s] }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var ids [6]store.ID
	for i := range ids {
		ids[i] = store.ID{15: byte(i + 1)}
	}
	before := m.notify
	log.commit([]store.Event{
		{ID: ids[0], Stream: "a", Data: []byte("1")},
		{ID: ids[1], Stream: "b", Data: []byte("2")},
		{ID: ids[2], Stream: "b", Data: []byte("3")},
		{ID: ids[3], Stream: "x", Data: []byte("4")},
		{ID: ids[4], Stream: "c", Data: []byte("5")},
	})
	select {
	case <-before:
	default:
		t.Fatal("the commit did not wake the subscriber")
	}
	select {
	case <-m.notify:
		t.Fatal("the commit woke the subscriber more than once")
	default:
	}
	if len(m.queue) != 4 {
		t.Fatalf("%d frames queued, want the 4 of a, b and c", len(m.queue))
	}
	// A commit of streams nobody merged follows: no frame, no wake.
	quiet := m.notify
	log.commit([]store.Event{{ID: ids[5], Stream: "x", Data: []byte("6")}})
	select {
	case <-quiet:
		t.Fatal("a commit of no followed stream woke the subscriber")
	default:
	}
	if subs, cached := h.mergedFor["x"]; !cached || len(subs) != 0 || len(m.queue) != 4 {
		t.Fatalf("stream x: cached %v with %d subscribers; %d frames queued", cached, len(subs), len(m.queue))
	}
}

// TestMergedCacheChurn: a subscription that arrives adds itself to the
// cached names it follows, and one that leaves is dropped when a commit
// meets it; neither makes the hook ask every subscription again.
func TestMergedCacheChurn(t *testing.T) {
	log := &hookLog{}
	h := NewHub(log, Options{})
	defer h.Close()
	all := func(string) bool { return true }
	first, err := h.SubscribeMerged(MergedOptions{Selection: store.Selection{Match: all}, Match: all})
	if err != nil {
		t.Fatal(err)
	}
	log.commit([]store.Event{{ID: store.ID{15: 1}, Stream: "x", Data: []byte("1")}})
	if len(h.mergedFor["x"]) != 1 {
		t.Fatalf("x cached with %d subscriptions", len(h.mergedFor["x"]))
	}
	second, err := h.SubscribeMerged(MergedOptions{Selection: store.Selection{Names: []string{"x"}}, Match: func(s string) bool { return s == "x" }})
	if err != nil {
		t.Fatal(err)
	}
	if got := h.mergedFor["x"]; len(got) != 2 || got[1] != second {
		t.Fatalf("the new subscription did not add itself to x: %v", got)
	}
	first.Close()
	log.commit([]store.Event{{ID: store.ID{15: 2}, Stream: "x", Data: []byte("2")}})
	if got := h.mergedFor["x"]; len(got) != 1 || got[0] != second || h.cached != 2 {
		t.Fatalf("after a close and a commit, x holds %v (cached %d)", got, h.cached)
	}
	if len(second.queue) != 1 || len(first.queue) != 0 {
		t.Fatalf("queued: second %d, closed first %d", len(second.queue), len(first.queue))
	}
	second.Close()
}
