package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sselog/sselog/store"
)

// Every write goes through one writer per node, which writes on top of the
// position its local copy has applied: the first message of each write
// carries Nats-Expected-Last-Sequence, so JetStream refuses it if anything
// was written since. The writer then waits for its copy to apply what it
// missed and decides again. Deciding at a known position is what makes the
// cluster behave like one standalone log: ids are taken after the previous
// id (never below it, whatever the clocks say), an idempotency key is
// looked up where it would be stored, and a trim or deletion removes
// exactly what the copies hold there.

// Message headers. A write is one JetStream message per stream it
// appends to (codec.go), and one per trim, deletion or policy; a write of
// several messages is sent as one atomic batch.
const (
	hdrMs       = "Sselog-Ms"        // the ids' milliseconds, on event messages
	hdrLeft     = "Sselog-Left"      // messages of the write after this one
	hdrWrite    = "Sselog-Write"     // on a write's first message: its id (send)
	hdrOp       = "Sselog-Op"        // on control messages: trim, delete, policy
	hdrUpTo     = "Sselog-Up-To"     // a trim removes the stream's events at or below it
	hdrLowWater = "Sselog-Low-Water" // a deletion's low-water mark
)

type opKind int

const (
	opAppend opKind = iota
	opDelete
	opTrim
	opPolicy
)

// op is one call waiting for the writer.
type op struct {
	kind    opKind
	stream  string
	events  []store.Event // copies, validated
	key     *store.Key
	policy  *store.Policy // opPolicy: nil removes the override
	cut     store.Cut     // opTrim
	maxKeys int           // opTrim

	// Results, set by the writer before done is closed.
	ids      []store.ID
	replayed bool
	lowWater store.ID
	trimmed  store.Trimmed
	err      error
	sends    bool // the current attempt sends a message for it
	size     int  // an append's encoded size
	msg      int  // an append's message within the group
	index    int  // the index of its first event within that message
	done     chan struct{}
}

// run queues o and waits for the writer. A caller that gives up leaves the
// write to finish or fail on its own.
func (l *Log) run(ctx context.Context, o *op) error {
	o.done = make(chan struct{})
	select {
	case l.queue <- o:
	case <-ctx.Done():
		return ctx.Err()
	case <-l.ctx.Done():
		return store.ErrClosed
	}
	select {
	case <-o.done:
		return o.err
	case <-ctx.Done():
		return ctx.Err()
	case <-l.ctx.Done():
		// Queued after the writer drained the queue: nobody will answer.
		select {
		case <-o.done:
			return o.err
		default:
			return store.ErrClosed
		}
	}
}

// writer takes ops off the queue: appends are grouped into one write, up to
// MaxBatch requests and the bytes of one message; every other op is
// written alone.
func (l *Log) writer() {
	defer l.wg.Done()
	var next *op
	for {
		o := next
		next = nil
		if o == nil {
			select {
			case o = <-l.queue:
			case <-l.ctx.Done():
				l.drain()
				close(l.answers)
				return
			}
		}
		group := []*op{o}
		if o.kind == opAppend {
			size := o.size
		collect:
			for {
				select {
				case p := <-l.queue:
					// Within one message's size, every stream's message
					// fits; within MaxBatch requests, the batch does.
					if p.kind != opAppend || len(group) == l.opts.MaxBatch || size+p.size > l.maxMessage() {
						next = p
						break collect
					}
					group = append(group, p)
					size += p.size
				default:
					break collect
				}
			}
		}
		if !l.write(group) {
			for _, o := range group {
				close(o.done)
			}
		}
	}
}

// acked is a write this node's writer has had acknowledged and its copy
// has not applied yet: the next write is decided on top of it, with what
// it holds in hand (the copy cannot answer for it yet).
type acked struct {
	last  uint64         // its last message's sequence
	ms    uint64         // its ids' milliseconds
	keyed map[string]*op // its keyed requests, by stream and key name
}

// maxInflight bounds the writes the writer decides ahead of its copy.
const maxInflight = 256

// answered is an acknowledged write waiting for the copy before its
// callers are answered.
type answered struct {
	group []*op
	last  uint64
}

// answerer answers each acknowledged write once this node's copy holds it,
// in order, so that the writer can decide the next write meanwhile.
func (l *Log) answerer() {
	defer l.wg.Done()
	for a := range l.answers {
		ctx, cancel := context.WithTimeout(l.ctx, l.opts.Timeout)
		// The write is stored on a quorum whatever happens next; waiting
		// for the copy only lets this node's readers see it before the
		// caller is answered.
		if err := l.waitApplied(ctx, a.last); err != nil && l.ctx.Err() == nil {
			l.logger.Warn("acknowledged write not yet applied locally", "seq", a.last, "err", err)
		}
		cancel()
		for _, o := range a.group {
			close(o.done)
		}
	}
}

