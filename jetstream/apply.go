package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sselog/sselog/store"
)

// The applier is the node's one consumer of the stream: an ordered
// consumer from the local copy's position, which applies every message in
// sequence order to the copy. The copy's commit hooks feed the node's hub,
// so live subscribers get what the copy holds, and replay reads the copy:
// a subscriber's hand-over from the log to the live tail is the
// standalone log's, with no gap and no duplicate.

// maxApplyGroup caps the events applied in one local transaction when
// writes arrive faster than the copy commits them.
const maxApplyGroup = 8192

func (l *Log) startApplier(ctx context.Context) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subjAll}}
	if pos := l.local.Position(); pos > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = pos + 1
	}
	cons, err := l.js.OrderedConsumer(ctx, l.opts.Stream, cfg)
	if err != nil {
		return fmt.Errorf("jetstream: follow stream %s: %w", l.opts.Stream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("jetstream: follow stream %s: %w", l.opts.Stream, err)
	}
	l.wg.Add(2)
	go func() {
		defer l.wg.Done()
		<-l.ctx.Done()
		it.Stop()
	}()
	go func() {
		defer l.wg.Done()
		err := l.apply(it)
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

// pendingWrite is the run of event messages the applier has read but not
// yet applied: whole writes, so that a batch becomes visible at once.
type pendingWrite struct {
	writes []store.Applied
	last   uint64 // sequence of the last message read
	end    uint64 // sequence the write being read ends at
	events int
}

func (l *Log) apply(it jetstream.MessagesContext) error {
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
	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || l.ctx.Err() != nil {
				return nil
			}
			// The ordered consumer recreates itself after a leader change
			// or a missed heartbeat; report and go on.
			l.logger.Warn("following the stream", "err", err)
			continue
		}
		md, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("message without metadata: %w", err)
		}
		seq := md.Sequence.Stream
		if seq <= max(l.local.Position(), p.last) {
			continue // already applied: a consumer recreated from an older point
		}
		if len(p.writes) > 0 && seq > p.end {
			// The rest of the write was removed by retention.
			if err := flush(); err != nil {
				return err
			}
		}
		kind, stream, ok := splitSubject(msg.Subject())
		if ok && store.ValidateStream(stream) != nil {
			ok = false
		}
		h := msg.Headers()
		if !ok || kind != subjEvents {
			if err := flush(); err != nil {
				return err
			}
			if err := l.applyControl(seq, kind, stream, ok, h.Get(hdrOp), h, msg.Data()); err != nil {
				return err
			}
			l.notify()
			continue
		}
		ms, _ := strconv.ParseUint(h.Get(hdrMs), 10, 64)
		writes, err := decodeMessage(msg.Data(), stream, ms, l.epoch, seq)
		if err != nil || seq > maxSeq {
			// Not sselog's writing: skip it, as any message that is
			// none of sselog's, rather than stop the node.
			if err := flush(); err != nil {
				return err
			}
			l.logger.Warn("skipping an undecodable event message", "seq", seq, "err", err)
			if err := l.local.Apply(l.ctx, seq, nil); err != nil {
				return err
			}
			l.notify()
			continue
		}
		for _, w := range writes {
			p.events += len(w.Events)
		}
		p.writes = append(p.writes, writes...)
		p.last = seq
		left, _ := strconv.ParseUint(h.Get(hdrLeft), 10, 64)
		p.end = seq + left
		if seq == p.end && (md.NumPending == 0 || p.events >= maxApplyGroup) || left > 0 && md.NumPending == 0 {
			// A whole write, and nothing more waiting; or a write whose
			// rest is gone (an atomic batch is stored whole, so with
			// nothing pending it was removed).
			if err := flush(); err != nil {
				return err
			}
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
