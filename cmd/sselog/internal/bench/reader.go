package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"
)

// markerBase numbers the read's marker events: an event numbered
// markerBase+k is marker k, not one of the events replayed. It is above
// any -n and within the 19 digits parseUint takes.
const markerBase = 1 << 62

// reader is the replaying client's state across its connections.
type reader struct {
	e       *env
	events  int64
	r       *replayReport
	marks   *poster // publishes the markers
	b       *eventBuilder
	body    []byte
	seen    []uint64 // a bit per event number received
	unique  int64
	lastID  []byte // of the last event received: where a reconnection resumes
	start   time.Time
	lastAt  time.Time // when the last missing event arrived
	ordered bool
}

// replay subscribes from the start and reads until it has every event
// numbered below c.events, or the server has no more to send (see
// replayHelp), filling in r's counts and timings. Only failures of the
// tool or the connection are errors; missing events are counts.
func replay(ctx context.Context, e *env, c *replayConfig, r *replayReport) error {
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	rd := &reader{
		e: e, events: c.events, r: r,
		marks:   newPoster(e.t, e.timeout),
		b:       newEventBuilder(0),
		seen:    make([]uint64, (c.events+63)/64),
		start:   time.Now(),
		ordered: e.caps.orderedIDs,
	}
	defer rd.marks.close()
	defer func() {
		r.Missing = c.events - rd.unique
		end := rd.lastAt
		if end.IsZero() { // not complete
			end = time.Now()
		}
		r.Duration = end.Sub(rd.start).Seconds()
	}()
	resume := e.t.a.earliest()
	for {
		end, fresh, err := rd.connection(ctx, resume, c.dropEvery)
		if err != nil {
			return err
		}
		switch end {
		case endDropped:
		case endClosed:
			r.ServerEnded++
			// Resume as EventSource would, unless that connection brought
			// nothing: the server would only do the same again.
			if !c.resume || fresh == 0 {
				r.Ended = end
				return nil
			}
		default:
			r.Ended = end
			return nil
		}
		if len(rd.lastID) > 0 {
			resume = string(rd.lastID)
		}
	}
}

// connection opens one subscription that resumes after resume, publishes
// its marker, and reads until the read is complete, the marker arrives,
// the server ends the stream, or (limit > 0) limit events have arrived on
// it. It returns how it ended and how many events it brought that had
// not arrived before.
func (rd *reader) connection(ctx context.Context, resume string, limit int64) (end string, fresh int64, err error) {
	c, err := dialSSE(ctx, rd.e.t, rd.e.t.subscribePath, resume, replayBuf)
	if err != nil {
		return "", 0, err
	}
	defer func() { rd.r.Bytes += c.p.bytes }()
	defer c.Close()
	rd.r.Connections++
	dl, _ := ctx.Deadline()
	c.conn.SetReadDeadline(dl)
	stop := context.AfterFunc(ctx, func() { c.Close() }) // a cancelled run ends the read
	defer stop()

	// The marker is published once the server has registered the
	// subscription, so it is stored after every event the subscription
	// replays. It goes while the replay is read, so that its round trip
	// is not counted in the replay's time; a marker that fails ends the
	// read, which nothing else might.
	mark := markerBase + rand.Int64N(markerBase)
	rd.body = rd.e.t.a.appendPublish(rd.body[:0], rd.e.t.stream, rd.b, 1, -1, mark, 1)
	marked := make(chan error, 1)
	go func() {
		_, err := rd.marks.publish(ctx, rd.body)
		if err != nil {
			c.Close()
		}
		marked <- err
	}()
	end, fresh, err = rd.read(c, mark, limit)
	if merr := <-marked; merr != nil { // and the poster is free for the next one
		return "", fresh, fmt.Errorf("marker: %w", merr)
	}
	return end, fresh, err
}

// read is connection's loop over c's events.
func (rd *reader) read(c *sseConn, mark, limit int64) (end string, fresh int64, err error) {
	var f frame
	var onConn int64
	for {
		if err := c.p.next(&f); err != nil {
			if errors.Is(err, io.EOF) {
				return endClosed, fresh, nil
			}
			return "", fresh, fmt.Errorf("after %d events: %w", rd.r.Received, err)
		}
		if !f.hasData {
			continue
		}
		n, ok := jsonInt(f.data, seqKey)
		if ok && n >= markerBase {
			if n == mark {
				return endNoMore, fresh, nil
			}
			continue // an earlier connection's
		}
		if rd.r.Received == 0 {
			rd.r.FirstEventMs = float64(time.Since(rd.start)) / float64(time.Millisecond)
		}
		rd.r.Received++
		onConn++
		if !ok || n >= rd.events || !f.hasID {
			rd.r.Malformed++
		} else if rd.add(n, f.id) {
			fresh++
			if rd.unique == rd.events {
				rd.lastAt = time.Now()
				return endComplete, fresh, nil
			}
		}
		if limit > 0 && onConn >= limit {
			return endDropped, fresh, nil
		}
	}
}

// add counts event n with id, and reports whether it is new.
func (rd *reader) add(n int64, id []byte) bool {
	if rd.ordered && bytes.Compare(id, rd.lastID) <= 0 {
		rd.r.Disordered++
	}
	rd.lastID = append(rd.lastID[:0], id...)
	if rd.seen[n/64]&(1<<(n%64)) != 0 {
		rd.r.Duplicates++
		return false
	}
	rd.seen[n/64] |= 1 << (n % 64)
	rd.unique++
	return true
}
