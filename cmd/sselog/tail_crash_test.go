package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sselog/sselog/client"
	"github.com/sselog/sselog/internal/testkit"
)

// TestTailCheckpointAcrossKills: `sselog tail --checkpoint` runs as a child
// process while events are published, and is killed with SIGKILL five
// times, each at a random point at least one checkpoint save into its run;
// a last run with --no-follow ends it. What the test holds, run by run:
//
//   - each run prints a gap-free run of the log, in order, starting with
//     the event right after the checkpoint the previous run left (the
//     first, after --from beginning);
//   - the checkpoint a killed run leaves is an id that run printed, or the
//     one it started from: never ahead of the output, so nothing is lost;
//   - the lines printed twice are exactly those a killed run printed after
//     the checkpoint it left: the next run starts with them, every
//     duplicate's id is greater than the checkpoint its run started from,
//     and there are as many duplicates as the killed runs printed after
//     their checkpoints, no more. (Those are the lines of at most one save
//     interval, checkpointEvery, before each kill; how many lines that is
//     depends on the machine, so the test logs it and does not bound it.)
//   - together, the runs print every event of the log, with its type and
//     data.
func TestTailCheckpointAcrossKills(t *testing.T) {
	t.Parallel()
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "x.db"), "--retry", "20ms")
	cp := filepath.Join(t.TempDir(), "tail.checkpoint")
	cl, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}

	// The publisher goes on until the kills are over.
	ctx, stopPublishing := context.WithCancel(context.Background())
	defer stopPublishing()
	var pubWG sync.WaitGroup
	var pubErr error
	pubWG.Add(1)
	go func() {
		defer pubWG.Done()
		for n := 0; ctx.Err() == nil; n += 10 {
			events := make([]client.Event, 10)
			for i := range events {
				events[i] = client.Event{Type: "n", Data: json.RawMessage(fmt.Sprint(n + i))}
			}
			if _, err := cl.Publish(ctx, "s", events...); err != nil {
				if ctx.Err() == nil {
					pubErr = err
				}
				return
			}
		}
	}()

	args := []string{"tail", "--url", srv.URL, "--stream", "s", "--from", "beginning", "--checkpoint", cp}
	type run struct {
		lines []tailed // printed, in order
		ids   []string // their ids
		left  string   // the checkpoint when it ended ("" for none)
	}
	var runs []run
	readCP := func() string {
		b, err := os.ReadFile(cp)
		if os.IsNotExist(err) {
			return ""
		}
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	for k := range 5 {
		before := readCP()
		c := startHelper(t, "TestHelperServe", nil, args...)
		// At least one save into the run, then a random number of lines
		// more, so that the kill falls anywhere in the save interval.
		testkit.WaitFor(t, "a checkpoint save in this run", func() bool { return readCP() != before })
		more := strings.Count(c.stdout.String(), "\n") + rand.IntN(300)
		testkit.WaitFor(t, "more lines", func() bool { return strings.Count(c.stdout.String(), "\n") >= more })
		if err := c.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		c.wait(t, stopTimeout)
		lines := parseTail(t, c.stdout.String())
		runs = append(runs, run{lines: lines, ids: tailIDs(lines), left: readCP()})
		t.Logf("run %d: %d lines, killed with the checkpoint %d lines before its last", k, len(lines), len(lines)-1-indexOf(tailIDs(lines), runs[k].left))
	}
	stopPublishing()
	pubWG.Wait()
	if pubErr != nil {
		t.Fatalf("publish: %v", pubErr)
	}
	// The last run: everything left, then exit 0.
	last := startHelper(t, "TestHelperServe", nil, append(args, "--no-follow")...)
	if err := last.wait(t, testkit.Wait); err != nil {
		t.Fatalf("the --no-follow run: %v\nstderr:\n%s", err, last.stderr)
	}
	lines := parseTail(t, last.stdout.String())
	runs = append(runs, run{lines: lines, ids: tailIDs(lines), left: readCP()})

	// The log, in order, through the history endpoint (the server holds
	// the database open).
	var log []string
	want := map[string]string{} // id → data
	for item, err := range cl.History(context.Background(), "s", client.Beginning()) {
		if err != nil {
			t.Fatal(err)
		}
		log = append(log, item.ID)
		want[item.ID] = string(item.Event.Data)
	}
	pos := make(map[string]int, len(log))
	for i, id := range log {
		pos[id] = i
	}

	startAfter, started := -1, "" // the checkpoint a run starts after: its index in log, and its id
	printed := map[string]int{}
	duplicates, unsaved := 0, 0 // lines printed again; lines printed after the checkpoint a run left
	for k, r := range runs {
		if len(r.ids) == 0 {
			t.Fatalf("run %d printed nothing", k)
		}
		for i, l := range r.lines {
			if p, ok := pos[l.ID]; !ok || p != startAfter+1+i {
				t.Fatalf("run %d, line %d: %s is not the log's event %d (a gap, a duplicate within a run, or out of order)", k, i, l.ID, startAfter+1+i)
			}
			if l.Type != "n" || string(l.Data) != want[l.ID] || l.Stream != "s" {
				t.Fatalf("run %d, line %d: %+v, want type n and data %s", k, i, l, want[l.ID])
			}
			if printed[l.ID]++; printed[l.ID] > 1 {
				duplicates++
				// Printed again: the previous run printed it after the
				// checkpoint it left.
				if l.ID <= started {
					t.Errorf("run %d printed %s again, at or before the checkpoint %s it started from", k, l.ID, started)
				}
			}
		}
		if indexOf(r.ids, r.left) < 0 && r.left != started {
			t.Fatalf("run %d left the checkpoint %q, which it neither printed nor started from", k, r.left)
		}
		if k+1 < len(runs) {
			// What this run printed after its checkpoint is printed again,
			// exactly, by the next one, and nothing before it.
			after := r.ids[indexOf(r.ids, r.left)+1:]
			unsaved += len(after)
			next := runs[k+1].ids
			if len(next) < len(after) || strings.Join(next[:len(after)], ",") != strings.Join(after, ",") {
				t.Errorf("run %d printed %d lines after its checkpoint; run %d does not start with them", k, len(after), k+1)
			}
		}
		startAfter, started = pos[r.left], r.left
	}
	if len(printed) != len(log) {
		t.Errorf("the runs printed %d distinct events, the log holds %d", len(printed), len(log))
	}
	if runs[len(runs)-1].left != log[len(log)-1] {
		t.Errorf("the last run left the checkpoint %s, want the log's last id %s", runs[len(runs)-1].left, log[len(log)-1])
	}
	if duplicates != unsaved {
		t.Errorf("%d lines printed twice; the killed runs printed %d after the checkpoints they left", duplicates, unsaved)
	}
	t.Logf("%d events over %d runs; %d lines printed twice", len(log), len(runs), duplicates)
}

