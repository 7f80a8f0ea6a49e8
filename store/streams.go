package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// ErrStreamNotFound is returned for a stream that has never been published
// to, or was deleted and not published to since.
var ErrStreamNotFound = errors.New("no such stream")

// Stream describes one stream, without walking its events.
func (l *Log) Stream(name string) (StreamInfo, error) {
	if err := ValidateStream(name); err != nil {
		return StreamInfo{}, err
	}
	var info StreamInfo
	err := l.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketStreams).Get([]byte(name))
		if v == nil || decodeCounters(v).Deleted {
			return fmt.Errorf("%w: %s", ErrStreamNotFound, name)
		}
		info = streamInfo(tx, []byte(name), v)
		return nil
	})
	return info, err
}

func streamInfo(tx *bolt.Tx, name, v []byte) StreamInfo {
	c := decodeCounters(v)
	info := StreamInfo{Name: string(name), Count: c.Count, Bytes: c.Bytes, LowWater: c.LowWater}
	if b := tx.Bucket(bucketEvents).Bucket(name); b != nil {
		cur := b.Cursor()
		if k, _ := cur.First(); k != nil {
			info.FirstID = ID(k)
		}
		if k, _ := cur.Last(); k != nil {
			info.LastID = ID(k)
		}
	}
	return info
}

