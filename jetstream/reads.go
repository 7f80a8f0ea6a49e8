package jetstream

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/sselog/sselog/store"
)

// Reads go to the local copy, which holds exactly what the cluster's log
// held at the copy's position, with the standalone log's bounds.

// resumeWait bounds how long a read waits for the local copy to reach a
// position another node handed out.
const resumeWait = 2 * time.Second

// position checks a position to read after: foreign is set when this log
// never issued it (another epoch, a standalone log's id, a time bound of a
// since= start, a sequence the cluster has not reached), which matters
// only to a client resuming from it (the hub judges). An id of this log
// that the local copy has not applied yet (written through another node a
// moment ago) is waited for; if the copy is still behind after
// resumeWait, the read fails with ErrUnavailable rather than take the id
// for foreign: the client retries, and is not told a falsehood.
func (l *Log) position(after store.ID) (foreign bool, err error) {
	if after.IsZero() || idEpoch(after) == l.epoch && idSeq(after) <= l.local.Position() {
		return false, nil
	}
	if idEpoch(after) != l.epoch {
		return true, nil
	}
	ctx, cancel := context.WithTimeout(l.ctx, resumeWait)
	defer cancel()
	werr := l.waitApplied(ctx, idSeq(after))
	if werr == nil {
		return false, nil
	}
	ictx, icancel := context.WithTimeout(l.ctx, time.Second)
	defer icancel()
	info, err := l.stream.Info(ictx)
	if err != nil {
		return false, fmt.Errorf("%w: this node's copy is at %d, behind %d, and the stream does not answer: %w", ErrUnavailable, l.local.Position(), idSeq(after), err)
	}
	if idSeq(after) > info.State.LastSeq {
		return true, nil
	}
	return false, fmt.Errorf("%w: this node's copy is at %d, behind %d: %w", ErrUnavailable, l.local.Position(), idSeq(after), werr)
}

// Scan is store.Log.Scan on the local copy.
func (l *Log) Scan(stream string, after store.ID, limit int, fn func(*store.Event) error) (store.Bounds, error) {
	foreign, err := l.position(after)
	if err != nil {
		return store.Bounds{}, err
	}
	b, err := l.local.Scan(stream, after, limit, fn)
	b.Foreign = foreign
	return b, err
}

// ScanMerged is store.Log.ScanMerged on the local copy.
func (l *Log) ScanMerged(sel store.Selection, after store.ID, limit int, fn func(*store.Event) error) (store.MergedBounds, error) {
	foreign, err := l.position(after)
	if err != nil {
		return store.MergedBounds{}, err
	}
	b, err := l.local.ScanMerged(sel, after, limit, fn)
	b.Foreign = foreign
	return b, err
}

// LastID is the newest id the local copy holds.
func (l *Log) LastID() store.ID { return l.local.LastID() }

// OnCommit registers fn with the local copy: it is called for each write
// the copy applies, in log order.
func (l *Log) OnCommit(fn func([]store.Event)) { l.local.OnCommit(fn) }

// OnDelete registers fn with the local copy, as OnCommit.
func (l *Log) OnDelete(fn func(stream string, lowWater store.ID)) { l.local.OnDelete(fn) }

// Streams is store.Log.Streams on the local copy.
func (l *Log) Streams() ([]store.StreamInfo, error) { return l.local.Streams() }

// Stream is store.Log.Stream on the local copy.
func (l *Log) Stream(name string) (store.StreamInfo, error) { return l.local.Stream(name) }

// StartOfLast is store.Log.StartOfLast on the local copy.
func (l *Log) StartOfLast(stream string, n int) (store.ID, error) {
	return l.local.StartOfLast(stream, n)
}

// StartOfLastMerged is store.Log.StartOfLastMerged on the local copy.
func (l *Log) StartOfLastMerged(sel store.Selection, n int) (store.ID, error) {
	return l.local.StartOfLastMerged(sel, n)
}

// Policy is store.Log.Policy on the local copy.
func (l *Log) Policy(stream string) (store.Policy, error) { return l.local.Policy(stream) }

// Policies is store.Log.Policies on the local copy.
func (l *Log) Policies() (map[string]store.Policy, error) { return l.local.Policies() }

// IdempotencyWindow is how long keys are remembered.
func (l *Log) IdempotencyWindow() time.Duration { return l.local.IdempotencyWindow() }

// IdempotencyKeys is how many keys the local copy remembers.
func (l *Log) IdempotencyKeys() int { return l.local.IdempotencyKeys() }

// ExpireKeys forgets the local copy's keys past the window: each copy
// does so on its own clock, since a key past the window is ignored
// whether or not it is removed yet.
func (l *Log) ExpireKeys(now time.Time, maxKeys int) (int, bool, error) {
	return l.local.ExpireKeys(now, maxKeys)
}

// Path is the local copy's file.
func (l *Log) Path() string { return l.local.Path() }

// Position is the sequence of the last message the local copy applied.
func (l *Log) Position() uint64 { return l.local.Position() }

