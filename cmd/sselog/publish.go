package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/sselog/sselog/client"
)

// Bounds of sselog publish's input.
const (
	defaultPublishBatch = 100
	maxPublishBatch     = 10000
	// maxPublishLine is the longest input line read: far above what one
	// event of the server's default --max-body can be, and a bound on what
	// a line without end makes the command hold.
	maxPublishLine = 64 << 20
)

type publishConfig struct {
	url    string
	stream string
	typ    string
	token  string
	batch  int
	events bool
}

func publishFlags(stderr io.Writer) (*flag.FlagSet, *publishConfig) {
	c := &publishConfig{}
	flags := flag.NewFlagSet("sselog publish", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.StringVar(&c.url, "url", "http://127.0.0.1:8080", "base URL of the running server")
	flags.StringVar(&c.stream, "stream", "", "stream to publish to (required)")
	flags.StringVar(&c.typ, "type", "", "type of every event (default none: SSE's \"message\")")
	flags.IntVar(&c.batch, "batch", defaultPublishBatch, fmt.Sprintf("most events per request (1 to %d)", maxPublishBatch))
	flags.BoolVar(&c.events, "events", false, `each line is an event object, {"type": "...", "data": ...}, instead of the data alone`)
	flags.StringVar(&c.token, "token", "", "bearer token sent in the Authorization header, if the server wants one")
	flags.Usage = func() {
		fmt.Fprintf(stderr, `Usage: sselog publish --stream S [flags] < events.ndjson

Reads newline-delimited JSON from stdin, each line the data of one event
(with --events, an object {"type": "...", "data": ...}; "data" is required,
other fields are refused), and publishes them in order, in batches of at
most --batch (a batch is also sent when the input pauses), printing each
stored event's id on stdout, one per line, once its batch is stored.
Empty lines are skipped. Each batch carries an idempotency key and is
retried until stored, so a retry never stores it twice.

At a line that is not valid, everything before it is published and
nothing from it on: the error names the line, and the ids printed are
those of the lines before it. A batch the server refuses (an invalid type,
say) is not stored, and nothing after it is sent. The exit status is 0
only when every line was stored.

Interrupted (SIGINT, SIGTERM), it stops at once, also while it waits for
input: the ids of the batches stored are printed, lines read but not yet
sent are not sent (the error names them), a batch being sent may or may
not have been stored (the error says so), and the exit status is not 0.

--url and --token can also be set as SSELOG_URL and SSELOG_TOKEN; flags
win.

`)
		flags.PrintDefaults()
	}
	return flags, c
}

// publishCommand is `sselog publish`.
func publishCommand(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	flags, c := publishFlags(stderr)
	if err := parseAdmin(flags, args, "SSELOG_URL", "SSELOG_TOKEN"); err != nil {
		return err
	}
	switch {
	case c.stream == "":
		return errors.New("publish: --stream is required")
	case c.batch < 1 || c.batch > maxPublishBatch:
		return fmt.Errorf("publish: --batch %d: want 1 to %d", c.batch, maxPublishBatch)
	case c.events && c.typ != "":
		return errors.New("publish: --type and --events exclude each other: with --events each line gives its own type")
	}
	cl, err := client.New(c.url, client.WithToken(c.token))
	if err != nil {
		return fmt.Errorf("publish: --url: %w", err)
	}
	p := &publisher{c: c, cl: cl, out: bufio.NewWriter(stdout)}
	err = p.run(ctx, bufio.NewReaderSize(stdin, 64<<10))
	if ferr := p.out.Flush(); err == nil && ferr != nil {
		err = fmt.Errorf("writing the ids: %w", ferr)
	}
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	return nil
}

// publisher is one run of sselog publish.
type publisher struct {
	c      *publishConfig
	cl     *client.Client
	out    *bufio.Writer
	batch  []client.Event
	first  int // input line of the batch's first event
	last   int // input line of its last
	read   int // input lines read
	stored int // events stored so far
}

// inputLine is one line of input as readLines hands it over.
type inputLine struct {
	line []byte
	err  error // readLine's: io.EOF with the last line, or a failure
	more bool  // more input was already buffered: the input has not paused
}

// readLines reads in, line by line, into lines, until the input ends or
// fails, or done is closed. It runs in a goroutine of its own, so that the
// publisher can stop on a signal while a read blocks: a read of stdin
// cannot be interrupted, and a pipe that stays open would otherwise hold
// the command forever. After an interrupt the goroutine stays blocked in
// its read until the input ends or the process exits.
func readLines(in *bufio.Reader, lines chan<- inputLine, done <-chan struct{}) {
	for {
		line, err := readLine(in)
		select {
		case lines <- inputLine{line: line, err: err, more: in.Buffered() > 0}:
		case <-done:
			return
		}
		if err != nil {
			return
		}
	}
}

// run publishes the lines of in, in batches, until the input ends, a line
// or a batch fails, or ctx ends.
func (p *publisher) run(ctx context.Context, in *bufio.Reader) error {
	lines := make(chan inputLine)
	done := make(chan struct{})
	defer close(done)
	go readLines(in, lines, done)
	for n := 1; ; n++ {
		var r inputLine
		select {
		case r = <-lines:
		case <-ctx.Done():
			return p.interrupted(ctx, nil)
		}
		p.read = n
		if ctx.Err() != nil {
			// Both were ready, and select chose the line: it is held,
			// not sent, like the batch.
			return p.interrupted(ctx, r.line)
		}
		line, err := r.line, r.err
		if err != nil && !errors.Is(err, io.EOF) {
			if errors.Is(err, errLineTooLong) {
				err = fmt.Errorf("line %d: %w", n, err)
			}
			return p.stop(ctx, err)
		}
		if len(line) == 0 && errors.Is(err, io.EOF) {
			return p.send(ctx)
		}
		if trimmed := bytes.TrimSpace(line); len(trimmed) > 0 {
			ev, lerr := p.event(trimmed)
			if lerr != nil {
				return p.stop(ctx, fmt.Errorf("line %d: %w", n, lerr))
			}
			if len(p.batch) == 0 {
				p.first = n
			}
			p.batch, p.last = append(p.batch, ev), n
		}
		// A full batch goes; so does one when the input has paused (its
		// next line is not here yet), so that a trickle of lines is not
		// held back waiting for a full batch.
		if len(p.batch) == p.c.batch || len(p.batch) > 0 && !r.more {
			if err := p.send(ctx); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) {
			return p.send(ctx)
		}
	}
}

// event reads one line as an event.
func (p *publisher) event(line []byte) (client.Event, error) {
	if !p.c.events {
		if !json.Valid(line) {
			return client.Event{}, fmt.Errorf("not a JSON value: %.60q", line)
		}
		return client.Event{Type: p.c.typ, Data: json.RawMessage(line)}, nil
	}
	var ev struct {
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ev); err != nil {
		return client.Event{}, fmt.Errorf(`not an event object {"type": "...", "data": ...}: %v`, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return client.Event{}, errors.New("more than one JSON value on the line")
	}
	if ev.Data == nil {
		return client.Event{}, errors.New(`the event has no "data" (give "data": null for none)`)
	}
	return client.Event{Type: ev.Type, Data: ev.Data}, nil
}

// send publishes the batch in hand, if any, and prints its ids.
func (p *publisher) send(ctx context.Context) error {
	if len(p.batch) == 0 {
		return nil
	}
	ids, err := p.cl.Publish(ctx, p.c.stream, p.batch...)
	if err != nil {
		what := "were not stored"
		if ctx.Err() != nil {
			// Interrupted while retrying: the last attempt may have been
			// stored, and this process's key goes with it.
			what = "may or may not have been stored"
		}
		return fmt.Errorf("lines %d to %d %s (stored before them: %s; nothing after them was sent): %w", p.first, p.last, what, plural(p.stored, "event"), err)
	}
	for _, id := range ids {
		fmt.Fprintln(p.out, id)
	}
	p.stored += len(ids)
	p.batch = p.batch[:0]
	// The ids of a stored batch are out before the next one is sent.
	if err := p.out.Flush(); err != nil {
		return fmt.Errorf("writing the ids: %w", err)
	}
	return nil
}

// interrupted ends the run when ctx ends while it waits for input. The
// batch in hand (read while more input was buffered), and held, the line
// received as ctx ended, if any, are not sent: an interrupt means stop
// now, not after one more request that might have to be retried. The
// error names those lines, so that a rerun can start there.
func (p *publisher) interrupted(ctx context.Context, held []byte) error {
	err := ctx.Err()
	if cause := context.Cause(ctx); cause != nil && cause != err {
		err = fmt.Errorf("%w (%v)", err, cause)
	}
	first, last := 0, 0
	if len(p.batch) > 0 {
		first, last = p.first, p.last
	}
	if len(bytes.TrimSpace(held)) > 0 {
		if first == 0 {
			first = p.read
		}
		last = p.read
	}
	if first > 0 {
		return fmt.Errorf("interrupted: lines %d to %d were read and not sent (stored before them: %s): %w", first, last, plural(p.stored, "event"), err)
	}
	if p.read == 0 {
		return fmt.Errorf("interrupted before the first line (nothing stored): %w", err)
	}
	return fmt.Errorf("interrupted while waiting for line %d (lines 1 to %d were stored: %s): %w", p.read+1, p.read, plural(p.stored, "event"), err)
}

// stop ends the run at a bad line: what came before it is published, and
// the line's error returned.
func (p *publisher) stop(ctx context.Context, err error) error {
	if serr := p.send(ctx); serr != nil {
		return errors.Join(serr, err)
	}
	return fmt.Errorf("%w (stored before it: %s; nothing from it on was sent)", err, plural(p.stored, "event"))
}

var errLineTooLong = fmt.Errorf("line longer than %d bytes", maxPublishLine)

// readLine reads one line, without its LF. At the end of the input it
// returns what the last line held, if anything, and io.EOF.
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > maxPublishLine {
			return nil, errLineTooLong
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return line, err
		}
	}
}