// view runs fn in a read transaction, reporting ErrClosed after Close.
func (l *Log) view(fn func(*bolt.Tx) error) error {
	err := l.db.View(fn)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// update runs fn in a write transaction beside the writer, reporting
// ErrClosed once Close has begun.
func (l *Log) update(fn func(*bolt.Tx) error) error {
	l.closeMu.RLock()
	defer l.closeMu.RUnlock()
	if l.closed {
		return ErrClosed
	}
	return l.db.Update(fn)
}

// Bounds is what a read saw of a stream's removed past, in the same
// transaction as its events.
type Bounds struct {
	// LowWater is the newest id removed from the stream by retention or
	// deletion; zero if nothing ever was.
	LowWater ID
	// Deleted reports a stream deleted and not published to since.
	Deleted bool
	// Newest is the newest id committed in any stream when the read began:
	// every later commit has larger ids. An id above it was never issued by
	// this database.
	Newest ID
}

// Gap reports whether a reader resuming after the id after missed events
// that were removed: some event newer than after is gone.
func (b Bounds) Gap(after ID) bool { return after.Compare(b.LowWater) < 0 }

// DeleteStream removes stream: its events, counters and retention policy.
// It is committed by the writer, in order with appends, and the hooks
// registered with OnDelete run before it returns. A tombstone keeps the
// stream's low-water mark (its newest id), so a client that resumes from
// before the deletion is told, and the id space never reuses its ids. It
// returns that mark, or ErrStreamNotFound.
func (l *Log) DeleteStream(ctx context.Context, stream string) (ID, error) {
	if err := ValidateStream(stream); err != nil {
		return ID{}, err
	}
	r := &appendReq{stream: stream, del: true, err: make(chan error, 1)}
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
func (l *Log) commitDelete(r *appendReq) {
	name := []byte(r.stream)
	err := l.db.Update(func(tx *bolt.Tx) error {
		st := tx.Bucket(bucketStreams)
		v := st.Get(name)
		c := decodeCounters(v)
		if v == nil || c.Deleted {
			return fmt.Errorf("%w: %s", ErrStreamNotFound, r.stream)
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
		return st.Put(name, counters{LowWater: c.LowWater, Deleted: true}.encode())
	})
	if err == nil {
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

// Scan is ScanAfter that also reports, from the same read transaction, what
// was removed from the stream: a reader compares its position with the
// bounds to know whether it missed events, with no race against a trim.
func (l *Log) Scan(stream string, after ID, limit int, fn func(*Event) error) (Bounds, error) {
	var bounds Bounds
	err := l.view(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketStreams).Get([]byte(stream)); v != nil {
			c := decodeCounters(v)
			bounds = Bounds{LowWater: c.LowWater, Deleted: c.Deleted}
		}
		// LastID may lag a commit that this transaction already sees; the
		// stored id does not.
		if v := tx.Bucket(bucketMeta).Get(keyLastID); len(v) == len(ID{}) {
			bounds.Newest = ID(v)
		}
		b := tx.Bucket(bucketEvents).Bucket([]byte(stream))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		k, v := c.Seek(after[:])
		if k != nil && ID(k) == after {
			k, v = c.Next()
		}
		e := Event{Stream: stream}
		for n := 0; k != nil && (limit <= 0 || n < limit); n++ {
			if err := decodeValue(k, v, &e); err != nil {
				return fmt.Errorf("stream %s id %x: %w", stream, k, err)
			}
			if err := fn(&e); err != nil {
				return err
			}
			k, v = c.Next()
		}
		return nil
	})
	return bounds, err
}

// ReadPage is ReadAfter with the stream's bounds, read in one transaction.
func (l *Log) ReadPage(stream string, after ID, limit int) ([]Event, Bounds, error) {
	var out []Event
	bounds, err := l.Scan(stream, after, limit, func(e *Event) error {
		out = append(out, Event{ID: e.ID, Stream: e.Stream, Type: e.Type, Data: bytes.Clone(e.Data)})
		return nil
	})
	return out, bounds, err
}

// Policy is a stream's retention override, kept in the database. A nil
// field inherits the server's default; a zero value means no limit.
type Policy struct {
	MaxAge    *time.Duration
	MaxEvents *uint64
	MaxBytes  *uint64
}

// ErrInvalidPolicy is returned for a negative age limit.
var ErrInvalidPolicy = errors.New("invalid retention policy")

func (p Policy) validate() error {
	if p.MaxAge != nil && *p.MaxAge < 0 {
		return fmt.Errorf("%w: max age must not be negative", ErrInvalidPolicy)
	}
	return nil
}

type policyJSON struct {
	MaxAge    *string `json:"max_age,omitempty"`
	MaxEvents *uint64 `json:"max_events,omitempty"`
	MaxBytes  *uint64 `json:"max_bytes,omitempty"`
}

// MarshalJSON writes the fields that are set, the age as a Go duration
// ("168h0m0s").
func (p Policy) MarshalJSON() ([]byte, error) {
	var j policyJSON
	if p.MaxAge != nil {
		s := p.MaxAge.String()
		j.MaxAge = &s
	}
	j.MaxEvents, j.MaxBytes = p.MaxEvents, p.MaxBytes
	return json.Marshal(j)
}

// UnmarshalJSON reads {"max_age": "24h", "max_events": 1000, "max_bytes":
// 1048576}, any field optional, null the same as absent. Keys are matched
// byte for byte and may appear once (see StrictObject): an operator's
// {"MAX_EVENTS": 1} or a repeated key would otherwise be read as something
// other than what was written. Unknown or misspelt fields, negative
// numbers and ages that are not durations are refused with
// ErrInvalidPolicy.
func (p *Policy) UnmarshalJSON(b []byte) error {
	members, err := StrictObject(b)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidPolicy, err)
	}
	var j policyJSON
	for _, k := range slices.Sorted(maps.Keys(members)) {
		var err error
		switch v := members[k]; k {
		case "max_age":
			err = json.Unmarshal(v, &j.MaxAge)
		case "max_events":
			err = json.Unmarshal(v, &j.MaxEvents)
		case "max_bytes":
			err = json.Unmarshal(v, &j.MaxBytes)
		default:
			err = errors.New("unknown field (fields are max_age, max_events and max_bytes, in lower case)")
		}
		if err != nil {
			return fmt.Errorf("%w: %q: %w", ErrInvalidPolicy, k, err)
		}
	}
	*p = Policy{MaxEvents: j.MaxEvents, MaxBytes: j.MaxBytes}
	if j.MaxAge != nil {
		d, err := time.ParseDuration(*j.MaxAge)
		if err != nil {
			return fmt.Errorf("%w: max_age: %w", ErrInvalidPolicy, err)
		}
		p.MaxAge = &d
	}
	return p.validate()
}

const (
	policyAge = 1 << iota
	policyEvents
	policyBytes
)

func (p Policy) encode() []byte {
	v := make([]byte, 1+3*8)
	if p.MaxAge != nil {
		v[0] |= policyAge
		binary.BigEndian.PutUint64(v[1:], uint64(*p.MaxAge))
	}
	if p.MaxEvents != nil {
		v[0] |= policyEvents
		binary.BigEndian.PutUint64(v[9:], *p.MaxEvents)
	}
	if p.MaxBytes != nil {
		v[0] |= policyBytes
		binary.BigEndian.PutUint64(v[17:], *p.MaxBytes)
	}
	return v
}

func decodePolicy(v []byte) (Policy, error) {
	var p Policy
	if len(v) != 1+3*8 {
		return p, fmt.Errorf("retention policy: %w", errCorrupt)
	}
	if v[0]&policyAge != 0 {
		d := time.Duration(binary.BigEndian.Uint64(v[1:]))
		p.MaxAge = &d
	}
	if v[0]&policyEvents != 0 {
		n := binary.BigEndian.Uint64(v[9:])
		p.MaxEvents = &n
	}
	if v[0]&policyBytes != 0 {
		n := binary.BigEndian.Uint64(v[17:])
		p.MaxBytes = &n
	}
	return p, nil
}

// SetPolicy stores stream's retention override, replacing any earlier one.
// A stream need not exist yet: an operator may set a policy first.
func (l *Log) SetPolicy(stream string, p Policy) error {
	if err := ValidateStream(stream); err != nil {
		return err
	}
	if err := p.validate(); err != nil {
		return err
	}
	return l.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPolicy).Put([]byte(stream), p.encode())
	})
}

