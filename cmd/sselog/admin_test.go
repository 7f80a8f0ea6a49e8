package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

// appendEvents appends n events of about size bytes to stream, in batches
// of at most 500.
func appendEvents(t *testing.T, l *store.Log, stream string, n, size int) {
	t.Helper()
	for n > 0 {
		evs := make([]store.Event, min(n, 500))
		for i := range evs {
			evs[i] = store.Event{Type: "fill", Data: fmt.Appendf(nil, `{"n":%d,"pad":%q}`, n-i, strings.Repeat("p", size))}
		}
		if _, err := l.Append(context.Background(), stream, evs); err != nil {
			t.Fatal(err)
		}
		n -= len(evs)
	}
}

// trimTo trims stream down to its newest keep events, as the retention
// worker does: in bounded transactions.
func trimTo(t *testing.T, l *store.Log, stream string, keep uint64) {
	t.Helper()
	for {
		res, err := l.Trim(stream, store.Cut{MaxEvents: keep}, 5000)
		if err != nil {
			t.Fatal(err)
		}
		if !res.More {
			return
		}
	}
}

// fixture is what a test database holds, to compare after compaction.
type fixture struct {
	events   map[string][]sseEvent
	infos    map[string]store.StreamInfo
	policies map[string]store.Policy
	deleted  []store.StreamInfo
	lastID   store.ID
}

func ptr[T any](v T) *T { return &v }

// makeFixture fills a database at path and leaves most of it free: a big
// stream trimmed to its newest 100 events, a small one with a retention
// override, a deleted stream, and an override set ahead of a stream.
func makeFixture(t *testing.T, path string, bigEvents int) fixture {
	t.Helper()
	l, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	appendEvents(t, l, "big", bigEvents, 1000)
	appendEvents(t, l, "small", 7, 10)
	appendEvents(t, l, "gone", 20, 10)
	if _, err := l.DeleteStream(context.Background(), "gone"); err != nil {
		t.Fatal(err)
	}
	if err := l.SetPolicy("small", store.Policy{MaxAge: ptr(24 * time.Hour), MaxEvents: ptr(uint64(0))}); err != nil {
		t.Fatal(err)
	}
	if err := l.SetPolicy("future", store.Policy{MaxBytes: ptr(uint64(1 << 20))}); err != nil {
		t.Fatal(err)
	}
	trimTo(t, l, "big", 100)

	f := fixture{events: map[string][]sseEvent{}, infos: map[string]store.StreamInfo{}, lastID: l.LastID()}
	for _, s := range []string{"big", "small"} {
		f.events[s] = storedEvents(t, l, s)
		if f.infos[s], err = l.Stream(s); err != nil {
			t.Fatal(err)
		}
	}
	if f.policies, err = l.Policies(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := store.Inspect(path)
	if err != nil {
		t.Fatal(err)
	}
	f.deleted = r.Deleted
	return f
}

// check requires the database at path to hold what f describes, and to
// go on issuing ids after the last one.
func (f fixture) check(t *testing.T, path string) {
	t.Helper()
	r, err := store.Inspect(path)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(r.Deleted) != fmt.Sprint(f.deleted) || len(f.deleted) != 1 {
		t.Errorf("deleted streams %v, want %v", r.Deleted, f.deleted)
	}
	l := testkit.OpenAt(t, path, store.Options{})
	for s, want := range f.events {
		if d := diffEvents(storedEvents(t, l, s), want); d != "" {
			t.Errorf("%s: %s", s, d)
		}
		if info, err := l.Stream(s); err != nil || info != f.infos[s] {
			t.Errorf("%s: %+v, %v; want %+v", s, info, err, f.infos[s])
		}
	}
	if p, err := l.Policies(); err != nil || fmt.Sprint(policyTexts(p)) != fmt.Sprint(policyTexts(f.policies)) {
		t.Errorf("policies %v, %v; want %v", policyTexts(p), err, policyTexts(f.policies))
	}
	if l.LastID() != f.lastID {
		t.Errorf("last id %s, want %s", l.LastID(), f.lastID)
	}
	ids, err := l.Append(context.Background(), "big", []store.Event{{Data: []byte("1")}})
	if err != nil || ids[0].Compare(f.lastID) <= 0 {
		t.Errorf("append after reopening: %v, %v; want an id after %s", ids, err, f.lastID)
	}
}

func policyTexts(m map[string]store.Policy) map[string]string {
	out := map[string]string{}
	for k, p := range m {
		out[k] = policyText(p, true)
	}
	return out
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func TestCompactInPlace(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db := filepath.Join(dir, "x.db")
	f := makeFixture(t, db, 20000)
	before := fileSize(t, db)

	stdout, err := runAdmin(t, "compact", "--db", db)
	if err != nil {
		t.Fatalf("compact: %v", err)
	}
	after := fileSize(t, db)
	t.Logf("%s", strings.TrimSpace(stdout))
	want := fmt.Sprintf("compacted %s in place: %d bytes (%s) -> %d bytes (%s), ", db, before, sizeText(before), after, sizeText(after))
	if !strings.HasPrefix(stdout, want) {
		t.Errorf("stdout %q, want it to begin %q", stdout, want)
	}
	if after > before/4 {
		t.Errorf("compacted from %d to %d bytes, want at most a quarter", before, after)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Errorf("directory holds %v, %v; want the database alone", entries, err)
	}
	f.check(t, db)
}

func TestCompactOut(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "x.db"), filepath.Join(dir, "small.db")
	f := makeFixture(t, src, 5000)
	orig, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}

	stdout, err := runAdmin(t, "compact", "--db", src, "--out", dst)
	if err != nil {
		t.Fatalf("compact: %v", err)
	}
	if !strings.Contains(stdout, "into "+dst+" (the original is unchanged)") {
		t.Errorf("stdout %q does not say where the copy went", stdout)
	}
	if b, err := os.ReadFile(src); err != nil || !bytes.Equal(b, orig) {
		t.Errorf("the original changed: %v", err)
	}
	if after := fileSize(t, dst); after >= int64(len(orig)) {
		t.Errorf("the copy has %d bytes, the original %d", after, len(orig))
	}
	// An existing --out is never replaced.
	if _, err := runAdmin(t, "compact", "--db", src, "--out", dst); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second compact to %s: %v, want a refusal", dst, err)
	}
	f.check(t, dst)
}