// drain answers what is still queued once the log is closing.
func (l *Log) drain() {
	for {
		select {
		case o := <-l.queue:
			o.err = store.ErrClosed
			close(o.done)
		default:
			return
		}
	}
}

// maxMessage is the most body bytes a message may hold: the connection's
// largest message less room for headers.
func (l *Log) maxMessage() int { return int(l.nc.MaxPayload()) - 1024 }

// errConnLost is a write whose connection dropped before its answer came.
var errConnLost = errors.New("the connection to the cluster dropped before the answer")

// errConflict is a write refused because the stream moved past the
// position it was decided at.
var errConflict = errors.New("the log moved on")

// write decides group at the log's position as this node knows it (its
// copy's, or its own last acknowledged write's), sends it, and retries
// after a conflict, within the write timeout. It reports whether it handed
// the group to the answerer; if not, the group is answered.
func (l *Log) write(group []*op) bool {
	ctx, cancel := context.WithTimeout(l.ctx, l.opts.Timeout)
	defer cancel()
	for {
		l.mu.Lock()
		aerr := l.applyErr
		l.mu.Unlock()
		if aerr != nil {
			fail(group, fmt.Errorf("%w: this node no longer follows the log: %w", ErrUnavailable, aerr))
			return false
		}
		pos := l.local.Position()
		// Writes of this node the copy has applied need no hand-holding.
		for len(l.inflight) > 0 && l.inflight[0].last <= pos {
			l.inflight = l.inflight[1:]
		}
		if n := len(l.inflight); n > 0 {
			if group[0].kind != opAppend || l.opts.Store.MaxStreams > 0 || n >= maxInflight {
				// Trims, deletions and stream counts are decided on the
				// copy itself: let it catch up with this node's writes.
				if err := l.waitApplied(ctx, l.inflight[n-1].last); err != nil {
					fail(group, fmt.Errorf("%w: waiting for this node's writes: %w", ErrUnavailable, err))
					return false
				}
				l.inflight = nil
				continue
			}
			pos = l.inflight[n-1].last
		}
		msgs, err := l.prepare(group, pos)
		if err != nil {
			fail(group, err)
			return false
		}
		if len(msgs) == 0 {
			// Every op was answered from the copy; none may be left
			// without an answer.
			for _, o := range group {
				if o.err == nil && o.ids == nil && o.kind == opAppend {
					o.err = fmt.Errorf("%w: the request was not written", ErrUnavailable)
				}
			}
			return false
		}
		start := time.Now()
		last, err := l.send(ctx, msgs, pos)
		if l.opts.ObserveCommit != nil {
			stats := store.CommitStats{Took: time.Since(start), Failed: err != nil && !errors.Is(err, errConflict)}
			if err == nil {
				stats.Events = countSent(group)
			}
			l.opts.ObserveCommit(stats)
		}
		if errors.Is(err, errConflict) {
			if werr := l.waitPast(ctx, pos); werr != nil {
				fail(group, fmt.Errorf("%w: waiting for the writes of other nodes: %w", ErrUnavailable, werr))
				return false
			}
			l.inflight = nil // the copy is past them all
			continue
		}
		if err != nil {
			// Whether it landed is unknown: decide the next write at the
			// copy's position again, where JetStream tells.
			l.inflight = nil
			fail(group, err)
			return false
		}
		l.settle(group, msgs, last)
		// Every node's applier reads it now rather than at its next poll.
		l.announce(last)
		if group[0].kind != opAppend {
			if err := l.waitApplied(ctx, last); err != nil {
				l.logger.Warn("acknowledged write not yet applied locally", "seq", last, "err", err)
			}
			l.afterWrite(group, last)
			return false
		}
		ms, _ := strconv.ParseUint(msgs[0].Header.Get(hdrMs), 10, 64)
		a := acked{last: last, ms: ms}
		for _, o := range group {
			if o.sends && o.key != nil {
				if a.keyed == nil {
					a.keyed = make(map[string]*op)
				}
				a.keyed[o.stream+"\x00"+o.key.Name] = o
			}
		}
		l.inflight = append(l.inflight, a)
		l.answers <- answered{group: group, last: last}
		return true
	}
}

