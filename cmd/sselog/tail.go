package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"iter"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/sselog/sselog/client"
)

// checkpointEvery is the longest a printed line waits before its id is
// saved in --checkpoint: a crash prints again at most the lines of the
// last second or so.
const checkpointEvery = time.Second

type tailConfig struct {
	url        string
	stream     string
	token      string
	from       string
	since      string
	last       int
	checkpoint string
	noFollow   bool

	sinceTime time.Time // --since, read; zero when not given
}

func tailFlags(stderr io.Writer) (*flag.FlagSet, *tailConfig) {
	c := &tailConfig{}
	flags := flag.NewFlagSet("sselog tail", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.StringVar(&c.url, "url", "http://127.0.0.1:8080", "base URL of the running server")
	flags.StringVar(&c.stream, "stream", "", "stream to read (required)")
	flags.StringVar(&c.from, "from", "", "start after this event id (\"beginning\" or the all-zero id: from the first event)")
	flags.StringVar(&c.since, "since", "", "start at the first event at or after this time: RFC 3339, Unix milliseconds, or a duration ago (10m)")
	flags.IntVar(&c.last, "last", 0, "start with the newest N events")
	flags.StringVar(&c.checkpoint, "checkpoint", "", "file that records the id of each printed line (saved at least every second, and at exit); when it holds one, start after it")
	flags.BoolVar(&c.noFollow, "no-follow", false, "stop at the last event stored when the command starts, and exit 0")
	flags.StringVar(&c.token, "token", "", "bearer token sent in the Authorization header, if the server wants one")
	flags.Usage = func() {
		fmt.Fprintf(stderr, `Usage: sselog tail --stream S [--from ID | --since TIME | --last N] [flags]

Prints a stream's events, one JSON object per line on stdout:
  {"id": "...", "stream": "...", "type": "...", "data": ..., "time": "..."}
(type "message" for an untyped event; time is the id's, RFC 3339, UTC).
Where the stream does not continue exactly (events removed by retention or
deletion, an id the server does not know), a line of type "reset" says so,
with {"reason", "oldest_id"} as its data, and a note goes to stderr.

It starts after --from, at --since, or with the --last N events; without
any, it prints what is published from now on, or, with --no-follow,
everything stored. It follows the stream, reconnecting by itself without
gap or duplicate, until interrupted (exit 0).

With --no-follow it reads the stored events page by page instead (the
history endpoint) and stops at the stream's last event as of its start,
with exit 0: nothing published after that is printed, so with --last N
an event published between the start and the first page counts among
the N without being printed. The history endpoint tells a gap, not its
cause: a reset line's reason is then "gap".

With --checkpoint FILE, the id of every printed line is saved in FILE (at
least every second, and at exit; stdout, when it is a file, is synced to
disk first), and a FILE that holds an id wins over --from, --since and
--last: the command resumes after it. FILE's directory must exist. After
a crash, the lines printed since the last save are printed again; none is
lost.

--url and --token can also be set as SSELOG_URL and SSELOG_TOKEN; flags
win.

`)
		flags.PrintDefaults()
	}
	return flags, c
}

// start is where the flags say to begin, and whether they said anything.
func (c *tailConfig) start(flags *flag.FlagSet, now time.Time) (client.From, bool, error) {
	var given []string
	flags.Visit(func(f *flag.Flag) {
		if f.Name == "from" || f.Name == "since" || f.Name == "last" {
			given = append(given, "--"+f.Name)
		}
	})
	if len(given) > 1 {
		return client.From{}, false, fmt.Errorf("give at most one of --from, --since and --last (got %s and %s)", given[0], given[1])
	}
	switch {
	case len(given) == 0:
		return client.Live(), false, nil
	case given[0] == "--from":
		if c.from == "beginning" {
			return client.Beginning(), true, nil
		}
		from := client.After(c.from)
		if from.ID() == "" {
			return client.From{}, false, fmt.Errorf("--from %q: want an event id (a ULID), or \"beginning\"", c.from)
		}
		return from, true, nil
	case given[0] == "--since":
		t, err := parseSinceFlag(c.since, now)
		if err != nil {
			return client.From{}, false, err
		}
		c.sinceTime = t
		return client.Since(t), true, nil
	default:
		if c.last < 1 || c.last > 10000 {
			return client.From{}, false, fmt.Errorf("--last %d: want 1 to 10000", c.last)
		}
		return client.Last(c.last), true, nil
	}
}

// parseSinceFlag reads --since: RFC 3339, Unix milliseconds (digits
// only), or a positive duration before now.
func parseSinceFlag(s string, now time.Time) (time.Time, error) {
	if s != "" && digitsOnly(s) {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err == nil {
			return time.UnixMilli(ms), nil
		}
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want an RFC 3339 time (2026-01-02T15:04:05Z), Unix milliseconds, or a duration ago (10m)", s)
}

func digitsOnly(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// tailCommand is `sselog tail`.
func tailCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags, c := tailFlags(stderr)
	if err := parseAdmin(flags, args, "SSELOG_URL", "SSELOG_TOKEN"); err != nil {
		return err
	}
	if c.stream == "" {
		return errors.New("tail: --stream is required")
	}
	from, given, err := c.start(flags, time.Now())
	if err != nil {
		return fmt.Errorf("tail: %w", err)
	}
	cl, err := client.New(c.url, client.WithToken(c.token))
	if err != nil {
		return fmt.Errorf("tail: --url: %w", err)
	}
	var cp client.Checkpoint // nil without --checkpoint
	if c.checkpoint != "" {
		fcp := client.NewFileCheckpoint(c.checkpoint)
		// Load also fails when the file's directory is missing: better
		// at the start than at the first save, after lines were printed.
		id, err := fcp.Load(ctx)
		if err != nil {
			return fmt.Errorf("tail: --checkpoint: %w", err)
		}
		cp = fcp
		if id != "" {
			from, given, c.sinceTime = client.After(id), true, time.Time{}
			fmt.Fprintf(stderr, "sselog tail: resuming after %s (checkpoint %s)\n", id, c.checkpoint)
		}
	}
	if c.noFollow && !given {
		from = client.Beginning()
	}
	if err := follow(ctx, cl, c, from, cp, stdout, stderr); err != nil {
		return fmt.Errorf("tail: %w", err)
	}
	return nil
}

// follow prints the stream from from over SSE until ctx ends, or, with
// --no-follow, over the history endpoint up to the stream's last event as
// of the start (Info, before the walk): nothing published after it is
// printed. A history walk always ends, at the first empty page if not at
// that event; over SSE, a start by time or count whose events went away
// before it connected would wait for a new one.
func follow(ctx context.Context, cl *client.Client, c *tailConfig, from client.From, cp client.Checkpoint, stdout, stderr io.Writer) error {
	var (
		items iter.Seq2[client.Item, error]
		until string // --no-follow: the last id to print
	)
	if !c.noFollow {
		items = cl.Subscribe(ctx, c.stream, from)
	} else {
		info, err := cl.Info(ctx, c.stream)
		if errors.Is(err, client.ErrNotFound) {
			return nil // never published to, or deleted: nothing is stored
		}
		if err != nil {
			return err
		}
		until = info.LastID
		if nothingAfter(from, c.sinceTime, until) {
			return nil
		}
		items = cl.History(ctx, c.stream, from)
	}
	out := newTailOutput(stdout, cp)
	err := func() error {
		for item, err := range items {
			if err != nil {
				if ctx.Err() != nil {
					return nil // interrupted: the normal end of a follow
				}
				return err
			}
			if c.noFollow && item.Event != nil {
				if item.ID > until {
					return nil // published after the start: not ours to print
				}
			}
			if err := out.print(c.stream, item); err != nil {
				return err
			}
			if item.Reset != nil {
				noteReset(stderr, c.stream, item)
			}
			if c.noFollow && item.ID >= until {
				return nil
			}
		}
		return nil
	}()
	return errors.Join(err, out.close())
}

// nothingAfter reports whether a stream whose last event is until holds
// nothing to print from from (since is from's time, for a Since start),
// so that --no-follow need not ask.
func nothingAfter(from client.From, since time.Time, until string) bool {
	u, err := ulid.ParseStrict(until)
	if err != nil || u.IsZero() {
		return true
	}
	if id := from.ID(); id != "" {
		return id >= until
	}
	// An event is at or after since when its millisecond is.
	return !since.IsZero() && ulid.Time(u.Time()).Before(since)
}

// noteReset tells stderr what a reset means for the output.
func noteReset(stderr io.Writer, stream string, item client.Item) {
	r := item.Reset
	switch r.Reason {
	case client.ReasonTrimmed:
		next := "none is left"
		if r.OldestID != "" {
			next = "continuing at " + r.OldestID
		}
		fmt.Fprintf(stderr, "sselog tail: %s: events after the resume point were removed by retention (up to %s); %s\n", stream, item.ID, next)
	case client.ReasonDeleted:
		fmt.Fprintf(stderr, "sselog tail: %s: the stream was deleted (at %s); waiting for it to be published to again\n", stream, item.ID)
	case client.ReasonGap:
		next := "none is left"
		if r.OldestID != "" {
			next = "continuing at " + r.OldestID
		}
		fmt.Fprintf(stderr, "sselog tail: %s: events after the resume point were removed (by retention or a deletion; the history endpoint does not say which); %s\n", stream, next)
	case client.ReasonUnknown:
		fmt.Fprintf(stderr, "sselog tail: %s: the server does not know the resume point; continuing with live events after %s\n", stream, item.ID)
	default:
		fmt.Fprintf(stderr, "sselog tail: %s: reset (%s) at %s\n", stream, r.Reason, item.ID)
	}
}

// tailLine is one line of output.
type tailLine struct {
	ID     string          `json:"id"`
	Stream string          `json:"stream"`
	Type   string          `json:"type"`
	Data   json.RawMessage `json:"data"`
	Time   string          `json:"time"`
}

// resetData is a reset line's data, as the server sends it.
type resetData struct {
	Reason   string `json:"reason"`
	OldestID string `json:"oldest_id,omitempty"`
}

// tailTime is RFC 3339 with milliseconds, fixed width, so that lines
// sort and align.
const tailTime = "2006-01-02T15:04:05.000Z07:00"

// encodeLine is an item's output line, LF included.
func encodeLine(stream string, item client.Item) ([]byte, error) {
	line := tailLine{ID: item.ID, Stream: stream}
	if e := item.Event; e != nil {
		line.Type, line.Data, line.Time = e.Type, e.Data, e.Time.Format(tailTime)
	} else {
		data, err := json.Marshal(resetData{Reason: item.Reset.Reason, OldestID: item.Reset.OldestID})
		if err != nil {
			return nil, err
		}
		line.Type, line.Data = "reset", data
		if u, err := ulid.ParseStrict(item.ID); err == nil {
			line.Time = ulid.Time(u.Time()).UTC().Format(tailTime)
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// The data goes out as the server stored it: no \u003c for "<".
	enc.SetEscapeHTML(false)
	if err := enc.Encode(line); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// tailOutput writes lines, each with one write, and records the id of the
// last one written in the checkpoint, if any: every checkpointEvery, and
// at close. A line is written, and synced when the output is a file,
// before its id can be saved, so a checkpoint never runs ahead of the
// output, not even across a power loss.
type tailOutput struct {
	w io.Writer
	// sync makes what was written to w durable; nil when w is not a
	// regular file (what a pipe's reader or a terminal got is not ours to
	// sync).
	sync func() error
	cp   client.Checkpoint
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	printed string // id of the last line written
	saved   string // id last saved
	err     error  // a failed save, reported by the next print
}

func newTailOutput(w io.Writer, cp client.Checkpoint) *tailOutput {
	return startTailOutput(w, fileSync(w), cp)
}

// startTailOutput is newTailOutput with the sync given, for tests.
func startTailOutput(w io.Writer, sync func() error, cp client.Checkpoint) *tailOutput {
	o := &tailOutput{w: w, sync: sync, cp: cp, stop: make(chan struct{}), done: make(chan struct{})}
	if cp == nil {
		close(o.done)
		return o
	}
	go o.saveEvery(checkpointEvery)
	return o
}

func (o *tailOutput) print(stream string, item client.Item) error {
	line, err := encodeLine(stream, item)
	if err != nil {
		return err
	}
	if _, err := o.w.Write(line); err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.printed = item.ID
	return o.err
}

func (o *tailOutput) saveEvery(d time.Duration) {
	defer close(o.done)
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-o.stop:
			return
		case <-t.C:
			if err := o.save(); err != nil {
				o.mu.Lock()
				o.err = err
				o.mu.Unlock()
				return
			}
		}
	}
}

// save records the last line written, if it is not already.
func (o *tailOutput) save() error {
	o.mu.Lock()
	id := o.printed
	o.mu.Unlock()
	if o.cp == nil || id == "" || id == o.saved {
		return nil
	}
	// The lines up to id reach the disk before id does: otherwise a power
	// loss could keep the checkpoint and lose the lines it counts as
	// printed, which the next run would then not print again.
	if o.sync != nil {
		if err := o.sync(); err != nil {
			return fmt.Errorf("syncing the output before the checkpoint: %w", err)
		}
	}
	if err := o.cp.Save(context.Background(), id); err != nil {
		return err
	}
	o.saved = id
	return nil
}

// close stops the periodic saves and makes the last one.
func (o *tailOutput) close() error {
	close(o.stop)
	<-o.done
	o.mu.Lock()
	err := o.err
	o.mu.Unlock()
	if err != nil {
		return err
	}
	return o.save()
}

// fileSync is the sync of an output that is a regular file, or nil.
// Sync fails with EINVAL or ENOTSUP on what cannot be synced (pipes,
// terminals, some file systems); that is no error here: such an output is
// as durable as it gets.
func fileSync(w io.Writer) func() error {
	f, ok := w.(*os.File)
	if !ok {
		return nil
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	return func() error {
		err := f.Sync()
		if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) || errors.Is(err, errors.ErrUnsupported) {
			return nil
		}
		return err
	}
}
