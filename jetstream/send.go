package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// Sending a write: one atomic batch on condition of the position it was
// decided at, sent again when its answer is lost, and found in the log if
// it landed after all.

// attemptTimeout bounds one attempt to send a write. A stream leader that
// dies with a write in hand never answers it: the write is sent again, and
// found in the log if the first attempt landed after all, so a failover
// costs a write about this long rather than the whole write timeout.
const attemptTimeout = time.Second

// send publishes msgs after position pos, again after an attempt that got
// no answer, until ctx ends. Its first message carries a write id, by
// which an attempt whose answer was lost is told from another node's
// write when the next attempt finds the log moved on.
func (l *Log) send(ctx context.Context, msgs []*nats.Msg, pos uint64) (uint64, error) {
	id := nuid.Next()
	msgs[0].Header.Set(hdrWrite, id)
	unsure := false
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		last, err := l.publish(actx, msgs, pos)
		cancel()
		switch {
		case err == nil:
			return last, nil
		case errors.Is(err, errConflict) && unsure:
			landed, lerr := l.landed(ctx, pos+1, id)
			if lerr != nil {
				return 0, fmt.Errorf("%w: a write whose answer was lost could not be found: %w", ErrUnavailable, lerr)
			}
			if landed {
				return pos + uint64(len(msgs)), nil
			}
			return 0, err
		case errors.Is(err, errConflict):
			return 0, err
		case ctx.Err() != nil:
			return 0, err
		}
		// No answer, or a refusal while the stream has no leader: the
		// write may have landed unless nobody took it.
		if !errors.Is(err, nats.ErrNoResponders) {
			unsure = true
		}
		l.logger.Debug("write attempt failed; sending it again", "pos", pos, "err", err)
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return 0, err
		}
	}
}

// landed reports whether the message at seq is the first of the write id.
func (l *Log) landed(ctx context.Context, seq uint64, id string) (bool, error) {
	for {
		msgs, err := l.getBatch(seq, 1)
		if err == nil && len(msgs) == 1 {
			got, _ := strconv.ParseUint(msgs[0].Header.Get("Nats-Sequence"), 10, 64)
			if got == seq {
				return msgs[0].Header.Get(hdrWrite) == id, nil
			}
			// A later message: the one at seq is gone already. It cannot
			// be told whose it was, so the outcome stays unknown.
			return false, fmt.Errorf("the message at %d is gone", seq)
		}
		// No answer, or a replica that has not stored seq yet.
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			if err == nil {
				err = ctx.Err()
			}
			return false, err
		}
	}
}

// publish sends msgs as one atomic batch written after position pos and
// returns the sequence of its last message.
func (l *Log) publish(ctx context.Context, msgs []*nats.Msg, pos uint64) (uint64, error) {
	msgs[0].Header.Set("Nats-Expected-Last-Sequence", strconv.FormatUint(pos, 10))
	last := msgs[len(msgs)-1]
	// The answer to a request sent on a connection that then drops is lost
	// with it (the server that would send it is often the one that went):
	// give up then, not at the timeout. The outcome is unknown either way.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func(lost <-chan struct{}) {
		select {
		case <-lost:
			cancel(errConnLost)
		case <-ctx.Done():
		}
	}(l.connLost())
	if len(msgs) > 1 {
		batch := nuid.Next()
		for i, m := range msgs {
			m.Header.Set("Nats-Batch-Id", batch)
			m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
		}
		last.Header.Set("Nats-Batch-Commit", "1")
		for _, m := range msgs[:len(msgs)-1] {
			if err := l.nc.PublishMsg(m); err != nil {
				return 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
			}
		}
	}
	resp, err := l.nc.RequestMsgWithContext(ctx, last)
	if err != nil {
		if errors.Is(context.Cause(ctx), errConnLost) {
			err = errConnLost
		}
		return 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	var ack struct {
		Seq   uint64 `json:"seq"`
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &ack); err != nil {
		return 0, fmt.Errorf("%w: unreadable acknowledgement: %w", ErrUnavailable, err)
	}
	if ack.Error != nil {
		switch ack.Error.ErrCode {
		case 10071, 10164: // wrong last sequence: another node wrote first
			return 0, errConflict
		}
		return 0, fmt.Errorf("%w: %s (%d)", ErrUnavailable, ack.Error.Description, ack.Error.ErrCode)
	}
	if ack.Seq != pos+uint64(len(msgs)) {
		// The expected-sequence check makes this impossible; were it to
		// happen, the ids computed from it would be wrong.
		return 0, fmt.Errorf("%w: acknowledged at sequence %d, not %d", ErrUnavailable, ack.Seq, pos+uint64(len(msgs)))
	}
	return ack.Seq, nil
}