func fail(group []*op, err error) {
	for _, o := range group {
		if o.sends || o.err == nil && o.ids == nil {
			o.err = err
		}
	}
}

func countSent(group []*op) int {
	n := 0
	for _, o := range group {
		if o.sends {
			n += len(o.events)
		}
	}
	return n
}

// prepare decides each op of group against the local copy at pos and
// returns the messages to send. Ops it can answer from the copy (a
// repeated key, a missing stream, nothing to trim) get their result and no
// message.
func (l *Log) prepare(group []*op, pos uint64) ([]*nats.Msg, error) {
	ms := uint64(max(l.opts.Now().UnixMilli(), 0))
	if last := l.local.LastID(); !last.IsZero() {
		ms = max(ms, idMs(last))
	}
	if n := len(l.inflight); n > 0 {
		ms = max(ms, l.inflight[n-1].ms) // they only grow
	}
	msText := strconv.FormatUint(ms, 10)
	var msgs []*nats.Msg
	keys := make(map[string]*op) // keyed requests of this group
	plans := make(map[string]*plan)
	var planned []*plan
	for _, o := range group {
		o.ids, o.replayed, o.err, o.sends = nil, false, nil, false
		switch o.kind {
		case opAppend:
			if o.key != nil {
				ks := o.stream + "\x00" + o.key.Name
				if first := keys[ks]; first != nil {
					// Decided when the first one's ids are known.
					continue
				}
				ids, found, err := l.lookupKey(o.stream, *o.key)
				if err != nil {
					o.err = err
					continue
				}
				if found {
					o.ids, o.replayed = ids, true
					continue
				}
			}
			if err := l.admit(o, group); err != nil {
				o.err = err
				continue
			}
			if o.key != nil {
				keys[o.stream+"\x00"+o.key.Name] = o
			}
			o.sends = true
			// The group's requests to one stream share a message, up to
			// the events an id can index.
			pl := plans[o.stream]
			if pl == nil || pl.events+len(o.events) > maxEventsPerMessage {
				pl = &plan{msg: len(msgs)}
				plans[o.stream] = pl
				msgs = append(msgs, nats.NewMsg(subjEvents+token(o.stream)))
				planned = append(planned, pl)
			}
			o.msg, o.index = pl.msg, pl.events
			pl.reqs = append(pl.reqs, request{events: o.events, key: o.key})
			pl.events += len(o.events)
		case opDelete:
			info, err := l.local.Stream(o.stream)
			if err != nil {
				o.err = err
				continue
			}
			o.lowWater = info.LowWater
			if info.LastID.Compare(o.lowWater) > 0 {
				o.lowWater = info.LastID
			}
			o.sends = true
			m := nats.NewMsg(subjCut + token(o.stream))
			m.Header.Set(hdrOp, "delete")
			m.Header.Set(hdrLowWater, o.lowWater.String())
			msgs = append(msgs, m)
		case opTrim:
			plan, err := l.local.PlanTrim(o.stream, o.cut, o.maxKeys)
			if err != nil {
				o.err = err
				continue
			}
			o.trimmed = plan
			if plan.Events == 0 {
				continue
			}
			o.sends = true
			m := nats.NewMsg(subjCut + token(o.stream))
			m.Header.Set(hdrOp, "trim")
			m.Header.Set(hdrUpTo, plan.LowWater.String())
			msgs = append(msgs, m)
		case opPolicy:
			o.sends = true
			m := nats.NewMsg(subjPolicy + token(o.stream))
			m.Header.Set(hdrOp, "policy")
			if o.policy != nil {
				b, err := json.Marshal(o.policy)
				if err != nil {
					return nil, err
				}
				m.Data = b
			}
			msgs = append(msgs, m)
		}
	}
	for _, pl := range planned {
		m := msgs[pl.msg]
		m.Data = appendMessage(make([]byte, 0, encodedLen(pl.reqs)), pl.reqs)
		m.Header.Set(hdrMs, msText)
	}
	for i, m := range msgs {
		m.Header.Set(hdrLeft, strconv.Itoa(len(msgs)-1-i))
	}
	return msgs, nil
}

// plan is one event message of a group: the requests it holds.
type plan struct {
	msg    int // its index in the group's messages
	reqs   []request
	events int
}

