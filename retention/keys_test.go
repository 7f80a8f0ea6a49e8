package retention_test

import (
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/retention"
	"github.com/sselog/sselog/store"
)

// TestExpireKeys: a pass removes the idempotency keys whose window has
// ended, in chunks of Options.Chunk, and leaves the others; a removed key
// then names a new request.
func TestExpireKeys(t *testing.T) {
	clk := newClock(base)
	l := testkit.OpenAt(t, filepath.Join(t.TempDir(), "log.db"), store.Options{Now: clk.Now, IdempotencyWindow: time.Hour})
	once := func(name string) bool {
		t.Helper()
		_, replayed, err := l.AppendOnce(t.Context(), "s", store.Key{Name: name, Digest: sha256.Sum256([]byte(name))}, []store.Event{event(0)})
		if err != nil {
			t.Fatal(err)
		}
		return replayed
	}
	for i := range 250 {
		once(fmt.Sprint("old-", i))
	}
	clk.Advance(30 * time.Minute)
	for i := range 10 {
		once(fmt.Sprint("new-", i))
	}
	w := retention.New(l, retention.Options{Now: clk.Now, Chunk: 100})
	if st := mustRunOnce(t, w); st.KeysExpired != 0 || st.Transactions != 0 {
		t.Fatalf("pass inside every window: %+v, want nothing expired and no transaction", st)
	}
	clk.Advance(30 * time.Minute) // the old keys' window ends now
	st := mustRunOnce(t, w)
	if st.KeysExpired != 250 || st.Transactions != 3 {
		t.Fatalf("pass: %+v, want 250 keys expired in 3 transactions of at most 100", st)
	}
	if !once("new-3") {
		t.Fatal("a key inside its window was expired")
	}
	if once("old-7") {
		t.Fatal("an expired key still replays")
	}
	if st := mustRunOnce(t, w); st.KeysExpired != 0 {
		t.Fatalf("second pass: %+v, want nothing left to expire", st)
	}
}