// TestCompactInspectRefuse covers what both offline commands refuse: a
// database a running server holds, and a file that is not there.
func TestCompactInspectRefuse(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	held := filepath.Join(dir, "held.db")
	l := testkit.OpenAt(t, held, store.Options{})
	appendEvents(t, l, "s", 3, 10)
	heldBytes, err := os.ReadFile(held)
	if err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "nothing", "here.db")
	missingHere := filepath.Join(dir, "here.db")

	for _, cmd := range []string{"compact", "inspect"} {
		t.Run(cmd+" held", func(t *testing.T) {
			_, err := runAdmin(t, cmd, "--db", held)
			if !errors.Is(err, store.ErrLocked) || !strings.Contains(err.Error(), held) ||
				!strings.Contains(err.Error(), "in use") || !strings.Contains(err.Error(), "stop the server") {
				t.Errorf("err = %v, want store.ErrLocked naming %s and saying what to do", err, held)
			}
		})
		for _, path := range []string{missing, missingHere} {
			t.Run(cmd+" missing "+filepath.Base(filepath.Dir(path)), func(t *testing.T) {
				_, err := runAdmin(t, cmd, "--db", path)
				if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
					t.Errorf("err = %v, want a not-exist error naming %s", err, path)
				}
			})
		}
	}
	if b, err := os.ReadFile(held); err != nil || !bytes.Equal(b, heldBytes) {
		t.Errorf("the held database changed: %v", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 || entries[0].Name() != "held.db" {
		t.Errorf("directory holds %v, %v; want held.db alone", entries, err)
	}
}

func TestInspect(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "x.db")
	makeFixture(t, db, 3000)
	orig, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	want, err := store.Inspect(db)
	if err != nil {
		t.Fatal(err)
	}
	if len(want.Streams) != 2 || want.FreePages == 0 {
		t.Fatalf("fixture: %+v, want two streams and free pages", want)
	}

	t.Run("table", func(t *testing.T) {
		out, err := runAdmin(t, "inspect", "--db", db)
		if err != nil {
			t.Fatalf("inspect: %v", err)
		}
		t.Logf("output:\n%s", out)
		lines := []string{
			`database\s+` + regexp.QuoteMeta(db),
			fmt.Sprintf(`file size\s+%d bytes \(%s\)`, want.FileSize, regexp.QuoteMeta(sizeText(want.FileSize))),
			fmt.Sprintf(`page size\s+%d bytes`, want.PageSize),
			fmt.Sprintf(`pages\s+%d \(%s\)`, want.Pages, regexp.QuoteMeta(sizeText(want.Pages*int64(want.PageSize)))),
			fmt.Sprintf(`free pages\s+%d \(%s\)`, want.FreePages, regexp.QuoteMeta(sizeText(int64(want.FreePages*want.PageSize)))),
			fmt.Sprintf(`last id\s+%s \(%s\)`, want.LastID, regexp.QuoteMeta(want.LastTime.Format(time.RFC3339Nano))),
			`STREAM\s+EVENTS\s+BYTES\s+FIRST ID\s+LAST ID\s+LOW WATER\s+RETENTION`,
			`DELETED STREAM\s+LOW WATER`,
			fmt.Sprintf(`gone\s+%s`, want.Deleted[0].LowWater),
			`future\s+max_bytes=1048576`,
			`small\s+7\s+.*max_age=24h0m0s max_events=unlimited`,
			`sselog compact --db ` + regexp.QuoteMeta(db) + ` \(with the server stopped\) .*`,
		}
		for _, s := range want.Streams {
			retention := "-"
			if p, ok := want.Policies[s.Name]; ok {
				retention = regexp.QuoteMeta(policyText(p, true))
			}
			lowWater := "-"
			if !s.LowWater.IsZero() {
				lowWater = s.LowWater.String()
			}
			lines = append(lines, fmt.Sprintf(`%s\s+%d\s+%d\s+%s\s+%s\s+%s\s+%s`, s.Name, s.Count, s.Bytes, s.FirstID, s.LastID, lowWater, retention))
		}
		for _, l := range lines {
			if !regexp.MustCompile(`(?m)^` + l + `\s*$`).MatchString(out) {
				t.Errorf("no line matches %q", l)
			}
		}
	})

	t.Run("json", func(t *testing.T) {
		out, err := runAdmin(t, "inspect", "--db", db, "--json")
		if err != nil {
			t.Fatalf("inspect: %v", err)
		}
		var got store.Report
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("decode %s: %v", out, err)
		}
		wantJSON := want
		// Policies hold pointers: compare them as text.
		if fmt.Sprint(policyTexts(got.Policies)) != fmt.Sprint(policyTexts(want.Policies)) || len(got.Policies) != 2 {
			t.Errorf("--json policies %v, want %v", policyTexts(got.Policies), policyTexts(want.Policies))
		}
		got.Policies, wantJSON.Policies = nil, nil
		if g, w := fmt.Sprintf("%+v", got), fmt.Sprintf("%+v", wantJSON); g != w {
			t.Errorf("--json gave\n%s\nwant\n%s", g, w)
		}
	})

	if b, err := os.ReadFile(db); err != nil || !bytes.Equal(b, orig) {
		t.Errorf("inspect changed the database: %v", err)
	}
}

