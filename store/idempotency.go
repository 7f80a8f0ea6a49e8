package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Idempotency keys let a publisher retry an append whose answer it never
// saw without storing it twice. Each request stored under a key leaves a
// record, written in the same transaction as its events, so that a crash
// keeps both or neither:
//
//	idem: first id → digest (32) ‖ len ‖ stream ‖ len ‖ key ‖ the other ids (16 each)
//
// The records are keyed by the request's first id, which is also the time
// the key was first used: appending them writes one or two pages per
// commit however random the clients' keys are, and expiry deletes from
// the front. A bucket keyed by the clients' keys would put each key of a
// commit on a page of its own: with 32 publishers that wrote three times
// the pages per commit and cut throughput to a quarter
// (BenchmarkAppendParallel32). The lookup by key is instead an index in
// memory (keyIndex), rebuilt from the records at Open; a hit is checked
// against the record itself.
var bucketIdem = []byte("idem")

// DefaultIdempotencyWindow is how long a key is remembered when
// Options.IdempotencyWindow is zero.
const DefaultIdempotencyWindow = 24 * time.Hour

// MaxKeyLen is the longest idempotency key.
const MaxKeyLen = 255

// Errors of idempotent appends.
var (
	// ErrInvalidKey is returned by AppendOnce for a key that is not 1 to
	// MaxKeyLen visible ASCII characters.
	ErrInvalidKey = errors.New("invalid idempotency key")
	// ErrKeyReused is returned by AppendOnce when the stream already
	// holds the key, within the window, for a request with another
	// digest. Nothing is stored.
	ErrKeyReused = errors.New("idempotency key already used for a different request")
)

// Key names one append request for deduplication: Name is the client's
// key, Digest a hash of the request as the caller defines it (the HTTP
// API hashes the decoded events, so that whitespace does not count).
type Key struct {
	Name   string
	Digest [32]byte
}

// ValidateKey checks an idempotency key: 1 to MaxKeyLen characters from
// '!' to '~'.
func ValidateKey(name string) error {
	if len(name) == 0 || len(name) > MaxKeyLen {
		return fmt.Errorf("%w: must be 1-%d characters", ErrInvalidKey, MaxKeyLen)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < '!' || c > '~' {
			return fmt.Errorf("%w: only visible ASCII characters ('!' to '~') are allowed", ErrInvalidKey)
		}
	}
	return nil
}

// AppendOnce is Append for a request named by key. The first call with
// a given stream and key name stores the events; a later one within the
// idempotency window stores nothing and returns the first call's ids with
// replayed set, or ErrKeyReused if its digest differs. Calls that overlap
// are ordered by the writer, which looks the key up again in the
// transaction that would store it: of any number of concurrent calls with
// one key, exactly one stores, and the rest are answered once its commit
// is durable. A call that fails stores neither events nor key, so its
// retry is a first call.
//
// A key outlives the events it names: after retention or a deletion
// removed them, a repeat still returns their ids and stores nothing.
func (l *Log) AppendOnce(ctx context.Context, stream string, key Key, events []Event) (ids []ID, replayed bool, err error) {
	if l.replica != "" {
		return nil, false, ErrReplica
	}
	if err := ValidateStream(stream); err != nil {
		return nil, false, err
	}
	if err := ValidateKey(key.Name); err != nil {
		return nil, false, err
	}
	// Most repeats are retries of a request committed long ago: answered
	// from a read transaction, they cost the writer nothing. A key the
	// index lacks (most keys) needs no transaction to say so.
	h := l.keys.hash(stream, key.Name)
	var buf [2]uint64
	if len(l.keys.candidates(buf[:0], h)) > 0 {
		var res keyLookup
		err = l.view(func(tx *bolt.Tx) error {
			var err error
			res, err = l.lookupKey(tx, stream, &key, h)
			return err
		})
		if err != nil || res.found {
			return res.ids, res.found, err
		}
	}
	return l.appendOnceQueued(ctx, stream, key, events, h)
}