// DeletePolicy removes stream's override, so the defaults apply again.
func (l *Log) DeletePolicy(stream string) error {
	if err := ValidateStream(stream); err != nil {
		return err
	}
	return l.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPolicy).Delete([]byte(stream))
	})
}

// Policy returns stream's override; the zero Policy (all inherited) if it
// has none.
func (l *Log) Policy(stream string) (Policy, error) {
	if err := ValidateStream(stream); err != nil {
		return Policy{}, err
	}
	var p Policy
	err := l.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketPolicy).Get([]byte(stream))
		if v == nil {
			return nil
		}
		var err error
		p, err = decodePolicy(v)
		return err
	})
	return p, err
}

// Policies returns every stored override, by stream name.
func (l *Log) Policies() (map[string]Policy, error) {
	out := make(map[string]Policy)
	err := l.view(func(tx *bolt.Tx) error { return readPolicies(tx, out) })
	return out, err
}

// readPolicies adds every stored override to out. A file from before the
// retention bucket existed has none.
func readPolicies(tx *bolt.Tx, out map[string]Policy) error {
	b := tx.Bucket(bucketPolicy)
	if b == nil {
		return nil
	}
	return b.ForEach(func(k, v []byte) error {
		p, err := decodePolicy(v)
		if err != nil {
			return fmt.Errorf("stream %s: %w", k, err)
		}
		out[string(k)] = p
		return nil
	})
}

// Cut selects the oldest events of a stream that a trim removes: every
// event with an id below Before (the zero ID: none by age), then the oldest
// until at most MaxEvents remain and their stored size is at most MaxBytes
// (zero: no such limit). The result is always a prefix of the stream.
type Cut struct {
	Before    ID
	MaxEvents uint64
	MaxBytes  uint64
}

// Trimmed reports one Trim call.
type Trimmed struct {
	Events   int
	Bytes    uint64
	LowWater ID
	// More is set when the call stopped at its key limit with more to cut.
	More bool
}

// Trim removes at most maxKeys of the events of stream that cut selects, in
// one write transaction, and moves the stream's low-water mark to the
// newest removed id. Callers loop while More is set: the bound keeps each
// transaction short, so an append never waits long behind a trim.
func (l *Log) Trim(stream string, cut Cut, maxKeys int) (Trimmed, error) {
	if maxKeys <= 0 {
		return Trimmed{}, fmt.Errorf("trim %s: maxKeys must be positive", stream)
	}
	var res Trimmed
	keys := make([]byte, 0, 16*min(maxKeys, 4096))
	err := l.update(func(tx *bolt.Tx) error {
		res = Trimmed{}
		keys = keys[:0]
		name := []byte(stream)
		st := tx.Bucket(bucketStreams)
		c := decodeCounters(st.Get(name))
		b := tx.Bucket(bucketEvents).Bucket(name)
		if b == nil {
			return nil
		}
		count, size := c.Count, c.Bytes
		cur := b.Cursor()
		for k, v := cur.First(); k != nil; k, v = cur.Next() {
			over := bytes.Compare(k, cut.Before[:]) < 0 ||
				cut.MaxEvents > 0 && count > cut.MaxEvents ||
				cut.MaxBytes > 0 && size > cut.MaxBytes
			if !over {
				break
			}
			if res.Events == maxKeys {
				res.More = true
				break
			}
			// Keys alias pages that the deletes below rewrite: copy them.
			keys = append(keys, k...)
			res.Events++
			res.Bytes += uint64(len(v))
			count -= min(count, 1)
			size -= min(size, uint64(len(v)))
		}
		if res.Events == 0 {
			return nil
		}
		for i := 0; i < len(keys); i += len(ID{}) {
			if err := b.Delete(keys[i : i+len(ID{})]); err != nil {
				return err
			}
		}
		c.Count, c.Bytes = count, size
		c.LowWater = ID(keys[len(keys)-len(ID{}):])
		res.LowWater = c.LowWater
		return st.Put(name, c.encode())
	})
	if err != nil {
		return Trimmed{}, fmt.Errorf("trim %s: %w", stream, err)
	}
	return res, nil
}