func TestInspectEmpty(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "x.db")
	l, err := store.Open(db, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := runAdmin(t, "inspect", "--db", db)
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	for _, want := range []string{"last id     -\n", "\nno streams\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output\n%s\nlacks %q", out, want)
		}
	}
}

// TestInspectDamaged: a file that is not a whole database is an error that
// names it, not a crash, and inspect leaves it as it was.
func TestInspectDamaged(t *testing.T) {
	t.Parallel()
	db := newDatabaseBytes(t)
	tests := []struct {
		name    string
		content []byte
	}{
		{"empty", nil},
		{"not a database", bytes.Repeat([]byte("sselog "), 4096)},
		{"truncated to a quarter", db[:len(db)/4]},
		{"truncated to a tenth", db[:len(db)/10]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "x.db")
			if err := os.WriteFile(path, tt.content, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := runAdmin(t, "inspect", "--db", path)
			if err == nil || !strings.Contains(err.Error(), path) {
				t.Errorf("err = %v, want an error naming %s", err, path)
			}
			t.Logf("%v", err)
			if b, err := os.ReadFile(path); err != nil || !bytes.Equal(b, tt.content) {
				t.Errorf("inspect changed the file: %v", err)
			}
		})
	}
}

// killChild ends c with SIGKILL, which nothing can catch or clean up
// after, and requires that it was the signal that ended it: a child that
// had already finished was not killed mid-run.
func killChild(t *testing.T, c *child) {
	t.Helper()
	select {
	case <-c.exited:
		t.Fatalf("the child finished (%v) before it could be killed\nstderr:\n%s", c.err, c.stderr)
	default:
	}
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	c.wait(t, stopTimeout)
	if ws, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the child ended with %v, want SIGKILL\nstderr:\n%s", c.cmd.ProcessState, c.stderr)
	}
}