// appendOnceQueued is AppendOnce past its read-only lookup: the writer
// looks the key up again, in the transaction that would store it.
func (l *Log) appendOnceQueued(ctx context.Context, stream string, key Key, events []Event, h uint64) (ids []ID, replayed bool, err error) {
	r, err := newAppendOp(stream, events)
	if err != nil {
		return nil, false, err
	}
	r.key, r.keyHash = &key, h
	if err := l.run(ctx, r); err != nil {
		return nil, false, err
	}
	if r.replayed != nil {
		return r.replayed, true, nil
	}
	return r.ids(), false, nil
}

// keyIndex maps the keys within the window to their records: a 64-bit
// hash of stream and key to the first 8 bytes of the record's first id
// (its millisecond and two bytes more), where a cursor finds the record
// among the few of that prefix. It costs about 40 bytes a key
// (TestKeyIndexMemory); a full id and a hash too wide to ever collide
// cost twice that. Two keys that do share a hash both stay: the second
// prefix goes to more. The writer adds to the index after each commit,
// before answering; ExpireKeys removes from it after its own.
type keyIndex struct {
	// sum is the hash; tests make every key collide with it.
	sum   func(stream, name string) uint64
	mu    sync.RWMutex
	first map[uint64]uint64
	more  map[uint64][]uint64 // the further prefixes of hashes that keys share
}

func newKeyIndex() *keyIndex {
	seed := maphash.MakeSeed()
	return &keyIndex{
		sum: func(stream, name string) uint64 {
			var m maphash.Hash
			m.SetSeed(seed)
			m.WriteString(stream)
			m.WriteByte(0) // neither a stream name nor a key holds one
			m.WriteString(name)
			return m.Sum64()
		},
		first: make(map[uint64]uint64),
		more:  make(map[uint64][]uint64),
	}
}

func (x *keyIndex) hash(stream, name string) uint64 { return x.sum(stream, name) }

// idPrefix is what the index keeps of a record's first id.
func idPrefix(id ID) uint64 { return binary.BigEndian.Uint64(id[:8]) }

// candidates appends to dst the prefixes the index holds for h.
func (x *keyIndex) candidates(dst []uint64, h uint64) []uint64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if p, ok := x.first[h]; ok {
		dst = append(append(dst, p), x.more[h]...)
	}
	return dst
}

// add indexes a record at prefix p for h. old is the prefix of the same
// key's earlier record (a key used again after its window), which p
// replaces; 0 when there is none.
func (x *keyIndex) add(h, p, old uint64) {
	if old != 0 {
		x.remove(h, old)
	}
	if _, ok := x.first[h]; ok {
		x.more[h] = append(x.more[h], p)
		return
	}
	x.first[h] = p
}

// remove takes the prefix p of h out of the index, if it is there.
func (x *keyIndex) remove(h, p uint64) {
	more := x.more[h]
	if x.first[h] == p {
		if len(more) == 0 {
			delete(x.first, h)
			return
		}
		x.first[h], more = more[0], more[1:]
	} else if i := slices.Index(more, p); i >= 0 {
		more = slices.Delete(slices.Clone(more), i, i+1)
	} else {
		return
	}
	if len(more) == 0 {
		delete(x.more, h)
	} else {
		x.more[h] = more
	}
}

// len is how many keys the index holds.
func (x *keyIndex) len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	n := len(x.first)
	for _, more := range x.more {
		n += len(more)
	}
	return n
}

// keyRecord is a record of the idem bucket, decoded.
type keyRecord struct {
	digest []byte
	stream []byte
	name   []byte
	ids    []ID
}

// appendKeyRecord encodes r's record, without its first id, which is the
// record's bbolt key.
func appendKeyRecord(dst []byte, r *appendOp) []byte {
	dst = append(dst, r.key.Digest[:]...)
	dst = append(dst, byte(len(r.stream)))
	dst = append(dst, r.stream...)
	dst = append(dst, byte(len(r.key.Name)))
	dst = append(dst, r.key.Name...)
	for i := 1; i < len(r.events); i++ {
		dst = append(dst, r.events[i].ID[:]...)
	}
	return dst
}

