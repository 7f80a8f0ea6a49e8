package retention

import (
	"encoding/json"
	"time"

	"github.com/sselog/sselog/store"
)

// Limits is the retention that applies to a stream: events older than
// MaxAge are removed, then the oldest until at most MaxEvents remain and
// they hold at most MaxBytes of stored data. A zero field is no limit.
type Limits struct {
	MaxAge    time.Duration
	MaxEvents uint64
	MaxBytes  uint64
}

// Apply returns l with the fields p sets replaced: the limits of a stream
// whose override is p, when the server's defaults are l.
func (l Limits) Apply(p store.Policy) Limits {
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

// Cut is what a trim at now removes under l.
func (l Limits) Cut(now time.Time) store.Cut {
	c := store.Cut{MaxEvents: l.MaxEvents, MaxBytes: l.MaxBytes}
	if l.MaxAge > 0 {
		c.Before = store.MinIDAt(now.Add(-l.MaxAge))
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
