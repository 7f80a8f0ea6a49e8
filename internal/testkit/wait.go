package testkit

import (
	"testing"
	"time"
)

// pollEvery is how often WaitFor looks again; it is a poll interval, not a
// stand-in for the condition.
const pollEvery = time.Millisecond

// WaitFor polls cond until it holds, failing the test if it does not hold
// within Wait. what names the condition in the failure. It is for
// conditions no channel announces (nats-server's checkFor); where one
// does, wait on the channel.
func WaitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(Wait)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", Wait, what)
		}
		time.Sleep(pollEvery)
	}
}