func decodeKeyRecord(k, v []byte) (keyRecord, error) {
	var rec keyRecord
	if len(k) != 16 || len(v) < 32+1 {
		return rec, errCorrupt
	}
	rec.digest, v = v[:32], v[32:]
	n := int(v[0])
	if n == 0 || len(v) < 1+n+1 {
		return rec, errCorrupt
	}
	rec.stream, v = v[1:1+n], v[1+n:]
	n = int(v[0])
	if n == 0 || len(v) < 1+n || (len(v)-1-n)%16 != 0 {
		return rec, errCorrupt
	}
	rec.name, v = v[1:1+n], v[1+n:]
	rec.ids = make([]ID, 1+len(v)/16)
	rec.ids[0] = ID(k)
	for i := 1; i < len(rec.ids); i++ {
		rec.ids[i] = ID(v[16*(i-1):])
	}
	return rec, nil
}

// keyLookup is what lookupKey found of a key.
type keyLookup struct {
	ids   []ID   // the ids of the request that used the key first
	found bool   // within the window, with the same digest
	old   uint64 // the prefix of the key's record past the window, if any
}

// lookupKey finds key in stream within the window, or reports
// ErrKeyReused when it names a request with another digest there. A key
// past the window counts as absent even before expiry removes it, so
// that expiry's pace never shows.
func (l *Log) lookupKey(tx *bolt.Tx, stream string, key *Key, h uint64) (keyLookup, error) {
	var res keyLookup
	rec, p, ok, err := l.findKey(tx.Bucket(bucketIdem).Cursor(), stream, key.Name, h)
	switch {
	case err != nil || !ok:
		// Not in the window: never used, or expired and removed since
		// the index was read.
		return res, err
	case l.expired(rec.ids[0]):
		res.old = p
		return res, nil
	case !bytes.Equal(rec.digest, key.Digest[:]):
		return res, fmt.Errorf("%w: key %q in stream %s", ErrKeyReused, key.Name, stream)
	}
	res.ids, res.found = rec.ids, true
	return res, nil
}

// findKey reads the newest record the index leads to for stream and
// name, and the index prefix it was found under. The index holds one
// entry a key, but the file may hold an older record of it too (a key
// used again past its window, not yet expired), which may share a
// millisecond with it: every candidate is read, and the newest decides.
func (l *Log) findKey(c *bolt.Cursor, stream, name string, h uint64) (rec keyRecord, prefix uint64, ok bool, err error) {
	var buf [2]uint64
	for _, p := range l.keys.candidates(buf[:0], h) {
		var seek [8]byte
		binary.BigEndian.PutUint64(seek[:], p)
		for k, v := c.Seek(seek[:]); k != nil && bytes.HasPrefix(k, seek[:]); k, v = c.Next() {
			r, err := decodeKeyRecord(k, v)
			if err != nil {
				return rec, 0, false, fmt.Errorf("idempotency record %x: %w", k, err)
			}
			if string(r.stream) != stream || string(r.name) != name {
				continue // another key of the same millisecond, or hash
			}
			if !ok || r.ids[0].Compare(rec.ids[0]) > 0 {
				rec, prefix, ok = r, p, true
			}
		}
	}
	return rec, prefix, ok, nil
}

// expired reports whether a key first used by the request that got id is
// past the window.
func (l *Log) expired(first ID) bool {
	return !first.Time().Add(l.window).After(l.now())
}

// groupKeys holds the keys stored by the group being committed, which the
// index does not have until the commit is durable.
type groupKeys map[uint64][]*appendOp

// lookupGroupKey is lookupKey for r within its group: a key an earlier
// append of the group stored answers first, then the index.
func (l *Log) lookupGroupKey(tx *bolt.Tx, r *appendOp, pending groupKeys) (keyLookup, error) {
	for _, p := range pending[r.keyHash] {
		if p.stream != r.stream || p.key.Name != r.key.Name {
			continue
		}
		if p.key.Digest != r.key.Digest {
			return keyLookup{}, fmt.Errorf("%w: key %q in stream %s", ErrKeyReused, r.key.Name, r.stream)
		}
		return keyLookup{ids: p.ids(), found: true}, nil
	}
	return l.lookupKey(tx, r.stream, r.key, r.keyHash)
}

// putKey records r's key with the ids the writer just gave its events.
// The value goes to arena like the events', for the same reason.
func putKey(tx *bolt.Tx, r *appendOp, arena *[]byte) error {
	start := len(*arena)
	*arena = appendKeyRecord(*arena, r)
	b := tx.Bucket(bucketIdem)
	b.FillPercent = 1.0 // keys only grow, like a stream's
	return b.Put(r.events[0].ID[:], (*arena)[start:len(*arena):len(*arena)])
}

