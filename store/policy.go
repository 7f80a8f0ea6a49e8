package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Policy is a stream's retention override, kept in the database. A nil
// field inherits the server's default; a zero value means no limit.
type Policy struct {
	MaxAge    *time.Duration
	MaxEvents *uint64
	MaxBytes  *uint64
}

// Limits is the retention that applies to a stream: events older than
// MaxAge are removed, then the oldest until at most MaxEvents remain and
// they hold at most MaxBytes of stored data. A zero field is no limit. A
// server has one Limits as its defaults; a stream's Policy overrides them
// field by field (Apply), and Cut turns the result into what Trim removes.
type Limits struct {
	MaxAge    time.Duration
	MaxEvents uint64
	MaxBytes  uint64
}

// Apply returns l with the fields p sets replaced: the limits of a stream
// whose override is p, when the server's defaults are l.
func (l Limits) Apply(p Policy) Limits {
	if p.MaxAge != nil {
		l.MaxAge = *p.MaxAge
	}
	if p.MaxEvents != nil {
		l.MaxEvents = *p.MaxEvents
	}
	if p.MaxBytes != nil {
		l.MaxBytes = *p.MaxBytes
	}
	return l
}

// Cut is what a trim at now removes under l. An age limit of zero or less
// is none.
func (l Limits) Cut(now time.Time) Cut {
	c := Cut{MaxEvents: l.MaxEvents, MaxBytes: l.MaxBytes}
	if l.MaxAge > 0 {
		c.Before = MinIDAt(now.Add(-l.MaxAge))
	}
	return c
}

// MarshalJSON writes every field, the age as a Go duration ("168h0m0s"), 0
// meaning no limit.
func (l Limits) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		MaxAge    string `json:"max_age"`
		MaxEvents uint64 `json:"max_events"`
		MaxBytes  uint64 `json:"max_bytes"`
	}{l.MaxAge.String(), l.MaxEvents, l.MaxBytes})
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
	if l.replica != "" {
		return ErrReplica
	}
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
	if l.replica != "" {
		return ErrReplica
	}
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
