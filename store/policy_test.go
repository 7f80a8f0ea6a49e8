package store_test

import (
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

func TestLimitsApply(t *testing.T) {
	age, events, zero := 2*time.Hour, uint64(7), uint64(0)
	defaults := store.Limits{MaxAge: time.Hour, MaxEvents: 5, MaxBytes: 100}
	tests := []struct {
		name   string
		policy store.Policy
		want   store.Limits
	}{
		{name: "no override", want: defaults},
		{name: "some fields", policy: store.Policy{MaxAge: &age, MaxEvents: &events}, want: store.Limits{MaxAge: age, MaxEvents: events, MaxBytes: 100}},
		{name: "zero lifts a limit", policy: store.Policy{MaxBytes: &zero}, want: store.Limits{MaxAge: time.Hour, MaxEvents: 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := defaults.Apply(tt.policy); got != tt.want {
				t.Errorf("Apply = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestLimitsCut(t *testing.T) {
	now := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		limits store.Limits
		want   store.Cut
	}{
		{name: "none", want: store.Cut{}},
		{name: "negative age is none", limits: store.Limits{MaxAge: -time.Hour}, want: store.Cut{}},
		{
			name:   "all",
			limits: store.Limits{MaxAge: time.Hour, MaxEvents: 5, MaxBytes: 100},
			want:   store.Cut{Before: store.MinIDAt(now.Add(-time.Hour)), MaxEvents: 5, MaxBytes: 100},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.limits.Cut(now); got != tt.want {
				t.Errorf("Cut = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestLimitsJSON(t *testing.T) {
	b, err := json.Marshal(store.Limits{MaxAge: 168 * time.Hour, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"max_age":"168h0m0s","max_events":0,"max_bytes":1048576}`
	if string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
}

// TestCutSelects holds Cut.Selects, which decides from a stream's counters
// alone, to what Trim removes: a cut selects something exactly when a trim
// under it removes an event.
func TestCutSelects(t *testing.T) {
	// fill makes a log whose stream "s" has ten events a minute apart.
	fill := func(t *testing.T) (*store.Log, []store.ID) {
		clock := newFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		l := testkit.OpenAt(t, filepath.Join(t.TempDir(), "events.db"), store.Options{Now: clock.Now})
		var ids []store.ID
		for i := range 10 {
			clock.Set(time.Date(2026, 1, 1, 0, i, 0, 0, time.UTC))
			ids = append(ids, mustAppend(t, l, "s", makeEvents("", 1, i)...)...)
		}
		return l, ids
	}
	tests := []struct {
		name string
		cut  func(ids []store.ID, size uint64) store.Cut
		want bool
	}{
		{name: "none", cut: func([]store.ID, uint64) store.Cut { return store.Cut{} }},
		{name: "before the first", cut: func(ids []store.ID, _ uint64) store.Cut { return store.Cut{Before: ids[0]} }},
		{name: "before the second", cut: func(ids []store.ID, _ uint64) store.Cut { return store.Cut{Before: ids[1]} }, want: true},
		{name: "events at count", cut: func([]store.ID, uint64) store.Cut { return store.Cut{MaxEvents: 10} }},
		{name: "events below count", cut: func([]store.ID, uint64) store.Cut { return store.Cut{MaxEvents: 9} }, want: true},
		{name: "bytes at size", cut: func(_ []store.ID, size uint64) store.Cut { return store.Cut{MaxBytes: size} }},
		{name: "bytes below size", cut: func(_ []store.ID, size uint64) store.Cut { return store.Cut{MaxBytes: size - 1} }, want: true},
		{name: "one limit of three", cut: func(ids []store.ID, size uint64) store.Cut {
			return store.Cut{Before: ids[0], MaxEvents: 20, MaxBytes: size - 1}
		}, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, ids := fill(t)
			info := mustStream(t, l, "s")
			cut := tt.cut(ids, info.Bytes)
			if got := cut.Selects(info); got != tt.want {
				t.Fatalf("Selects(%+v) = %v, want %v", info, got, tt.want)
			}
			res, err := l.Trim("s", cut, 1)
			if err != nil {
				t.Fatal(err)
			}
			if got := res.Events > 0; got != tt.want {
				t.Fatalf("Trim removed %d events, want removal %v", res.Events, tt.want)
			}
		})
	}
	t.Run("empty stream", func(t *testing.T) {
		l, _ := fill(t)
		trimAll(t, l, "s", store.Cut{MaxEvents: 1}, 100)
		trimAll(t, l, "s", store.Cut{MaxBytes: 1}, 100)
		info := mustStream(t, l, "s")
		cut := store.Cut{Before: store.MinIDAt(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC))}
		if info.Count != 0 || cut.Selects(info) {
			t.Fatalf("Selects(%+v) = true for an empty stream", info)
		}
	})
}