// indexKeys adds the keys of the appends group stored to the index, once
// their commit is durable.
func (l *Log) indexKeys(group []*appendOp) {
	l.keys.mu.Lock()
	defer l.keys.mu.Unlock()
	for _, r := range group {
		if r.key != nil && r.stores() {
			l.keys.add(r.keyHash, idPrefix(r.events[0].ID), r.oldKey)
		}
	}
}

// loadKeys fills the index from the records within the window, at Open.
// Records come oldest first: a key's newer record replaces its older one,
// so that the index holds one entry a key, as AppendOnce keeps it.
func (l *Log) loadKeys(tx *bolt.Tx) error {
	b := tx.Bucket(bucketIdem)
	c := b.Cursor()
	return b.ForEach(func(k, v []byte) error {
		rec, err := decodeKeyRecord(k, v)
		if err != nil {
			return fmt.Errorf("idempotency record %x: %w", k, err)
		}
		if l.expired(rec.ids[0]) {
			return nil
		}
		stream, name := string(rec.stream), string(rec.name)
		h := l.keys.hash(stream, name)
		_, old, found, err := l.findKey(c, stream, name, h)
		if err != nil {
			return err
		}
		if !found {
			old = 0
		}
		l.keys.add(h, idPrefix(rec.ids[0]), old)
		return nil
	})
}

// ExpireKeys removes at most maxKeys idempotency keys whose window has
// ended by now, oldest first, in one write transaction, and reports how
// many it removed and whether more are due. Callers loop while more is
// set; the bound keeps an append from waiting long behind it. (A key past
// the window is already ignored by AppendOnce, by the log's clock: expiry
// only frees the space.)
func (l *Log) ExpireKeys(now time.Time, maxKeys int) (removed int, more bool, err error) {
	if maxKeys <= 0 {
		return 0, false, errors.New("expire keys: maxKeys must be positive")
	}
	// A caller's clock ahead of the log's must not take away keys that
	// AppendOnce still honours.
	if logNow := l.now(); logNow.Before(now) {
		now = logNow
	}
	due := func(k []byte) bool { return !ID(k).Time().Add(l.window).After(now) }
	// Most passes find nothing due: a read transaction says so without
	// the fsync of a write.
	var some bool
	if err := l.view(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bucketIdem).Cursor().First()
		some = k != nil && due(k)
		return nil
	}); err != nil || !some {
		return 0, false, err
	}
	type gone struct {
		first ID
		h     uint64
		ok    bool // decoded, so indexed
	}
	var removedKeys []gone
	err = l.update(func(tx *bolt.Tx) error {
		removedKeys, more = removedKeys[:0], false
		b := tx.Bucket(bucketIdem)
		c := b.Cursor()
		for k, v := c.First(); k != nil && due(k); k, v = c.Next() {
			if len(removedKeys) == maxKeys {
				more = true
				break
			}
			g := gone{first: ID(k)}
			// A record that does not decode (which Check reports) has no
			// index entry to remove, but goes all the same.
			if rec, err := decodeKeyRecord(k, v); err == nil {
				g.h, g.ok = l.keys.hash(string(rec.stream), string(rec.name)), true
			}
			removedKeys = append(removedKeys, g)
		}
		// Deleting under a cursor skips keys: collect, then delete.
		for _, g := range removedKeys {
			if err := b.Delete(g.first[:]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, false, fmt.Errorf("expire idempotency keys: %w", err)
	}
	l.keys.mu.Lock()
	defer l.keys.mu.Unlock()
	for _, g := range removedKeys {
		// A key used again after its window has had its entry moved to
		// the newer record already, which stays.
		if g.ok {
			l.keys.remove(g.h, idPrefix(g.first))
		}
	}
	return len(removedKeys), more, nil
}

// IdempotencyWindow is how long a key is remembered.
func (l *Log) IdempotencyWindow() time.Duration { return l.window }

// IdempotencyKeys is how many keys within the window the log remembers.
func (l *Log) IdempotencyKeys() int { return l.keys.len() }
