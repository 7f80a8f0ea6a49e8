package stream_test

import (
	"strings"
	"testing"
	"time"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// TestMergedDeletionAfterFullTrim: a stream whose events were all trimmed,
// then deleted. The deletion keeps the mark the trim left; a subscriber
// told the trim (or one that started by since/last, told nothing of it)
// must still be told the deletion.
func TestMergedDeletionAfterFullTrim(t *testing.T) {
	for _, start := range []stream.MergedStart{stream.MergedResume, stream.MergedFrom} {
		l, h := newHub(t, stream.Options{})
		publish(t, l, "a", 3)
		b := publish(t, l, "b", 1)
		if _, err := l.Trim("a", store.Cut{Before: store.MinIDAt(time.Now().Add(time.Hour))}, 100); err != nil {
			t.Fatal(err)
		}
		sel, match := names("a", "b")
		m := subscribeMerged(t, h, stream.MergedOptions{Selection: sel, Match: match, Start: start})
		wire, err := pullMerged(m, b[0], testkit.Wait)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("start %d, before delete: %q", start, wire)
		if _, err := l.DeleteStream(t.Context(), "a"); err != nil {
			t.Fatal(err)
		}
		after := publish(t, l, "b", 1)
		wire, err = pullMerged(m, after[0], testkit.Wait)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(wire), `"reason":"deleted"`) {
			t.Errorf("start %d: deletion of a never told: %q", start, wire)
		}
	}
}
