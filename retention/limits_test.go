package retention_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/sselog/sselog/retention"
	"github.com/sselog/sselog/store"
)

func TestLimitsCut(t *testing.T) {
	now := base
	tests := []struct {
		name   string
		limits retention.Limits
		want   store.Cut
	}{
		{name: "none", want: store.Cut{}},
		{name: "negative age is none", limits: retention.Limits{MaxAge: -time.Hour}, want: store.Cut{}},
		{
			name:   "all",
			limits: retention.Limits{MaxAge: time.Hour, MaxEvents: 5, MaxBytes: 100},
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
	b, err := json.Marshal(retention.Limits{MaxAge: retention.DefaultMaxAge, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"max_age":"168h0m0s","max_events":0,"max_bytes":1048576}`
	if string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
}
