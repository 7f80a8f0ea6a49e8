package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sselog/sselog/store"
)

// The applier is the node's one reader of the stream: it reads the
// messages after the local copy's position in batches (JetStream's batched
// direct get, which any replica answers and which needs no consumer state
// and no meta leader, so a leader change or a lost server costs it one
// retry) and applies them, in sequence order, to the copy. The copy's
// commit hooks feed the node's hub, so live subscribers get what the copy
// holds, and replay reads the copy: a subscriber's hand-over from the log
// to the live tail is the standalone log's, with no gap and no duplicate.
//
// Every writer announces its writes on wakePrefix+stream once acknowledged, which
// wakes every node's applier at once; a poll every followPoll covers a
// lost announcement.

// maxApplyGroup caps the events applied in one local transaction when
// writes arrive faster than the copy commits them.
const maxApplyGroup = 8192

const (
	wakePrefix  = "sselog_wake." // + the JetStream stream's name; outside its subjects: never stored
	followBatch = 512            // messages one read asks for
	followPoll  = 250 * time.Millisecond
	// partialWait is how long a write whose rest has not been read is
	// held back: a replica that is behind may answer the next read.
	partialWait = time.Second
)

func (l *Log) startApplier(context.Context) error {
	wake := l.wake
	sub, err := l.nc.Subscribe(wakePrefix+l.opts.Stream, func(m *nats.Msg) {
		seq, _ := strconv.ParseUint(string(m.Data), 10, 64)
		l.announced(seq)
	})
	if err != nil {
		return fmt.Errorf("jetstream: follow stream %s: %w", l.opts.Stream, err)
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer sub.Unsubscribe()
		err := l.follow(wake)
		if err != nil && l.ctx.Err() == nil {
			l.logger.Error("applying the cluster's writes stopped; this node serves no new events", "err", err)
		}
		l.mu.Lock()
		if err == nil {
			err = store.ErrClosed
		}
		l.applyErr = err
		l.mu.Unlock()
		l.notify()
	}()
	return nil
}

// announce wakes every node's applier after a write that ends at seq.
func (l *Log) announce(seq uint64) {
	l.announced(seq)
	_ = l.nc.Publish(wakePrefix+l.opts.Stream, strconv.AppendUint(nil, seq, 10))
}

