package store

import (
	"context"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// DeleteStream removes stream: its events, counters and retention policy.
// It is committed by the writer, in order with appends, and the hooks
// registered with OnDelete run before it returns. A tombstone keeps the
// stream's low-water mark (its newest id), so a client that resumes from
// before the deletion is told, and the id space never reuses its ids. It
// returns that mark, or ErrStreamNotFound.
func (l *Log) DeleteStream(ctx context.Context, stream string) (ID, error) {
	if l.replica != "" {
		return ID{}, ErrReplica
	}
	if err := ValidateStream(stream); err != nil {
		return ID{}, err
	}
	r := &deleteOp{stream: stream, err: make(chan error, 1)}
	if err := l.enqueue(ctx, r); err != nil {
		return ID{}, err
	}
	// Deletion is not undone by the caller leaving: wait for the answer so
	// that the caller sees what happened.
	if err := <-r.err; err != nil {
		return ID{}, err
	}
	return r.lowWater, nil
}

// OnDelete registers fn to be called by the writer after each committed
// DeleteStream, in order with the OnCommit calls, with the stream's final
// low-water mark. fn must not block or call the log's writing methods.
func (l *Log) OnDelete(fn func(stream string, lowWater ID)) {
	for {
		old := l.delHooks.Load()
		hooks := append(append([]func(string, ID){}, *old...), fn)
		if l.delHooks.CompareAndSwap(old, &hooks) {
			return
		}
	}
}

// commitDelete is the writer's side of DeleteStream.
func (l *Log) commitDelete(r *deleteOp) {
	name := []byte(r.stream)
	err := l.db.Update(func(tx *bolt.Tx) error {
		st := tx.Bucket(bucketStreams)
		v := st.Get(name)
		c := decodeCounters(v)
		// A replica keeps the cluster's tombstone even for a stream it
		// never saw: rebuilt after retention, it has none of its events.
		if (v == nil || c.Deleted) && r.floor.Compare(c.LowWater) <= 0 {
			return fmt.Errorf("%w: %s", ErrStreamNotFound, r.stream)
		}
		if r.floor.Compare(c.LowWater) > 0 {
			c.LowWater = r.floor
		}
		if err := raiseLast(tx, r.floor); err != nil {
			return err
		}
		events := tx.Bucket(bucketEvents)
		if b := events.Bucket(name); b != nil {
			if k, _ := b.Cursor().Last(); k != nil && ID(k).Compare(c.LowWater) > 0 {
				c.LowWater = ID(k)
			}
			if err := events.DeleteBucket(name); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketPolicy).Delete(name); err != nil {
			return err
		}
		r.lowWater = c.LowWater
		if err := putPosition(tx, r.pos); err != nil {
			return err
		}
		return st.Put(name, counters{LowWater: c.LowWater, Deleted: true}.encode())
	})
	if err == nil {
		if r.pos != 0 {
			l.position.Store(r.pos)
			l.raisedLast(r.floor)
		}
		delete(l.live, r.stream)
		for _, fn := range *l.delHooks.Load() {
			fn(r.stream, r.lowWater)
		}
	} else if !errors.Is(err, ErrStreamNotFound) {
		l.logger.Error("delete failed", "stream", r.stream, "err", err)
		err = fmt.Errorf("delete %s: %w: %w", r.stream, ErrWrite, err)
	}
	r.err <- err
}
