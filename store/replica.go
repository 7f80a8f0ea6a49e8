package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// A replica is a Log that copies a replicated log (the jetstream package's
// cluster) instead of assigning ids itself. The replicated log is the
// source of truth: it orders every write, assigns every id, and decides
// every trim; a replica applies those writes in that order, each with the
// position it had there, and serves reads exactly as a standalone log
// does. Appending, deleting and setting policies directly is refused, so
// that nothing but the replicated log's order ever reaches the file.
//
// The replica's identity (Options.Replica) is stamped into the file when
// it is created: a replica is never opened as a standalone log, nor a
// standalone log as a replica, nor one replica as another's, since each
// mix would merge two id spaces.

var (
	keyReplica  = []byte("replica")
	keyPosition = []byte("replica_position")
)

var (
	// ErrReplica is returned by Append, AppendOnce, DeleteStream,
	// SetPolicy and DeletePolicy on a replica: its writes come from the
	// replicated log through the Apply methods.
	ErrReplica = errors.New("the log is a replica: write through its cluster")
	// ErrIdentity is returned by Open when the file's replica identity
	// is not Options.Replica: a replica opened as a standalone log, a
	// standalone log opened as a replica, or another cluster's replica.
	ErrIdentity = errors.New("database belongs elsewhere")
	// ErrUnavailable is returned by a replicated log's writes when its
	// cluster did not acknowledge them in time (no quorum, a leader
	// election, a lost connection): the write may or may not be stored,
	// and a retry with the same idempotency key stores it once.
	ErrUnavailable = errors.New("cluster unavailable")
	// ErrUnsupported is returned by a backend for an operation it does
	// not offer (a replicated log's Backup).
	ErrUnsupported = errors.New("not supported by this backend")
	// ErrBatchTooLarge is returned by a replicated log for a batch with
	// more events than its cluster stores atomically.
	ErrBatchTooLarge = errors.New("batch too large")
)

// Validate checks p as SetPolicy does, for a backend that stores it
// elsewhere.
func (p Policy) Validate() error { return p.validate() }

// Applied is one write of the replicated log: events of one stream with
// the ids the replicated log gave them, and the idempotency key of the
// request that wrote them, if it had one.
type Applied struct {
	Stream string
	Events []Event
	Key    *Key
}

// Position is the position, in the replicated log, of the last write the
// replica applied; zero before the first.
func (l *Log) Position() uint64 { return l.position.Load() }

// IsReplica reports whether the log was opened with Options.Replica.
func (l *Log) IsReplica() bool { return l.replica != "" }

// Apply stores writes in one transaction with the ids as given and records
// pos as the replica's position, then calls the OnCommit hooks as a commit
// of Append would. The ids must increase and be above LastID. A key that
// the replica already holds is recorded again rather than refused: the
// replicated log decided, and every replica must decide alike.
func (l *Log) Apply(ctx context.Context, pos uint64, writes []Applied) error {
	if l.replica == "" {
		return fmt.Errorf("apply: %w", ErrIdentity)
	}
	if len(writes) == 0 {
		// A write of the replicated log that holds nothing for the
		// replica still moves its position.
		err := l.update(func(tx *bolt.Tx) error { return putPosition(tx, pos) })
		if err == nil && pos != 0 {
			l.position.Store(pos)
		}
		return err
	}
	op := &applyOp{pos: pos, err: make(chan error, 1)}
	prev := l.LastID()
	for _, w := range writes {
		if err := ValidateStream(w.Stream); err != nil {
			return err
		}
		if len(w.Events) == 0 {
			return ErrEmptyBatch
		}
		r, err := newAppendOp(w.Stream, w.Events)
		if err != nil {
			return err
		}
		for i := range w.Events {
			id := w.Events[i].ID
			if id.Compare(prev) <= 0 {
				return fmt.Errorf("apply at %d: id %s is not above %s", pos, id, prev)
			}
			r.events[i].ID, prev = id, id
		}
		r.given = true
		if w.Key != nil {
			k := *w.Key
			r.key, r.keyHash = &k, l.keys.hash(w.Stream, k.Name)
		}
		op.group = append(op.group, r)
	}
	if err := l.enqueue(ctx, op); err != nil {
		return err
	}
	// Like a deletion, an apply is not abandoned by its caller: the
	// replicated log's order must reach the file whole or not at all.
	return <-op.err
}

// ApplyDelete is DeleteStream for a replica, recording pos with it; the
// tombstone's low-water mark is at least lowWater, the one the replicated
// log recorded. A stream already deleted at that mark is not an error:
// replaying a write after a crash must be harmless.
func (l *Log) ApplyDelete(ctx context.Context, pos uint64, stream string, lowWater ID) error {
	if l.replica == "" {
		return fmt.Errorf("apply: %w", ErrIdentity)
	}
	if err := ValidateStream(stream); err != nil {
		return err
	}
	r := &deleteOp{stream: stream, pos: pos, floor: lowWater, err: make(chan error, 1)}
	if err := l.enqueue(ctx, r); err != nil {
		return err
	}
	if err := <-r.err; !errors.Is(err, ErrStreamNotFound) {
		return err
	}
	// Nothing to delete (applied again after a crash): the position still
	// moves, or the replicated log's next read would bring it back.
	return l.Apply(ctx, pos, nil)
}