// announced records that the log reaches seq, and wakes the applier.
func (l *Log) announced(seq uint64) {
	for {
		cur := l.target.Load()
		if seq <= cur || l.target.CompareAndSwap(cur, seq) {
			break
		}
	}
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// pendingWrite is the run of event messages the applier has read but not
// yet applied: whole writes, so that a batch becomes visible at once.
type pendingWrite struct {
	writes []store.Applied
	last   uint64 // sequence of the last message read
	end    uint64 // sequence the write being read ends at
	events int
	since  time.Time // when the write being read was found incomplete
}

// follow reads and applies until the log closes or the copy fails.
func (l *Log) follow(wake <-chan struct{}) error {
	var p pendingWrite
	flush := func() error {
		if len(p.writes) == 0 {
			return nil
		}
		err := l.local.Apply(l.ctx, p.last, p.writes)
		p = pendingWrite{}
		if err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		l.notify()
		return nil
	}
	poll := time.NewTicker(followPoll)
	defer poll.Stop()
	failures := 0
	var lagging time.Duration
	for {
		next := max(l.local.Position(), p.last) + 1
		msgs, err := l.getBatch(next, followBatch)
		if err != nil {
			if l.ctx.Err() != nil {
				return nil
			}
			if failures++; failures == 1 || failures%20 == 0 {
				l.logger.Warn("reading the cluster's log", "from", next, "err", err, "failures", failures)
			}
		} else {
			failures = 0
		}
		for _, m := range msgs {
			if err := l.handle(m, &p, flush); err != nil {
				return err
			}
		}
		if len(p.writes) > 0 {
			complete := p.last == p.end || p.events >= maxApplyGroup
			if !complete && len(msgs) == 0 {
				if p.since.IsZero() {
					p.since = time.Now()
				} else if time.Since(p.since) > partialWait {
					complete = true // its rest was removed by retention
				}
			}
			if complete {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if len(msgs) == followBatch {
			continue // more to read now
		}
		// A write was announced that the replica which answered has not
		// stored yet (replicas follow the stream leader by a round):
		// read again soon rather than at the next poll.
		if len(msgs) == 0 && l.target.Load() > max(l.local.Position(), p.last) {
			lagging = min(max(2*lagging, time.Millisecond), 50*time.Millisecond)
			select {
			case <-time.After(lagging):
			case <-l.ctx.Done():
				return nil
			}
			continue
		}
		lagging = 0
		select {
		case <-wake:
		case <-poll.C:
		case <-l.ctx.Done():
			return nil
		}
	}
}

// handle applies, or holds back in p, one message of the stream.
func (l *Log) handle(msg *nats.Msg, p *pendingWrite, flush func() error) error {
	h := msg.Header
	seq, err := strconv.ParseUint(h.Get("Nats-Sequence"), 10, 64)
	if err != nil {
		return fmt.Errorf("a message without its sequence: %w", err)
	}
	if seq <= max(l.local.Position(), p.last) {
		return nil // read twice: an answer from a replica that was ahead, then one behind
	}
	if len(p.writes) > 0 && seq > p.end {
		// The rest of the write was removed by retention.
		if err := flush(); err != nil {
			return err
		}
	}
	kind, stream, ok := splitSubject(h.Get("Nats-Subject"))
	if ok && store.ValidateStream(stream) != nil {
		ok = false
	}
	if !ok || kind != subjEvents {
		if err := flush(); err != nil {
			return err
		}
		if err := l.applyControl(seq, kind, stream, ok, h.Get(hdrOp), h, msg.Data); err != nil {
			return err
		}
		l.notify()
		return nil
	}
	ms, _ := strconv.ParseUint(h.Get(hdrMs), 10, 64)
	writes, err := decodeMessage(msg.Data, stream, ms, l.epoch, seq)
	if err != nil || seq > maxSeq {
		// Not sselog's writing: skip it, as any message that is none of
		// sselog's, rather than stop the node.
		if err := flush(); err != nil {
			return err
		}
		l.logger.Warn("skipping an undecodable event message", "seq", seq, "err", err)
		if err := l.local.Apply(l.ctx, seq, nil); err != nil {
			return err
		}
		l.notify()
		return nil
	}
	for _, w := range writes {
		p.events += len(w.Events)
	}
	p.writes = append(p.writes, writes...)
	p.last = seq
	left, _ := strconv.ParseUint(h.Get(hdrLeft), 10, 64)
	p.end = seq + left
	p.since = time.Time{}
	return nil
}

// getBatch reads up to n messages of the stream from sequence from on,
// with JetStream's batched direct get: the messages, then an end-of-batch
// status; a 404 when there are none.
func (l *Log) getBatch(from uint64, n int) ([]*nats.Msg, error) {
	ctx, cancel := context.WithTimeout(l.ctx, 2*time.Second)
	defer cancel()
	inbox := l.nc.NewRespInbox()
	sub, err := l.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	req, _ := json.Marshal(map[string]any{"seq": from, "batch": n, "next_by_subj": subjAll, "max_bytes": 16 << 20})
	if err := l.nc.PublishRequest("$JS.API.DIRECT.GET."+l.opts.Stream, inbox, req); err != nil {
		return nil, err
	}
	var out []*nats.Msg
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return out, fmt.Errorf("direct get from %d: %w", from, err)
		}
		switch m.Header.Get("Status") {
		case "":
			out = append(out, m)
		case "204": // end of batch
			return out, nil
		case "404":
			return out, nil
		default:
			return out, fmt.Errorf("direct get from %d: status %s %s", from, m.Header.Get("Status"), m.Header.Get("Description"))
		}
	}
}

// applyControl applies a trim, deletion or policy, or records the
// position of a message that is none of sselog's.
func (l *Log) applyControl(seq uint64, kind, stream string, ok bool, opName string, h map[string][]string, data []byte) error {
	get := func(k string) string {
		if v := h[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	var err error
	switch {
	case ok && kind == subjCut && opName == "trim":
		var upTo store.ID
		if upTo, err = store.ParseID(get(hdrUpTo)); err == nil {
			_, err = l.local.ApplyTrim(seq, stream, upTo, 2000)
		}
	case ok && kind == subjCut && opName == "delete":
		var lw store.ID
		if lw, err = store.ParseID(get(hdrLowWater)); err == nil {
			err = l.local.ApplyDelete(l.ctx, seq, stream, lw)
		}
	case ok && kind == subjPolicy:
		var p *store.Policy
		if len(data) > 0 {
			p = new(store.Policy)
			if err = json.Unmarshal(data, p); err != nil {
				break
			}
		}
		err = l.local.ApplyPolicy(seq, stream, p)
	default:
		l.logger.Warn("skipping a message sselog did not write", "seq", seq)
		return l.local.Apply(l.ctx, seq, nil)
	}
	if errors.Is(err, store.ErrInvalidID) || errors.Is(err, store.ErrInvalidPolicy) || err != nil && errors.As(err, new(*json.SyntaxError)) {
		l.logger.Warn("skipping a malformed control message", "seq", seq, "err", err)
		return l.local.Apply(l.ctx, seq, nil)
	}
	if err != nil {
		return fmt.Errorf("apply %s at %d: %w", kind, seq, err)
	}
	return nil
}
