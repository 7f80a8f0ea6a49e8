package client

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

// TestParseRetryAfter: both forms RFC 9110 allows, and what is not one of
// them, waits nothing.
func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		value string
		want  time.Duration
	}{
		{"", 0},
		{"3", 3 * time.Second},
		{" 3 ", 3 * time.Second},
		{"0", 0},
		{"-5", 0},
		{"1.5", 0},
		{"soon", 0},
		{"999999999999", 24 * time.Hour},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"Wednesday, 25-Nov-26 12:00:30 GMT", 30 * time.Second}, // RFC 850, which HTTP dates may still be
	} {
		if got := parseRetryAfter(tc.value, now); got != tc.want {
			t.Errorf("Retry-After %q: %v, want %v", tc.value, got, tc.want)
		}
	}
}

// TestPause: the pause is the floor the server asked for plus a random
// part of a spread that doubles from the minimum with each failure, up to
// the maximum.
func TestPause(t *testing.T) {
	c := &Client{minBackoff: 10 * time.Millisecond, maxBackoff: 80 * time.Millisecond}
	for _, tc := range []struct {
		floor    time.Duration
		failures int
		spread   time.Duration
	}{
		{0, 1, 10 * time.Millisecond},
		{0, 2, 20 * time.Millisecond},
		{0, 4, 80 * time.Millisecond},
		{0, 5, 80 * time.Millisecond},
		{0, 1000, 80 * time.Millisecond},
		{time.Second, 1, 10 * time.Millisecond},
	} {
		var lo, hi time.Duration = time.Hour, 0
		for range 2000 {
			d := c.pause(tc.floor, tc.failures)
			lo, hi = min(lo, d), max(hi, d)
		}
		if lo < tc.floor || hi >= tc.floor+tc.spread || hi-lo < tc.spread/2 {
			t.Errorf("floor %v, failure %d: pauses from %v to %v, want spread over [%v, %v)", tc.floor, tc.failures, lo, hi, tc.floor, tc.floor+tc.spread)
		}
	}
}

// TestRetryable: what a later attempt may change is retried; a refusal,
// an answer that is not sselog's, and a certificate are not.
func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&Error{Status: 503}, true},
		{&Error{Status: 500}, true},
		{&Error{Status: 502}, true},
		{&Error{Status: 504}, true},
		{&Error{Status: 429}, true},
		{&Error{Status: 408}, true},
		{&Error{Status: 400}, false},
		{&Error{Status: 422}, false},
		{&Error{Status: 501}, false},
		{fmt.Errorf("wrapped: %w", &Error{Status: 503}), true},
		{io.ErrUnexpectedEOF, true},
		{errors.New("connection reset by peer"), true},
		{fmt.Errorf("%w: not JSON", ErrProtocol), false},
	} {
		if got := retryable(tc.err); got != tc.want {
			t.Errorf("retryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestBefore: the id just below an id, across a borrow.
func TestBefore(t *testing.T) {
	for _, tc := range []struct{ id, want string }{
		{"01ARZ3NDEKTSV4RRFFQ69G5FAV", "01ARZ3NDEKTSV4RRFFQ69G5FAT"},
		{"01ARZ3NDEK0000000000000000", "01ARZ3NDEJZZZZZZZZZZZZZZZZ"},
	} {
		if got, err := before(tc.id); err != nil || got != tc.want {
			t.Errorf("before(%s) = %s, %v; want %s", tc.id, got, err, tc.want)
		}
	}
}
