package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// writeOp is one caller's request to the writer: an *appendOp or a
// *deleteOp. Both go through one queue, so that a deletion is ordered
// with the appends around it.
type writeOp interface{ isWriteOp() }

// appendOp is one Append call: events for one stream, committed in one
// transaction with whatever else the writer collects beside it.
type appendOp struct {
	stream string
	events []Event
	size   int        // stored bytes, counted against MaxGroupBytes
	err    chan error // buffered; the writer's one answer
	// refused is set by admit for an append it keeps out of the commit.
	refused error
	// key is set for AppendOnce. The commit looks it up before storing:
	// found, it sets replayed to the ids it names (or refused, for another
	// digest) and stores nothing.
	key      *Key
	keyHash  uint64
	oldKey   uint64 // the index prefix of the key's record past its window
	replayed []ID
	// overLimit is set by admit for a keyed append that would create a
	// stream beyond MaxStreams: refused unless its key is a repeat.
	overLimit error
	// given is set for a replica's Apply: the events carry their ids, and
	// a key is recorded, never looked up to refuse or replay.
	given bool
}

// ids returns the ids the writer gave r's events.
func (r *appendOp) ids() []ID {
	ids := make([]ID, len(r.events))
	for i := range r.events {
		ids[i] = r.events[i].ID
	}
	return ids
}

// stores reports whether the commit stored r's events.
func (r *appendOp) stores() bool { return r.refused == nil && r.replayed == nil }

// deleteOp is one DeleteStream call, committed in a transaction of its
// own and answered with the stream's final low-water mark in lowWater.
type deleteOp struct {
	stream   string
	pos      uint64     // a replica's position, recorded with the deletion
	floor    ID         // a replica's low-water mark from the replicated log
	err      chan error // buffered; the writer's one answer
	lowWater ID
}

func (*appendOp) isWriteOp() {}
func (*deleteOp) isWriteOp() {}

