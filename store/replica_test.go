package store_test

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/sselog/sselog/store"
)

// replicaID is an id ms milliseconds after the test began, as a
// replicated log would issue (keys are remembered only within the window).
var testStart = time.Now()

func replicaID(ms uint64, n byte) store.ID {
	id := store.MinIDAt(testStart.Add(time.Duration(ms) * time.Millisecond))
	id[15] = n
	return id
}

// TestReplicaIdentity: a replica's file is never opened as a standalone
// log, a standalone log never as a replica, and one replica never as
// another's.
func TestReplicaIdentity(t *testing.T) {
	dir := t.TempDir()
	standalone := filepath.Join(dir, "standalone.db")
	l, err := store.Open(standalone, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, "s", store.Event{Data: []byte("1")})
	mustClose(t, l)
	if _, err := store.Open(standalone, store.Options{Replica: "a"}); !errors.Is(err, store.ErrIdentity) {
		t.Fatalf("standalone opened as a replica: %v", err)
	}

	replica := filepath.Join(dir, "replica.db")
	r, err := store.Open(replica, store.Options{Replica: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if !r.IsReplica() {
		t.Fatal("not a replica")
	}
	if _, err := r.Append(t.Context(), "s", []store.Event{{Data: []byte("1")}}); !errors.Is(err, store.ErrReplica) {
		t.Fatalf("append to a replica: %v", err)
	}
	if _, err := r.DeleteStream(t.Context(), "s"); !errors.Is(err, store.ErrReplica) {
		t.Fatalf("delete on a replica: %v", err)
	}
	if _, err := r.Trim("s", store.Cut{MaxEvents: 1}, 10); !errors.Is(err, store.ErrReplica) {
		t.Fatalf("trim on a replica: %v", err)
	}
	mustClose(t, r)
	for _, name := range []string{"", "b"} {
		if _, err := store.Open(replica, store.Options{Replica: name}); !errors.Is(err, store.ErrIdentity) {
			t.Fatalf("replica of a opened as %q: %v", name, err)
		}
	}
}

// TestReplicaApply: writes applied with their ids and positions read back
// as a standalone log's, the position survives a reopen, ids must
// increase, and trims and deletions of events the replica never saw keep
// their low-water marks.
func TestReplicaApply(t *testing.T) {
	path := filepath.Join(t.TempDir(), "replica.db")
	r, err := store.Open(path, store.Options{Replica: "a"})
	if err != nil {
		t.Fatal(err)
	}
	var committed []store.Event
	r.OnCommit(func(evs []store.Event) { committed = append(committed, evs...) })
	a := []store.Event{{ID: replicaID(1000, 1), Data: []byte("1")}, {ID: replicaID(1000, 2), Type: "t", Data: []byte("2")}}
	key := &store.Key{Name: "k"}
	if err := r.Apply(t.Context(), 2, []store.Applied{{Stream: "s", Events: a, Key: key}}); err != nil {
		t.Fatal(err)
	}
	if len(committed) != 2 || r.Position() != 2 || r.LastID() != a[1].ID {
		t.Fatalf("after apply: %d committed, position %d, last %s", len(committed), r.Position(), r.LastID())
	}
	if ids, found, err := r.LookupKey("s", *key); err != nil || !found || len(ids) != 2 || ids[1] != a[1].ID {
		t.Fatalf("key: %v %v %v", ids, found, err)
	}
	if err := r.Apply(t.Context(), 3, []store.Applied{{Stream: "s", Events: []store.Event{{ID: a[1].ID, Data: []byte("x")}}}}); err == nil {
		t.Fatal("an id not above the last was applied")
	}
	// A trim and a deletion of a stream this replica never saw.
	unseen := replicaID(2000, 9)
	if _, err := r.ApplyTrim(4, "t", unseen, 10); err != nil {
		t.Fatal(err)
	}
	deleted := replicaID(3000, 1)
	if err := r.ApplyDelete(t.Context(), 5, "d", deleted); err != nil {
		t.Fatal(err)
	}
	if err := r.Apply(t.Context(), 6, nil); err != nil {
		t.Fatal(err)
	}
	mustClose(t, r)

	r, err = store.Open(path, store.Options{Replica: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer mustClose(t, r)
	if r.Position() != 6 || r.LastID() != deleted {
		t.Fatalf("reopened at position %d, last %s (want 6, %s)", r.Position(), r.LastID(), deleted)
	}
	got := readAll(t, r, "s")
	if len(got) != 2 || got[0].ID != a[0].ID || got[1].Type != "t" {
		t.Fatalf("events %+v", got)
	}
	b, err := r.Scan("t", store.ID{}, 1, func(*store.Event) error { return nil })
	if err != nil || b.LowWater != unseen || b.Deleted {
		t.Fatalf("trimmed unseen stream: %+v %v", b, err)
	}
	b, err = r.Scan("d", store.ID{}, 1, func(*store.Event) error { return nil })
	if err != nil || b.LowWater != deleted || !b.Deleted {
		t.Fatalf("deleted unseen stream: %+v %v", b, err)
	}
	// Applying the deletion again (a restart before its position was
	// recorded) changes nothing.
	if err := r.ApplyDelete(t.Context(), 7, "d", deleted); err != nil {
		t.Fatal(err)
	}
}
