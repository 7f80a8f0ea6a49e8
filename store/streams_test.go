package store_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

func mustStream(tb testing.TB, l *store.Log, name string) store.StreamInfo {
	tb.Helper()
	info, err := l.Stream(name)
	if err != nil {
		tb.Fatalf("Stream(%s): %v", name, err)
	}
	return info
}

// trimAll calls Trim until nothing is left to cut, and returns the total.
func trimAll(tb testing.TB, l *store.Log, name string, cut store.Cut, chunk int) (events, calls int) {
	tb.Helper()
	for {
		res, err := l.Trim(name, cut, chunk)
		if err != nil {
			tb.Fatal(err)
		}
		events += res.Events
		calls++
		if !res.More {
			return events, calls
		}
	}
}

func TestTrim(t *testing.T) {
	clock := newFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	l := testkit.OpenAt(t, filepath.Join(t.TempDir(), "events.db"), store.Options{Now: clock.Now})
	var ids []store.ID
	for i := range 30 {
		clock.Set(time.Date(2026, 1, 1, 0, i, 0, 0, time.UTC))
		ids = append(ids, mustAppend(t, l, "s", makeEvents("", 1, i)...)...)
	}
	mustAppend(t, l, "other", makeEvents("", 3, 0)...)
	size := func(evs []store.Event) uint64 {
		var n uint64
		for _, e := range evs {
			n += uint64(len(e.Data)) + 2 // version byte and a one-byte type length
		}
		return n
	}

	// Age: minutes 0-4 are older than minute 5.
	n, _ := trimAll(t, l, "s", store.Cut{Before: store.MinIDAt(time.Date(2026, 1, 1, 0, 5, 0, 0, time.UTC))}, 1000)
	info := mustStream(t, l, "s")
	if n != 5 || info.Count != 25 || info.FirstID != ids[5] || info.LowWater != ids[4] {
		t.Fatalf("after age trim: removed %d, %+v; want 5 removed, first %s, low water %s", n, info, ids[5], ids[4])
	}
	if want := size(readAll(t, l, "s")); info.Bytes != want {
		t.Fatalf("bytes %d after trim, want %d", info.Bytes, want)
	}
	// Events: keep 20.
	if n, _ := trimAll(t, l, "s", store.Cut{MaxEvents: 20}, 1000); n != 5 {
		t.Fatalf("events trim removed %d, want 5", n)
	}
	// Bytes: keep what fits in the size of the newest 12; every limit at
	// once cuts to the strictest.
	keep := size(readAll(t, l, "s")[8:])
	if n, _ := trimAll(t, l, "s", store.Cut{MaxEvents: 15, MaxBytes: keep, Before: ids[3]}, 1000); n != 8 {
		t.Fatalf("bytes trim removed %d, want 8", n)
	}
	info = mustStream(t, l, "s")
	if info.Count != 12 || info.Bytes != keep || info.FirstID != ids[18] || info.LowWater != ids[17] || info.LastID != ids[29] {
		t.Fatalf("after trims: %+v; want 12 events from %s, low water %s", info, ids[18], ids[17])
	}
	if got := idsOf(readAll(t, l, "s")); !equalIDs(got, ids[18:]) {
		t.Fatalf("retained %v, want %v", got, ids[18:])
	}
	if other := mustStream(t, l, "other"); other.Count != 3 || !other.LowWater.IsZero() {
		t.Fatalf("other stream touched: %+v", other)
	}
	// Nothing more to cut is a no-op that keeps the mark.
	res, err := l.Trim("s", store.Cut{MaxEvents: 12}, 10)
	if err != nil || res.Events != 0 || res.More {
		t.Fatalf("idle trim: %+v, %v", res, err)
	}
	if res, err := l.Trim("nope", store.Cut{MaxEvents: 1}, 10); err != nil || res.Events != 0 {
		t.Fatalf("trim of a missing stream: %+v, %v", res, err)
	}

	// Everything survives a restart, and ids keep increasing past the
	// trimmed ones.
	path := l.Path()
	mustClose(t, l)
	l = testkit.OpenAt(t, path, store.Options{})
	if again := mustStream(t, l, "s"); again != info {
		t.Fatalf("after restart %+v, want %+v", again, info)
	}
	next := mustAppend(t, l, "s", makeEvents("", 1, 99)...)
	if next[0].Compare(ids[29]) <= 0 {
		t.Fatalf("id %s after restart not above %s", next[0], ids[29])
	}
}