// ApplyTrim removes every event of stream at or below upTo, as Trim does,
// in transactions of at most maxKeys events, and records pos with the last.
func (l *Log) ApplyTrim(pos uint64, stream string, upTo ID, maxKeys int) (Trimmed, error) {
	if l.replica == "" {
		return Trimmed{}, fmt.Errorf("apply: %w", ErrIdentity)
	}
	if err := ValidateStream(stream); err != nil {
		return Trimmed{}, err
	}
	before := upTo
	if !incrementEntropy(&before) {
		return Trimmed{}, fmt.Errorf("apply trim at %d: %w", pos, ErrInvalidID)
	}
	var total Trimmed
	for {
		res, err := l.trim(stream, Cut{Before: before}, maxKeys, pos, upTo)
		if err != nil {
			return total, err
		}
		total.Events += res.Events
		total.Bytes += res.Bytes
		if !res.LowWater.IsZero() {
			total.LowWater = res.LowWater
		}
		if !res.More {
			return total, nil
		}
	}
}

// ApplyPolicy stores (p non-nil) or removes stream's retention override,
// recording pos in the same transaction.
func (l *Log) ApplyPolicy(pos uint64, stream string, p *Policy) error {
	if l.replica == "" {
		return fmt.Errorf("apply: %w", ErrIdentity)
	}
	if err := ValidateStream(stream); err != nil {
		return err
	}
	if p != nil {
		if err := p.validate(); err != nil {
			return err
		}
	}
	err := l.update(func(tx *bolt.Tx) error {
		if err := putPosition(tx, pos); err != nil {
			return err
		}
		if p == nil {
			return tx.Bucket(bucketPolicy).Delete([]byte(stream))
		}
		return tx.Bucket(bucketPolicy).Put([]byte(stream), p.encode())
	})
	if err == nil && pos != 0 {
		l.position.Store(pos)
	}
	return err
}

// PlanTrim reports what Trim(stream, cut, maxKeys) would remove now,
// removing nothing: a replica's retention decides its cut here, then
// writes it through the replicated log.
func (l *Log) PlanTrim(stream string, cut Cut, maxKeys int) (Trimmed, error) {
	if maxKeys <= 0 {
		return Trimmed{}, fmt.Errorf("trim %s: maxKeys must be positive", stream)
	}
	var res Trimmed
	err := l.view(func(tx *bolt.Tx) error {
		c := decodeCounters(tx.Bucket(bucketStreams).Get([]byte(stream)))
		if b := tx.Bucket(bucketEvents).Bucket([]byte(stream)); b != nil {
			res, _, _ = cut.scan(b.Cursor(), c, maxKeys, func([]byte) {})
		}
		return nil
	})
	return res, err
}

// LookupKey finds key in stream as AppendOnce would, storing nothing: the
// ids of the request that used it within the window, ErrKeyReused for
// another digest, or found false. A replica's writer asks it at the
// position it writes after, so the answer holds for the write.
func (l *Log) LookupKey(stream string, key Key) (ids []ID, found bool, err error) {
	if err := ValidateKey(key.Name); err != nil {
		return nil, false, err
	}
	h := l.keys.hash(stream, key.Name)
	var buf [2]uint64
	if len(l.keys.candidates(buf[:0], h)) == 0 {
		return nil, false, nil
	}
	var res keyLookup
	err = l.view(func(tx *bolt.Tx) error {
		var err error
		res, err = l.lookupKey(tx, stream, &key, h)
		return err
	})
	return res.ids, res.found, err
}

// Exists reports whether stream holds events or has held them since it
// was last deleted: whether an append to it would create it.
func (l *Log) Exists(stream string) (bool, error) {
	var ok bool
	err := l.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketStreams).Get([]byte(stream))
		ok = v != nil && !decodeCounters(v).Deleted
		return nil
	})
	return ok, err
}

// applyOp is one Apply call: a group committed in one transaction of its
// own, with the replica's position.
type applyOp struct {
	pos   uint64
	group []*appendOp
	err   chan error
}

func (*applyOp) isWriteOp() {}

// raiseLast keeps a replica's newest id at least id: a replica rebuilt
// from the replicated log never saw the events a trim or deletion
// removed, yet their ids were issued, and a client resuming from one of
// them must not be told it is unknown.
func raiseLast(tx *bolt.Tx, id ID) error {
	meta := tx.Bucket(bucketMeta)
	if v := meta.Get(keyLastID); len(v) == len(id) && ID(v).Compare(id) >= 0 || id.IsZero() {
		return nil
	}
	return meta.Put(keyLastID, id[:])
}

// raisedLast is raiseLast's in-memory half, after the commit. Only the
// replica's one applier writes, so nothing races it.
func (l *Log) raisedLast(id ID) {
	if id.Compare(l.LastID()) > 0 {
		l.last.Store(&id)
	}
}

func putPosition(tx *bolt.Tx, pos uint64) error {
	if pos == 0 {
		return nil
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], pos)
	return tx.Bucket(bucketMeta).Put(keyPosition, b[:])
}

// checkIdentity compares the file's replica identity with want, stamping
// a file that has none and holds nothing yet; it returns the stored
// position.
func checkIdentity(tx *bolt.Tx, want string) (uint64, error) {
	meta := tx.Bucket(bucketMeta)
	have := meta.Get(keyReplica)
	if have == nil && want != "" {
		if meta.Get(keyLastID) != nil {
			return 0, fmt.Errorf("%w: it holds a standalone log, not a replica of %s", ErrIdentity, want)
		}
		if err := meta.Put(keyReplica, []byte(want)); err != nil {
			return 0, err
		}
		have = []byte(want)
	}
	if string(have) != want {
		if want == "" {
			return 0, fmt.Errorf("%w: it is a cluster node's replica (%s), not a standalone log", ErrIdentity, have)
		}
		return 0, fmt.Errorf("%w: it is a replica of %s, not of %s", ErrIdentity, have, want)
	}
	var pos uint64
	if v := meta.Get(keyPosition); len(v) == 8 {
		pos = binary.BigEndian.Uint64(v)
	}
	return pos, nil
}