// Ping checks that the local copy is readable and that the stream's
// leader answers: a node cut off from the quorum fails it.
func (l *Log) Ping() error {
	l.mu.Lock()
	aerr := l.applyErr
	l.mu.Unlock()
	if aerr != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, aerr)
	}
	if err := l.local.Ping(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(l.ctx, time.Second)
	defer cancel()
	info, err := l.stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if info.Cluster != nil && info.Cluster.Leader == "" {
		return fmt.Errorf("%w: the stream has no leader", ErrUnavailable)
	}
	return nil
}

// Backup is not offered: JetStream's snapshots (nats stream backup) back
// the cluster up, and each node's copy is rebuilt from the cluster.
func (l *Log) Backup(io.Writer, func(int64)) (int64, error) { return 0, ErrUnsupported }

// Append writes events to stream and returns their ids once the cluster
// has acknowledged them (stored on a quorum) and the local copy holds
// them.
func (l *Log) Append(ctx context.Context, stream string, events []store.Event) ([]store.ID, error) {
	o, err := l.newAppend(stream, events)
	if err != nil {
		return nil, err
	}
	if err := l.run(ctx, o); err != nil {
		return nil, err
	}
	return o.ids, nil
}

// AppendOnce is store.Log.AppendOnce across the cluster: the key is looked
// up at the position the write is decided at, so of concurrent requests
// through any nodes, one stores.
func (l *Log) AppendOnce(ctx context.Context, stream string, key store.Key, events []store.Event) ([]store.ID, bool, error) {
	if err := store.ValidateKey(key.Name); err != nil {
		return nil, false, err
	}
	o, err := l.newAppend(stream, events)
	if err != nil {
		return nil, false, err
	}
	// A repeat answered from the copy costs the cluster nothing.
	if ids, found, err := l.local.LookupKey(stream, key); err != nil || found {
		return ids, found, err
	}
	o.key = &key
	if err := l.run(ctx, o); err != nil {
		return nil, false, err
	}
	return o.ids, o.replayed, nil
}

func (l *Log) newAppend(stream string, events []store.Event) (*op, error) {
	if err := store.ValidateStream(stream); err != nil {
		return nil, err
	}
	if len(events) == 0 {
		return nil, store.ErrEmptyBatch
	}
	if len(events) > maxEventsPerMessage {
		return nil, fmt.Errorf("%w: %d events, the cluster stores at most %d at once", store.ErrBatchTooLarge, len(events), maxEventsPerMessage)
	}
	n := 0
	for i := range events {
		if err := store.ValidateType(events[i].Type); err != nil {
			return nil, fmt.Errorf("event %d: %w", i, err)
		}
		if len(events[i].Data) == 0 {
			return nil, fmt.Errorf("event %d: %w: data is required", i, store.ErrInvalidEvent)
		}
		n += len(events[i].Data)
	}
	o := &op{kind: opAppend, stream: stream, events: make([]store.Event, len(events))}
	data := make([]byte, 0, n)
	for i := range events {
		start := len(data)
		data = append(data, events[i].Data...)
		o.events[i] = store.Event{Stream: stream, Type: events[i].Type, Data: data[start:len(data):len(data)]}
	}
	// A request is one message, or part of one: it must fit whole.
	// A key adds at most MaxKeyLen to it.
	o.size = encodedLen([]request{{events: o.events}}) + store.MaxKeyLen
	if max := l.maxMessage(); o.size > max {
		return nil, fmt.Errorf("%w: %d bytes encoded; the cluster's messages hold at most %d", store.ErrBatchTooLarge, o.size, max)
	}
	return o, nil
}

// DeleteStream deletes stream across the cluster and returns its final
// low-water mark.
func (l *Log) DeleteStream(ctx context.Context, stream string) (store.ID, error) {
	if err := store.ValidateStream(stream); err != nil {
		return store.ID{}, err
	}
	o := &op{kind: opDelete, stream: stream}
	if err := l.run(ctx, o); err != nil {
		return store.ID{}, err
	}
	return o.lowWater, nil
}

// SetPolicy stores stream's retention override across the cluster.
func (l *Log) SetPolicy(stream string, p store.Policy) error {
	if err := store.ValidateStream(stream); err != nil {
		return err
	}
	if err := p.Validate(); err != nil {
		return err
	}
	return l.run(l.ctx, &op{kind: opPolicy, stream: stream, policy: &p})
}

// DeletePolicy removes stream's override across the cluster.
func (l *Log) DeletePolicy(stream string) error {
	if err := store.ValidateStream(stream); err != nil {
		return err
	}
	return l.run(l.ctx, &op{kind: opPolicy, stream: stream})
}

// Trim removes what cut selects of stream (at most maxKeys events) across
// the cluster: decided on the local copy, written to the log, applied by
// every copy, then purged from JetStream.
func (l *Log) Trim(stream string, cut store.Cut, maxKeys int) (store.Trimmed, error) {
	if maxKeys <= 0 {
		return store.Trimmed{}, fmt.Errorf("trim %s: maxKeys must be positive", stream)
	}
	o := &op{kind: opTrim, stream: stream, cut: cut, maxKeys: maxKeys}
	if err := l.run(l.ctx, o); err != nil {
		return store.Trimmed{}, err
	}
	return o.trimmed, nil
}
