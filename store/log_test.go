package store_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

func TestAppendAndRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	l := testkit.OpenAt(t, path, store.Options{})
	if l.Path() != path {
		t.Fatalf("Path() = %q, want %q", l.Path(), path)
	}

	// A stale caller-supplied ID must be ignored, and binary-looking data must
	// come back byte for byte: the log does not interpret Data.
	stale := store.ID{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	a1 := mustAppend(t, l, "alpha", store.Event{ID: stale, Type: "created", Data: []byte("line1\r\nline2\x00\xff")})
	b := mustAppend(t, l, "beta",
		store.Event{Data: []byte(`{"n":1}`)},
		store.Event{Type: "x", Data: []byte(`{"n":2}`)},
		store.Event{Type: "ünïcode type", Data: []byte(`{"n":3}`)},
	)
	// The longest type needs a two-byte length prefix.
	long := strings.Repeat("t", store.MaxTypeLen)
	a0 := mustAppend(t, l, "alpha0", store.Event{Type: long, Data: []byte("x")})
	a2 := mustAppend(t, l, "alpha", store.Event{Type: "deleted", Data: []byte(`{}`)})
	g := mustAppend(t, l, "gamma.v1_x-y", makeEvents("tick", 2, 0)...)

	all := slices.Concat(a1, b, a0, a2, g)
	checkIncreasing(t, "ids in append order", all)
	if a1[0] == stale {
		t.Fatalf("append kept the caller's ID")
	}
	if got := l.LastID(); got != g[1] {
		t.Fatalf("LastID = %s, want %s", got, g[1])
	}

	alpha, err := l.ReadAfter("alpha", store.ID{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.Event{
		{ID: a1[0], Stream: "alpha", Type: "created", Data: []byte("line1\r\nline2\x00\xff")},
		{ID: a2[0], Stream: "alpha", Type: "deleted", Data: []byte(`{}`)},
	}
	checkEvents(t, "alpha from zero", alpha, want)
	alpha0, err := l.ReadAfter("alpha0", store.ID{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkEvents(t, "longest type", alpha0, []store.Event{{ID: a0[0], Stream: "alpha0", Type: long, Data: []byte("x")}})

	beta := []store.Event{
		{ID: b[0], Stream: "beta", Type: "", Data: []byte(`{"n":1}`)},
		{ID: b[1], Stream: "beta", Type: "x", Data: []byte(`{"n":2}`)},
		{ID: b[2], Stream: "beta", Type: "ünïcode type", Data: []byte(`{"n":3}`)},
	}
	for _, tc := range []struct {
		name  string
		after store.ID
		limit int
		want  []store.Event
	}{
		{"from zero", store.ID{}, 0, beta},
		{"after first is exclusive", b[0], 0, beta[1:]},
		{"after middle", b[1], 0, beta[2:]},
		{"after last", b[2], 0, nil},
		{"limit", store.ID{}, 2, beta[:2]},
		{"limit after middle", b[0], 1, beta[1:2]},
		{"negative limit means all", store.ID{}, -1, beta},
		// One id space: an id from another stream is a valid cursor, and
		// resumes at the first later event of this stream.
		{"after other stream's id", a1[0], 0, beta},
		{"after other stream's later id", a2[0], 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := l.ReadAfter("beta", tc.after, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			checkEvents(t, "beta", got, tc.want)
		})
	}

	t.Run("unknown stream", func(t *testing.T) {
		got, err := l.ReadAfter("nope", store.ID{}, 0)
		if err != nil || len(got) != 0 {
			t.Fatalf("ReadAfter(nope) = %v, %v; want nothing", got, err)
		}
		err = l.ScanAfter("nope", store.ID{}, 0, func(*store.Event) error {
			t.Errorf("scan of unknown stream called fn")
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("scan", func(t *testing.T) {
		var got []store.ID
		err := l.ScanAfter("beta", b[0], 5, func(e *store.Event) error {
			if e.Stream != "beta" {
				t.Errorf("scanned event has stream %q", e.Stream)
			}
			got = append(got, e.ID)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, b[1:]) {
			t.Fatalf("scan after %s = %v, want %v", b[0], got, b[1:])
		}

		errStop := errors.New("stop")
		calls := 0
		err = l.ScanAfter("beta", store.ID{}, 0, func(*store.Event) error {
			calls++
			return errStop
		})
		if !errors.Is(err, errStop) || calls != 1 {
			t.Fatalf("scan with failing fn: err %v after %d calls, want errStop after 1", err, calls)
		}
	})

	t.Run("read copies data out", func(t *testing.T) {
		got, err := l.ReadAfter("beta", store.ID{}, 1)
		if err != nil {
			t.Fatal(err)
		}
		clear(got[0].Data)
		again, err := l.ReadAfter("beta", store.ID{}, 1)
		if err != nil {
			t.Fatal(err)
		}
		checkEvents(t, "beta after scribbling on a copy", again, beta[:1])
	})

	t.Run("streams", func(t *testing.T) {
		infos, err := l.Streams()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		counts := map[string]uint64{}
		for _, in := range infos {
			names = append(names, in.Name)
			counts[in.Name] = in.Count
			if in.Bytes == 0 {
				t.Errorf("stream %s: zero bytes", in.Name)
			}
		}
		if want := []string{"alpha", "alpha0", "beta", "gamma.v1_x-y"}; !slices.Equal(names, want) {
			t.Fatalf("streams %v, want %v", names, want)
		}
		if counts["alpha"] != 2 || counts["beta"] != 3 || counts["gamma.v1_x-y"] != 2 {
			t.Fatalf("counts %v", counts)
		}
		if infos[2].FirstID != b[0] || infos[2].LastID != b[2] {
			t.Fatalf("beta id range %s..%s, want %s..%s", infos[2].FirstID, infos[2].LastID, b[0], b[2])
		}
	})
}

// checkEvents compares events field by field; a nil and an empty want both
// mean "nothing".
func checkEvents(tb testing.TB, what string, got, want []store.Event) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Fatalf("%s: %d events %v, want %d", what, len(got), idsOf(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.ID != w.ID || g.Stream != w.Stream || g.Type != w.Type || !bytes.Equal(g.Data, w.Data) {
			tb.Fatalf("%s: event %d = {%s %q %q %q}, want {%s %q %q %q}",
				what, i, g.ID, g.Stream, g.Type, g.Data, w.ID, w.Stream, w.Type, w.Data)
		}
	}
}

func TestRestartKeepsIDsIncreasing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	acked := map[string][]store.ID{}
	var last store.ID
	for round := range 3 {
		l := testkit.OpenAt(t, path, store.Options{})
		if got := l.LastID(); got != last {
			t.Fatalf("round %d: reopened LastID = %s, want %s", round, got, last)
		}
		for _, s := range []string{"a", "b"} {
			if got := idsOf(readAll(t, l, s)); !slices.Equal(got, acked[s]) {
				t.Fatalf("round %d: stream %s after reopen = %v, want %v", round, s, got, acked[s])
			}
		}
		for i := range 10 {
			s := []string{"a", "b"}[i%2]
			got := mustAppend(t, l, s, makeEvents("", 1+i%3, i)...)
			if got[0].Compare(last) <= 0 {
				t.Fatalf("round %d: new id %s not after %s", round, got[0], last)
			}
			acked[s] = append(acked[s], got...)
			last = got[len(got)-1]
		}
		if got := l.LastID(); got != last {
			t.Fatalf("round %d: LastID = %s, want %s", round, got, last)
		}
		mustClose(t, l)
	}
	for s, got := range acked {
		checkIncreasing(t, "stream "+s, got)
	}
}

func TestClockStepsBackwards(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	t0 := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	clock := newFakeClock(t0)
	l := testkit.OpenAt(t, path, store.Options{Now: clock.Now})

	var got []store.ID
	got = append(got, mustAppend(t, l, "a", makeEvents("", 1, 0)...)...)
	if tm := got[0].Time(); !tm.Equal(t0) {
		t.Fatalf("first id time %v, want the clock's %v", tm, t0)
	}
	clock.Set(t0.Add(-time.Hour))
	got = append(got, mustAppend(t, l, "a", makeEvents("", 1, 1)...)...)
	got = append(got, mustAppend(t, l, "b", makeEvents("", 3, 2)...)...)
	checkIncreasing(t, "after stepping back an hour", got)

	// The persisted id, not the clock, is the floor after a restart.
	mustClose(t, l)
	clock.Set(t0.Add(-2 * time.Hour))
	l = testkit.OpenAt(t, path, store.Options{Now: clock.Now})
	got = append(got, mustAppend(t, l, "a", makeEvents("", 2, 5)...)...)
	checkIncreasing(t, "after reopening two hours back", got)

	// Once the clock is ahead again, ids follow it.
	t1 := t0.Add(time.Hour)
	clock.Set(t1)
	next := mustAppend(t, l, "a", makeEvents("", 1, 7)...)
	got = append(got, next...)
	checkIncreasing(t, "after the clock caught up", got)
	if tm := next[0].Time(); !tm.Equal(t1) {
		t.Fatalf("id time %v once the clock is ahead, want %v", tm, t1)
	}
	for _, s := range []string{"a", "b"} {
		checkIncreasing(t, "stream "+s+" read back", idsOf(readAll(t, l, s)))
	}
}

func TestManyIDsInOneMillisecond(t *testing.T) {
	t0 := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	l := testkit.OpenAt(t, filepath.Join(t.TempDir(), "log.db"), store.Options{Now: func() time.Time { return t0 }})
	var got []store.ID
	got = append(got, mustAppend(t, l, "a", makeEvents("", 5000, 0)...)...)
	for i := range 50 {
		got = append(got, mustAppend(t, l, "a", makeEvents("", 1, i)...)...)
	}
	checkIncreasing(t, "ids of one millisecond", got)
	for _, id := range got {
		if !id.Time().Equal(t0) {
			t.Fatalf("id %s has time %v, want %v", id, id.Time(), t0)
		}
	}
	if stored := idsOf(readAll(t, l, "a")); !slices.Equal(stored, got) {
		t.Fatalf("stored %d ids differ from the %d acknowledged", len(stored), len(got))
	}
}

func TestOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	l := testkit.OpenAt(t, path, store.Options{})
	start := time.Now()
	l2, err := store.Open(path, store.Options{OpenTimeout: 50 * time.Millisecond})
	if err == nil {
		l2.Close()
		t.Fatal("second open of a database in use succeeded")
	}
	if !errors.Is(err, store.ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	// Generous: the point is "bounded by OpenTimeout", not "never hangs".
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("second open took %v with a 50ms timeout", d)
	}
	// The failed open must not have disturbed the holder.
	mustAppend(t, l, "a", makeEvents("", 1, 0)...)
	mustClose(t, l)
	testkit.OpenAt(t, path, store.Options{OpenTimeout: 50 * time.Millisecond})
}

func TestClosed(t *testing.T) {
	l := testkit.OpenAt(t, filepath.Join(t.TempDir(), "log.db"), store.Options{})
	mustAppend(t, l, "a", makeEvents("", 1, 0)...)
	if err := l.Ping(); err != nil {
		t.Fatalf("Ping on an open log: %v", err)
	}
	mustClose(t, l)

	if _, err := l.Append(t.Context(), "a", makeEvents("", 1, 1)); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Append after Close: %v, want ErrClosed", err)
	}
	if err := l.Ping(); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Ping after Close: %v, want ErrClosed", err)
	}
	if _, err := l.ReadAfter("a", store.ID{}, 0); !errors.Is(err, store.ErrClosed) {
		t.Errorf("ReadAfter after Close: %v, want ErrClosed", err)
	}
	if _, err := l.Streams(); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Streams after Close: %v, want ErrClosed", err)
	}
	if err := l.Close(); !errors.Is(err, store.ErrClosed) {
		t.Errorf("second Close: %v, want ErrClosed", err)
	}
}

// Close must commit what it already accepted: an Append that returned nil
// while Close ran is durable, and every other one fails with ErrClosed.
func TestCloseWhileAppending(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	l := testkit.OpenAt(t, path, store.Options{})

	type result struct {
		acked []store.ID
		err   error
	}
	results := make([]result, 8)
	var acks atomic.Int64
	var wg sync.WaitGroup
	for g := range results {
		wg.Go(func() {
			for i := 0; ; i++ {
				got, err := l.Append(t.Context(), "a", makeEvents("", 1+i%3, i))
				if err != nil {
					results[g].err = err
					return
				}
				results[g].acked = append(results[g].acked, got...)
				acks.Add(1)
			}
		})
	}
	testkit.WaitFor(t, "50 acknowledged appends", func() bool { return acks.Load() >= 50 })
	closeErr := l.Close()
	wg.Wait()
	if closeErr != nil {
		t.Fatalf("Close: %v", closeErr)
	}

	var acked []store.ID
	for g, r := range results {
		if !errors.Is(r.err, store.ErrClosed) {
			t.Errorf("appender %d ended with %v, want ErrClosed", g, r.err)
		}
		acked = append(acked, r.acked...)
	}
	l = testkit.OpenAt(t, path, store.Options{})
	stored := map[store.ID]bool{}
	for _, id := range idsOf(readAll(t, l, "a")) {
		stored[id] = true
	}
	for _, id := range acked {
		if !stored[id] {
			t.Fatalf("acknowledged id %s lost by Close", id)
		}
	}
	// Every queued append is answered before Close returns, so nothing was
	// stored that its caller did not hear about.
	if len(stored) != len(acked) {
		t.Fatalf("%d events stored, %d acknowledged", len(stored), len(acked))
	}
}

// Close must commit appends that were queued before it began, even while the
// writer is busy: they were accepted, so their callers get ids, not errors.
func TestCloseCommitsQueuedAppends(t *testing.T) {
	const queued = 8
	path := filepath.Join(t.TempDir(), "log.db")
	l := testkit.OpenAt(t, path, store.Options{})
	release := holdWriter(t, l)

	type result struct {
		ids []store.ID
		err error
	}
	results := make([]result, queued)
	var wg sync.WaitGroup
	for g := range queued {
		wg.Go(func() {
			results[g].ids, results[g].err = l.Append(t.Context(), "a", makeEvents("", 2, g))
		})
	}
	testkit.WaitFor(t, "appends to queue behind the held writer", func() bool {
		return l.QueuedAppends() == queued
	})
	closed := make(chan error, 1)
	go func() { closed <- l.Close() }()
	testkit.WaitFor(t, "Close to begin", func() bool {
		return errors.Is(l.Ping(), store.ErrClosed)
	})
	if _, err := l.Append(t.Context(), "a", makeEvents("late", 1, 0)); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Append after Close began: %v, want ErrClosed", err)
	}
	release()
	wg.Wait()
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}

	var acked []store.ID
	for g, r := range results {
		if r.err != nil {
			t.Fatalf("append %d, queued before Close: %v", g, r.err)
		}
		acked = append(acked, r.ids...)
	}
	l = testkit.OpenAt(t, path, store.Options{})
	stored := idsOf(readAll(t, l, "a"))
	slices.SortFunc(acked, store.ID.Compare)
	if !slices.Equal(stored, acked) {
		t.Fatalf("stored %d ids, acknowledged %d", len(stored), len(acked))
	}
}

// An Append whose ctx ends returns at once, but its events stay queued and
// may still commit. The caller owns its buffers again as soon as Append
// returns, so what commits must be what was passed, not what the caller
// wrote into the buffer afterwards.
func TestCanceledAppendKeepsItsData(t *testing.T) {
	l := testkit.OpenAt(t, filepath.Join(t.TempDir(), "log.db"), store.Options{})
	release := holdWriter(t, l)

	buf := []byte(`{"msg":"original"}`)
	ctx, cancel := context.WithCancel(t.Context())
	appended := make(chan error, 1)
	go func() {
		_, err := l.Append(ctx, "a", []store.Event{{Data: buf}})
		appended <- err
	}()
	testkit.WaitFor(t, "the append to queue", func() bool { return l.QueuedAppends() == 1 })
	cancel()
	if err := <-appended; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled Append: %v, want context.Canceled", err)
	}
	copy(buf, `{"msg":"REUSED!!"}`)
	release()

	// A later append on the same writer is answered after the queued one
	// has been committed or dropped.
	mustAppend(t, l, "a", makeEvents("", 1, 1)...)
	evs := readAll(t, l, "a")
	if len(evs) == 2 && string(evs[0].Data) != `{"msg":"original"}` {
		t.Fatalf("the canceled append stored %q, not the data it was given", evs[0].Data)
	}
}

// TestFsyncOnCommit guards the one durability setting a SIGKILL test cannot
// see: data written without fsync survives a killed process, not a power cut.
func TestFsyncOnCommit(t *testing.T) {
	l := testkit.OpenAt(t, filepath.Join(t.TempDir(), "sync.db"), store.Options{})
	if l.NoSync() {
		t.Fatal("bbolt NoSync is set: commits would not be fsynced")
	}
}