// lookupKey is store.Log.LookupKey over the copy and this node's writes
// the copy has not applied yet, newest first.
func (l *Log) lookupKey(stream string, key store.Key) ([]store.ID, bool, error) {
	for i := len(l.inflight) - 1; i >= 0; i-- {
		if o := l.inflight[i].keyed[stream+"\x00"+key.Name]; o != nil {
			if o.key.Digest != key.Digest {
				return nil, false, fmt.Errorf("%w: key %q in stream %s", store.ErrKeyReused, key.Name, stream)
			}
			return slices.Clone(o.ids), true, nil
		}
	}
	return l.local.LookupKey(stream, key)
}

// admit refuses an append that would create a stream beyond
// Store.MaxStreams, counting the streams the group creates before it.
func (l *Log) admit(o *op, group []*op) error {
	limit := l.opts.Store.MaxStreams
	if limit <= 0 {
		return nil
	}
	if ok, err := l.local.Exists(o.stream); err != nil || ok {
		return err
	}
	infos, err := l.local.Streams()
	if err != nil {
		return err
	}
	n := len(infos)
	seen := map[string]bool{}
	for _, p := range group {
		if p == o {
			break
		}
		if p.sends && !seen[p.stream] {
			if ok, _ := l.local.Exists(p.stream); !ok {
				n++
			}
			seen[p.stream] = true
		}
	}
	if seen[o.stream] {
		return nil
	}
	if n >= limit {
		return fmt.Errorf("%w: the limit is %d; delete one to make room", store.ErrTooManyStreams, limit)
	}
	return nil
}

// settle gives the ops that sent messages their ids, from the sequence of
// the write's last message, and answers the keyed repeats within the group.
func (l *Log) settle(group []*op, msgs []*nats.Msg, last uint64) {
	first := last - uint64(len(msgs)) + 1
	keys := make(map[string]*op)
	for _, o := range group {
		if !o.sends || o.kind != opAppend {
			continue
		}
		ms, _ := strconv.ParseUint(msgs[o.msg].Header.Get(hdrMs), 10, 64)
		o.ids = make([]store.ID, len(o.events))
		for i := range o.events {
			o.ids[i] = makeID(ms, l.epoch, first+uint64(o.msg), uint64(o.index+i))
		}
		if o.key != nil {
			keys[o.stream+"\x00"+o.key.Name] = o
		}
	}
	for _, o := range group {
		if o.kind != opAppend || o.key == nil || o.sends || o.err != nil || o.ids != nil {
			continue
		}
		first := keys[o.stream+"\x00"+o.key.Name]
		switch {
		case first == nil:
			o.err = fmt.Errorf("%w: its first use was not stored", ErrUnavailable)
		case first.key.Digest != o.key.Digest:
			o.err = fmt.Errorf("%w: key %q in stream %s", store.ErrKeyReused, o.key.Name, o.stream)
		default:
			o.ids, o.replayed = first.ids, true
		}
	}
}

// afterWrite records a trim or deletion for reclaiming, and reclaims the
// JetStream storage of what has waited out ReclaimDelay; a policy
// supersedes the stream's earlier ones at once (a copy that misses one
// reads the newer).
func (l *Log) afterWrite(group []*op, last uint64) {
	o := group[0]
	if !o.sends {
		return
	}
	switch o.kind {
	case opTrim:
		// The message holding the mark may hold retained events too: it
		// stays until a later trim passes it.
		l.reclaims.add(o.stream, reclaim{record: last, below: idSeq(o.trimmed.LowWater), at: time.Now()})
	case opDelete:
		below := uint64(0)
		if !o.lowWater.IsZero() {
			below = idSeq(o.lowWater) + 1
		}
		l.reclaims.add(o.stream, reclaim{record: last, below: below, at: time.Now()})
		// The deletion drops the stream's override on every copy; a later
		// trim's reclaim may purge the deletion record, so no older policy
		// may outlive it for a copy rebuilt from the stream.
		ctx, cancel := context.WithTimeout(l.ctx, l.opts.Timeout)
		defer cancel()
		if err := l.stream.Purge(ctx, jetstream.WithPurgeSubject(subjPolicy+token(o.stream)), jetstream.WithPurgeSequence(last)); err != nil {
			l.logger.Warn("purge of a deleted stream's policies failed", "stream", o.stream, "err", err)
		}
	case opPolicy:
		ctx, cancel := context.WithTimeout(l.ctx, l.opts.Timeout)
		defer cancel()
		if err := l.stream.Purge(ctx, jetstream.WithPurgeSubject(subjPolicy+token(o.stream)), jetstream.WithPurgeSequence(last)); err != nil {
			l.logger.Warn("purge of superseded policies failed; the next one retries", "stream", o.stream, "err", err)
		}
	}
	select {
	case l.reclaimNow <- struct{}{}:
	default:
	}
}