// indexOf is the index of id in ids, or -1.
func indexOf(ids []string, id string) int {
	for i, x := range ids {
		if x == id {
			return i
		}
	}
	return -1
}

// TestTailOutputSyncsBeforeSave: an output that is a regular file is
// synced before the checkpoint records a line written to it, so that the
// checkpoint never outlives, across a power loss, the lines it counts as
// printed; pipes and other writers are not synced; a failed sync saves
// nothing.
func TestTailOutputSyncsBeforeSave(t *testing.T) {
	t.Parallel()
	file, err := os.Create(filepath.Join(t.TempDir(), "out.ndjson"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	if fileSync(file) == nil {
		t.Error("a regular file gets no sync")
	}
	if err := fileSync(file)(); err != nil {
		t.Errorf("sync: %v", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if fileSync(w) != nil || fileSync(&strings.Builder{}) != nil {
		t.Error("a pipe or a buffer gets a sync")
	}

	const id = "01JDX3ZJ1P8V6Y5C4Q2W7N9K0A"
	item := client.Item{ID: id, Event: &client.Event{ID: id, Type: "t", Data: json.RawMessage(`1`)}}
	for _, tc := range []struct {
		name    string
		syncErr error
		want    string
	}{
		{"synced", nil, "write sync save:" + id},
		{"sync fails", errors.New("EIO"), "write sync"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var steps []string // one goroutine at a time: print, then close
			cp := &recordingCheckpoint{steps: &steps}
			sync := func() error { steps = append(steps, "sync"); return tc.syncErr }
			o := startTailOutput(writerFunc(func(p []byte) (int, error) { steps = append(steps, "write"); return len(p), nil }), sync, cp)
			if err := o.print("s", item); err != nil {
				t.Fatal(err)
			}
			err := o.close()
			if got := strings.Join(steps, " "); got != tc.want {
				t.Errorf("steps %q, want %q", got, tc.want)
			}
			if (err != nil) != (tc.syncErr != nil) {
				t.Errorf("close: %v, want the sync's error: %v", err, tc.syncErr)
			}
		})
	}
}

// recordingCheckpoint is a checkpoint that notes its saves in steps.
type recordingCheckpoint struct{ steps *[]string }

func (r *recordingCheckpoint) Load(context.Context) (string, error) { return "", nil }
func (r *recordingCheckpoint) Save(_ context.Context, id string) error {
	*r.steps = append(*r.steps, "save:"+id)
	return nil
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