func (l *Log) enqueue(ctx context.Context, op writeOp) error {
	l.closeMu.RLock()
	defer l.closeMu.RUnlock()
	if l.closed {
		return ErrClosed
	}
	select {
	case l.queue <- op:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writer is the single goroutine that assigns ids and commits. For each
// group of appends it runs four phases: collect what is queued, admit it
// against MaxStreams, commit the admitted in one transaction (and tell the
// hooks), answer every caller. Taking whatever is queued, without a timer,
// makes the group grow with the load while the previous fsync runs, and a
// lone append never waits.
func (l *Log) writer(gen *generator) {
	defer close(l.done)
	var (
		next  writeOp // taken from the queue by collect but not in its group
		group []*appendOp
		arena []byte // the group's stored values; bbolt keeps pointers into it until commit
		batch []Event
	)
	for {
		op := next
		next = nil
		if op == nil {
			var ok bool
			if op, ok = <-l.queue; !ok {
				return
			}
		}
		if a, ok := op.(*applyOp); ok {
			// A replica's group is the replicated log's: it commits as
			// given, alone, past every limit the cluster already applied.
			var err error
			if len(a.group) > 0 {
				err = l.commit(gen, a.group, nil, &arena, &batch, a.pos)
			}
			a.err <- err
			continue
		}
		first, ok := op.(*appendOp)
		if !ok {
			l.commitDelete(op.(*deleteOp))
			continue
		}
		group, next = l.collect(append(group[:0], first))
		created, admitted := l.admit(group)
		var err error
		// A group refused whole has nothing to commit.
		if admitted > 0 {
			err = l.commit(gen, group, created, &arena, &batch, 0)
		}
		answer(group, err)
	}
}

// collect adds to group the appends already queued, up to MaxGroupBytes,
// without waiting for more. It stops at a deletion, which commits alone,
// or an append that would take the group over the size, and returns that
// op as next.
func (l *Log) collect(group []*appendOp) (_ []*appendOp, next writeOp) {
	size := group[0].size
	for size < l.maxGrp {
		select {
		case op, ok := <-l.queue:
			if !ok {
				return group, nil
			}
			r, isAppend := op.(*appendOp)
			if !isAppend || size+r.size > l.maxGrp {
				return group, op
			}
			group, size = append(group, r), size+r.size
		default:
			return group, nil
		}
	}
	return group, nil
}

// admit refuses, with ErrTooManyStreams, the appends of a group that
// would create a stream beyond MaxStreams, and returns the streams the rest
// create and how many appends it admitted.
func (l *Log) admit(group []*appendOp) (created []string, admitted int) {
	if l.maxStr <= 0 {
		return nil, len(group) // no limit, nothing to track
	}
	for _, r := range group {
		r.refused, r.overLimit = nil, nil
		if _, ok := l.live[r.stream]; ok {
			admitted++
			continue
		}
		// New in this group: put it in live now, and take it out again
		// if the commit fails, so that the check stays one map lookup.
		if len(l.live) >= l.maxStr {
			err := fmt.Errorf("%w: the limit is %d; delete one to make room", ErrTooManyStreams, l.maxStr)
			if r.key != nil {
				// A repeat stores nothing and creates nothing: the
				// commit refuses it only if its key turns out new.
				r.overLimit = err
				admitted++
				continue
			}
			r.refused = err
			continue
		}
		l.live[r.stream] = struct{}{}
		created = append(created, r.stream)
		admitted++
	}
	return created, admitted
}

// commit gives the admitted appends of group their ids and stores them in
// one transaction, which admit made sure is not empty. On success it
// publishes the new last id and calls the OnCommit hooks, before any
// caller is answered; on failure it forgets the streams the group would
// have created and returns ErrWrite.
func (l *Log) commit(gen *generator, group []*appendOp, created []string, arena *[]byte, batch *[]Event, pos uint64) error {
	size := 0
	for _, r := range group {
		size += r.size
		if r.key != nil {
			size += len(r.key.Digest) + 2 + len(r.stream) + len(r.key.Name) + 16*len(r.events)
		}
	}
	if cap(*arena) < size {
		*arena = make([]byte, 0, size)
	}
	*arena = (*arena)[:0]
	var (
		keyed   []*appendOp // appends whose key lookup may refuse or replay them
		pending groupKeys   // the keys this group stores
		start   time.Time
	)
	if l.observe != nil {
		start = time.Now()
	}
	err := l.db.Update(func(tx *bolt.Tx) error {
		var last ID
		for _, r := range group {
			if r.refused != nil {
				continue
			}
			if r.key != nil && r.given {
				keyed = append(keyed, r)
				// Only to replace an expired record in the index.
				res, err := l.lookupGroupKey(tx, r, pending)
				if err == nil && !res.found {
					r.oldKey = res.old
				}
			} else if r.key != nil {
				keyed = append(keyed, r)
				res, err := l.lookupGroupKey(tx, r, pending)
				if errors.Is(err, ErrKeyReused) {
					r.refused = err
					continue
				}
				if err != nil {
					return err
				}
				if res.found {
					r.replayed = res.ids
					continue
				}
				if r.overLimit != nil {
					r.refused = r.overLimit
					continue
				}
				r.oldKey = res.old
			}
			if !r.given {
				for i := range r.events {
					r.events[i].ID = gen.next()
				}
			}
			last = r.events[len(r.events)-1].ID
			if err := putEvents(tx, r, arena); err != nil {
				return err
			}
			if r.key != nil {
				if err := putKey(tx, r, arena); err != nil {
					return err
				}
				if pending == nil {
					pending = make(groupKeys)
				}
				pending[r.keyHash] = append(pending[r.keyHash], r)
			}
		}
		if err := putPosition(tx, pos); err != nil {
			return err
		}
		if last.IsZero() {
			return nil // every append was a repeat: no new id
		}
		return tx.Bucket(bucketMeta).Put(keyLastID, last[:])
	})
	var took time.Duration
	if l.observe != nil {
		took = time.Since(start)
	}
	if err != nil {
		if l.observe != nil {
			l.observe(CommitStats{Took: took, Failed: true})
		}
		l.logger.Error("commit failed", "events", countEvents(group), "err", err)
		// What the lookups decided rests on a transaction that is gone.
		for _, r := range keyed {
			r.refused, r.replayed, r.oldKey = nil, nil, 0
		}
		for _, name := range created {
			delete(l.live, name)
		}
		return fmt.Errorf("append: %w: %w", ErrWrite, err)
	}
	*batch = (*batch)[:0]
	for _, r := range group {
		if r.stores() {
			*batch = append(*batch, r.events...)
		}
	}
	if len(keyed) > 0 {
		l.indexKeys(group)
		l.forgetUncreated(group, created)
	}
	if l.observe != nil {
		l.observe(CommitStats{Events: len(*batch), Took: took})
	}
	if pos != 0 {
		l.position.Store(pos)
	}
	if len(*batch) == 0 {
		return nil
	}
	last := (*batch)[len(*batch)-1].ID
	l.last.Store(&last)
	for _, fn := range *l.hooks.Load() {
		fn(*batch)
	}
	return nil
}

// forgetUncreated takes out of live the streams admit counted as created
// by a group whose appends to them were all repeats or refused by their
// key: nothing was stored, so the streams still do not exist.
func (l *Log) forgetUncreated(group []*appendOp, created []string) {
	for _, name := range created {
		stored := false
		for _, r := range group {
			if r.stream == name && r.stores() {
				stored = true
				break
			}
		}
		if !stored {
			delete(l.live, name)
		}
	}
}

// answer tells each caller of group how its append ended: refused by
// admit, or the commit's err.
func answer(group []*appendOp, err error) {
	for _, r := range group {
		if r.refused != nil {
			r.err <- r.refused
		} else {
			r.err <- err
		}
	}
}

func countEvents(group []*appendOp) int {
	n := 0
	for _, r := range group {
		n += len(r.events)
	}
	return n
}

// putEvents stores one request's events and updates its stream's counters.
// Values are appended to arena, which has room for them all: bbolt requires
// a value to stay unchanged until the transaction ends, so no buffer is
// reused within one.
func putEvents(tx *bolt.Tx, r *appendOp, arena *[]byte) error {
	b, err := tx.Bucket(bucketEvents).CreateBucketIfNotExists([]byte(r.stream))
	if err != nil {
		return err
	}
	// Keys only ever grow, so full pages are never split again: pack them.
	b.FillPercent = 1.0
	var bytes uint64
	for i := range r.events {
		e := &r.events[i]
		start := len(*arena)
		*arena = e.appendValue(*arena)
		if err := b.Put(e.ID[:], (*arena)[start:len(*arena):len(*arena)]); err != nil {
			return err
		}
		bytes += uint64(len(*arena) - start)
	}
	st := tx.Bucket(bucketStreams)
	c := decodeCounters(st.Get([]byte(r.stream)))
	c.Count += uint64(len(r.events))
	c.Bytes += bytes
	c.Deleted = false
	return st.Put([]byte(r.stream), c.encode())
}