func equalIDs(a, b []store.ID) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestTrimChunks: a trim is cut into transactions of at most the key limit,
// and the result is the same as one big cut.
func TestTrimChunks(t *testing.T) {
	l := testkit.OpenAt(t, filepath.Join(t.TempDir(), "events.db"), store.Options{})
	var ids []store.ID
	for i := range 11 {
		ids = append(ids, mustAppend(t, l, "s", makeEvents("", 100, i*100)...)...)
	}
	n, calls := trimAll(t, l, "s", store.Cut{MaxEvents: 50}, 100)
	if n != 1050 || calls != 11 {
		t.Fatalf("removed %d in %d calls, want 1050 in 11", n, calls)
	}
	info := mustStream(t, l, "s")
	if info.Count != 50 || info.LowWater != ids[1049] || info.FirstID != ids[1050] {
		t.Fatalf("after chunked trim: %+v", info)
	}
	if _, err := l.Trim("s", store.Cut{}, 0); err == nil {
		t.Fatal("Trim with no key limit succeeded")
	}
}

// TestTrimBesideAppends: trims and appends interleave without losing or
// miscounting anything, and the mark only moves forward.
func TestTrimBesideAppends(t *testing.T) {
	l := testkit.OpenAt(t, filepath.Join(t.TempDir(), "events.db"), store.Options{})
	const writers, per = 4, 200
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range per {
				if _, err := l.Append(context.Background(), "s", makeEvents("", 1, w*per+i)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var last store.ID
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		res, err := l.Trim("s", store.Cut{MaxEvents: 100}, 17)
		if err != nil {
			t.Fatal(err)
		}
		if res.Events > 0 {
			if res.LowWater.Compare(last) <= 0 {
				t.Fatalf("low water went from %s to %s", last, res.LowWater)
			}
			last = res.LowWater
		}
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	trimAll(t, l, "s", store.Cut{MaxEvents: 100}, 1000)
	info := mustStream(t, l, "s")
	all := readAll(t, l, "s")
	if info.Count != 100 || len(all) != 100 || info.FirstID != all[0].ID || info.LowWater.Compare(all[0].ID) >= 0 {
		t.Fatalf("after concurrent trims: %+v with %d events", info, len(all))
	}
}

func TestScanBounds(t *testing.T) {
	l := testkit.OpenAt(t, filepath.Join(t.TempDir(), "events.db"), store.Options{})
	ids := mustAppend(t, l, "s", makeEvents("", 10, 0)...)
	trimAll(t, l, "s", store.Cut{MaxEvents: 6}, 100)
	for _, tc := range []struct {
		after store.ID
		gap   bool
		first store.ID
	}{
		{store.ID{}, true, ids[4]},
		{ids[2], true, ids[4]},
		{ids[3], false, ids[4]},
		{ids[5], false, ids[6]},
	} {
		events, bounds, err := l.ReadPage("s", tc.after, 1)
		if err != nil {
			t.Fatal(err)
		}
		if bounds.LowWater != ids[3] || bounds.Deleted || bounds.Newest != ids[9] || bounds.Gap(tc.after) != tc.gap || len(events) != 1 || events[0].ID != tc.first {
			t.Errorf("after %s: %+v gap %v, %d events; want low water %s, gap %v, first %s", tc.after, bounds, bounds.Gap(tc.after), len(events), ids[3], tc.gap, tc.first)
		}
	}
	if _, bounds, err := l.ReadPage("missing", store.ID{}, 1); err != nil || bounds != (store.Bounds{Newest: ids[9]}) {
		t.Fatalf("missing stream bounds %+v, %v", bounds, err)
	}
}

func TestDeleteStream(t *testing.T) {
	l := testkit.OpenAt(t, filepath.Join(t.TempDir(), "events.db"), store.Options{})
	type deletion struct {
		stream string
		lw     store.ID
	}
	var (
		mu      sync.Mutex
		deletes []deletion
	)
	l.OnDelete(func(stream string, lw store.ID) {
		mu.Lock()
		deletes = append(deletes, deletion{stream, lw})
		mu.Unlock()
	})
	ids := mustAppend(t, l, "s", makeEvents("", 5, 0)...)
	mustAppend(t, l, "keep", makeEvents("", 2, 0)...)
	limit := uint64(3)
	if err := l.SetPolicy("s", store.Policy{MaxEvents: &limit}); err != nil {
		t.Fatal(err)
	}

	lw, err := l.DeleteStream(context.Background(), "s")
	if err != nil || lw != ids[4] {
		t.Fatalf("DeleteStream = %s, %v; want %s", lw, err, ids[4])
	}
	mu.Lock()
	got := append([]deletion(nil), deletes...)
	mu.Unlock()
	if len(got) != 1 || got[0] != (deletion{"s", ids[4]}) {
		t.Fatalf("delete hooks saw %+v before DeleteStream returned", got)
	}
	if _, err := l.Stream("s"); !errors.Is(err, store.ErrStreamNotFound) {
		t.Fatalf("Stream after delete: %v, want ErrStreamNotFound", err)
	}
	if _, err := l.DeleteStream(context.Background(), "s"); !errors.Is(err, store.ErrStreamNotFound) {
		t.Fatalf("second delete: %v, want ErrStreamNotFound", err)
	}
	if _, err := l.DeleteStream(context.Background(), "never"); !errors.Is(err, store.ErrStreamNotFound) {
		t.Fatalf("delete of a missing stream: %v, want ErrStreamNotFound", err)
	}
	streams, err := l.Streams()
	if err != nil || len(streams) != 1 || streams[0].Name != "keep" {
		t.Fatalf("Streams after delete: %+v, %v", streams, err)
	}
	if p, err := l.Policy("s"); err != nil || p.MaxEvents != nil {
		t.Fatalf("policy after delete: %+v, %v; want none", p, err)
	}
	events, bounds, err := l.ReadPage("s", ids[0], 0)
	if err != nil || len(events) != 0 || !bounds.Deleted || bounds.LowWater != ids[4] || !bounds.Gap(ids[0]) {
		t.Fatalf("read after delete: %d events, %+v, %v", len(events), bounds, err)
	}

	// Publishing again brings the stream back, with larger ids, its count
	// from zero and the mark kept; across a restart too.
	reborn := mustAppend(t, l, "s", makeEvents("", 2, 0)...)
	if reborn[0].Compare(ids[4]) <= 0 {
		t.Fatalf("reborn id %s not above %s", reborn[0], ids[4])
	}
	path := l.Path()
	mustClose(t, l)
	l = testkit.OpenAt(t, path, store.Options{})
	info := mustStream(t, l, "s")
	if info.Count != 2 || info.FirstID != reborn[0] || info.LowWater != ids[4] {
		t.Fatalf("reborn stream %+v", info)
	}
	if _, bounds, _ := l.ReadPage("s", ids[0], 0); bounds.Deleted {
		t.Fatal("republished stream still marked deleted")
	}
}

// TestDeleteOrderedWithAppends: a delete is committed in queue order with
// the appends around it: those queued before are removed with the stream,
// those after start it again.
func TestDeleteOrderedWithAppends(t *testing.T) {
	l := testkit.OpenAt(t, filepath.Join(t.TempDir(), "events.db"), store.Options{})
	mustAppend(t, l, "s", makeEvents("", 1, 0)...)
	release := holdWriter(t, l)
	before := make(chan []store.ID, 1)
	go func() {
		ids, _ := l.Append(context.Background(), "s", makeEvents("", 1, 1))
		before <- ids
	}()
	testkit.WaitFor(t, "append queued", func() bool { return l.QueuedAppends() == 1 })
	deleted := make(chan store.ID, 1)
	go func() {
		lw, _ := l.DeleteStream(context.Background(), "s")
		deleted <- lw
	}()
	testkit.WaitFor(t, "delete queued", func() bool { return l.QueuedAppends() == 2 })
	after := make(chan []store.ID, 1)
	go func() {
		ids, _ := l.Append(context.Background(), "s", makeEvents("", 1, 2))
		after <- ids
	}()
	testkit.WaitFor(t, "append queued", func() bool { return l.QueuedAppends() == 3 })
	release()
	b, lw, a := <-before, <-deleted, <-after
	if len(b) != 1 || len(a) != 1 || lw != b[0] {
		t.Fatalf("before %v, delete mark %s, after %v", b, lw, a)
	}
	if got := idsOf(readAll(t, l, "s")); !equalIDs(got, a) {
		t.Fatalf("stream holds %v, want only %v", got, a)
	}
}

func TestPolicy(t *testing.T) {
	l := testkit.OpenAt(t, filepath.Join(t.TempDir(), "events.db"), store.Options{})
	if p, err := l.Policy("s"); err != nil || p != (store.Policy{}) {
		t.Fatalf("no policy: %+v, %v", p, err)
	}
	var p store.Policy
	if err := json.Unmarshal([]byte(`{"max_age":"36h","max_events":0}`), &p); err != nil {
		t.Fatal(err)
	}
	if err := l.SetPolicy("s", p); err != nil {
		t.Fatal(err)
	}
	path := l.Path()
	mustClose(t, l)
	l = testkit.OpenAt(t, path, store.Options{})
	got, err := l.Policy("s")
	if err != nil {
		t.Fatal(err)
	}
	if got.MaxAge == nil || *got.MaxAge != 36*time.Hour || got.MaxEvents == nil || *got.MaxEvents != 0 || got.MaxBytes != nil {
		t.Fatalf("policy after restart: %+v", got)
	}
	if b, _ := json.Marshal(got); string(b) != `{"max_age":"36h0m0s","max_events":0}` {
		t.Fatalf("policy JSON %s", b)
	}
	all, err := l.Policies()
	if err != nil || len(all) != 1 {
		t.Fatalf("Policies = %+v, %v", all, err)
	}
	if err := l.DeletePolicy("s"); err != nil {
		t.Fatal(err)
	}
	if p, err := l.Policy("s"); err != nil || p != (store.Policy{}) {
		t.Fatalf("after DeletePolicy: %+v, %v", p, err)
	}
	for _, bad := range []string{`{"max_age":"-1h"}`, `{"max_age":"soon"}`, `{"max_age":36}`, `{"max_events":-1}`, `{"limit":1}`, `[]`, `null`, `"24h"`, `{"max_bytes":1.5}`} {
		var p store.Policy
		if err := json.Unmarshal([]byte(bad), &p); !errors.Is(err, store.ErrInvalidPolicy) {
			t.Errorf("%s: %v, want ErrInvalidPolicy", bad, err)
		}
	}
	neg := -time.Second
	if err := l.SetPolicy("s", store.Policy{MaxAge: &neg}); !errors.Is(err, store.ErrInvalidPolicy) {
		t.Errorf("negative age stored: %v", err)
	}
	if err := l.SetPolicy("a/b", store.Policy{}); !errors.Is(err, store.ErrInvalidStream) {
		t.Errorf("bad name: %v", err)
	}
}

func TestReservedType(t *testing.T) {
	l := testkit.OpenAt(t, filepath.Join(t.TempDir(), "events.db"), store.Options{})
	_, err := l.Append(context.Background(), "s", []store.Event{{Type: store.ResetType, Data: []byte("{}")}})
	if !errors.Is(err, store.ErrInvalidEvent) {
		t.Fatalf("append of a reset event: %v, want ErrInvalidEvent", err)
	}
	if l.LastID() != (store.ID{}) {
		t.Fatal("refused append changed the log")
	}
}

func TestMinIDAt(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	id := store.MinIDAt(at)
	if !id.Time().Equal(at) {
		t.Fatalf("MinIDAt time %v, want %v", id.Time(), at)
	}
	if !bytes.Equal(id[6:], make([]byte, 10)) {
		t.Fatalf("MinIDAt entropy %x, want zero", id[6:])
	}
	if store.MinIDAt(time.Unix(-5, 0)) != (store.ID{}) {
		t.Fatal("MinIDAt before 1970 is not the zero id")
	}
}

func TestBackupAndCompact(t *testing.T) {
	dir := t.TempDir()
	l := testkit.OpenAt(t, filepath.Join(dir, "events.db"), store.Options{InitialMmapSize: 1 << 20})
	for i := range 40 {
		mustAppend(t, l, "s", makeEvents("", 500, i*500)...)
	}
	trimAll(t, l, "s", store.Cut{MaxEvents: 100}, 5000)
	want := mustStream(t, l, "s")

	var buf bytes.Buffer
	var announced int64
	n, err := l.Backup(&buf, func(size int64) { announced = size })
	if err != nil || n != announced || int64(buf.Len()) != n {
		t.Fatalf("Backup wrote %d (announced %d, buffered %d): %v", n, announced, buf.Len(), err)
	}
	copyPath := filepath.Join(dir, "copy.db")
	if err := os.WriteFile(copyPath, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Compact(copyPath, l.Path()); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("compact of an open database: %v, want ErrLocked", err)
	}

	res, err := store.Compact(copyPath, copyPath)
	if err != nil {
		t.Fatal(err)
	}
	if res.After >= res.Before {
		t.Fatalf("compaction %d -> %d bytes did not shrink", res.Before, res.After)
	}
	t.Logf("compacted %d -> %d bytes", res.Before, res.After)
	report, err := store.Inspect(copyPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(report.Streams) != 1 || report.Streams[0] != want || report.LastID != l.LastID() {
		t.Fatalf("inspect %+v, want %+v", report, want)
	}
	c := testkit.OpenAt(t, copyPath, store.Options{})
	if got := mustStream(t, c, "s"); got != want {
		t.Fatalf("restored %+v, want %+v", got, want)
	}
	if _, err := store.Inspect(filepath.Join(dir, "missing.db")); err == nil {
		t.Fatal("inspect of a missing file succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "missing.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("inspect created the missing file")
	}
}

func TestMaxStreams(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.db")
	// Three streams: holdWriter's "gate", a and b.
	l := testkit.OpenAt(t, path, store.Options{MaxStreams: 3})
	mustAppend(t, l, "gate", makeEvents("", 1, 0)...)
	mustAppend(t, l, "a", makeEvents("", 1, 0)...)
	mustAppend(t, l, "b", makeEvents("", 1, 0)...)
	last := l.LastID()
	if _, err := l.Append(context.Background(), "c", makeEvents("", 1, 0)); !errors.Is(err, store.ErrTooManyStreams) {
		t.Fatalf("fourth stream: %v, want ErrTooManyStreams", err)
	}
	if l.LastID() != last {
		t.Fatal("a refused append committed something")
	}
	if _, err := l.Stream("c"); !errors.Is(err, store.ErrStreamNotFound) {
		t.Fatalf("refused stream exists: %v", err)
	}

	// In one commit, the refused request does not hold back the others.
	release := holdWriter(t, l)
	results := make(chan error, 3)
	for _, name := range []string{"a", "x", "b"} {
		go func() {
			_, err := l.Append(context.Background(), name, makeEvents("", 1, 1))
			results <- err
		}()
	}
	testkit.WaitFor(t, "appends queued", func() bool { return l.QueuedAppends() == 3 })
	release()
	refused := 0
	for range 3 {
		if err := <-results; errors.Is(err, store.ErrTooManyStreams) {
			refused++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if refused != 1 || mustStream(t, l, "a").Count != 2 || mustStream(t, l, "b").Count != 2 {
		t.Fatalf("refused %d; a %+v, b %+v", refused, mustStream(t, l, "a"), mustStream(t, l, "b"))
	}

	// Deleting makes room, and the count survives a restart.
	if _, err := l.DeleteStream(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, l, "c", makeEvents("", 1, 0)...)
	mustClose(t, l)
	l = testkit.OpenAt(t, path, store.Options{MaxStreams: 3})
	if _, err := l.Append(context.Background(), "d", makeEvents("", 1, 0)); !errors.Is(err, store.ErrTooManyStreams) {
		t.Fatalf("after restart: %v, want ErrTooManyStreams", err)
	}
	mustAppend(t, l, "a", makeEvents("", 1, 0)...)
}