// haveFlock reports whether store can tell a killed run's temporary file
// from a live run's here: where it has no flock (store's flock_other.go),
// it refuses any that exists instead of taking it over.
func haveFlock() bool {
	switch runtime.GOOS {
	case "linux", "android", "darwin", "ios", "freebsd", "netbsd", "openbsd", "dragonfly":
		return true
	}
	return false
}

// requireFlock skips a test of taking over a killed run's temporary file
// where store cannot.
func requireFlock(t *testing.T) {
	t.Helper()
	if !haveFlock() {
		t.Skipf("no flock on %s: a leftover temporary file is refused until removed", runtime.GOOS)
	}
}

// TestCompactOutKilled: `sselog compact --out` killed with SIGKILL while it
// writes never leaves a file at --out, and what it leaves under its
// temporary name does not block the next run, which produces the whole
// copy. (It used to write straight to --out: a kill left a 16 KiB file
// that blocked the next run, or a partial database without its meta and
// streams buckets that a server would then serve.)
func TestCompactOutKilled(t *testing.T) {
	requireFlock(t)
	t.Parallel()
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "x.db"), filepath.Join(dir, "small.db")
	tmp := dst + ".compacting"
	// Enough live data that the copy takes a while: a kill lands mid-run.
	l := testkit.OpenAt(t, src, store.Options{})
	appendEvents(t, l, "big", 5000, 1000)
	appendEvents(t, l, "small", 7, 10)
	want := storedEvents(t, l, "small")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	before, err := store.Inspect(src)
	if err != nil {
		t.Fatal(err)
	}

	c := startChild(t, "compact", "--db", src, "--out", dst)
	deadline := time.Now().Add(startTimeout)
	for {
		if _, err := os.Lstat(dst); err == nil {
			t.Fatalf("%s exists while the compaction runs", dst)
		}
		if st, err := os.Stat(tmp); err == nil && st.Size() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %v\nstderr:\n%s", tmp, startTimeout, c.stderr)
		}
		select {
		case <-c.exited:
			t.Fatalf("the compaction ended (%v) before it was seen writing\nstderr:\n%s", c.err, c.stderr)
		case <-time.After(time.Millisecond):
		}
	}
	killChild(t, c)
	if _, err := os.Lstat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after SIGKILL, %s: %v; want no file", dst, err)
	}
	st, err := os.Stat(tmp)
	if err != nil {
		t.Fatalf("the killed run left no temporary file (%v): the test did not kill it mid-run", err)
	}
	t.Logf("the killed run left %s: %d bytes", filepath.Base(tmp), st.Size())

	stdout, err := runAdmin(t, "compact", "--db", src, "--out", dst)
	if err != nil {
		t.Fatalf("compact after a killed run: %v", err)
	}
	t.Logf("%s", strings.TrimSpace(stdout))
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the temporary file is still there: %v", err)
	}
	if err := store.Check(dst); err != nil {
		t.Fatalf("check of the copy: %v", err)
	}
	after, err := store.Inspect(dst)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(after.Streams) != fmt.Sprint(before.Streams) || after.LastID != before.LastID {
		t.Fatalf("the copy holds %+v (last id %s), the original %+v (%s)", after.Streams, after.LastID, before.Streams, before.LastID)
	}
	if d := diffEvents(storedEvents(t, testkit.OpenAt(t, dst, store.Options{}), "small"), want); d != "" {
		t.Errorf("small: %s", d)
	}
}

// TestCompactOutBusy: a compaction to an --out another live run is writing
// is refused with store.ErrBusy, and neither that run's temporary file nor
// --out is touched.
func TestCompactOutBusy(t *testing.T) {
	requireFlock(t)
	t.Parallel()
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "x.db"), filepath.Join(dir, "small.db")
	makeFixture(t, src, 100)
	live, err := store.CreateTemp(dst + ".compacting")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if _, err := live.WriteString("the live run's pages"); err != nil {
		t.Fatal(err)
	}
	_, err = runAdmin(t, "compact", "--db", src, "--out", dst)
	if !errors.Is(err, store.ErrBusy) || !strings.Contains(err.Error(), dst) {
		t.Fatalf("compact beside a live run: %v, want store.ErrBusy naming %s", err, dst)
	}
	if b, _ := os.ReadFile(dst + ".compacting"); string(b) != "the live run's pages" {
		t.Errorf("the live run's file now holds %q", b)
	}
	if _, err := os.Lstat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s: %v, want no file", dst, err)
	}
}
