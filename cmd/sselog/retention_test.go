package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/sselog/sselog/internal/testkit"
)

type streamView struct {
	Count     uint64 `json:"count"`
	FirstID   string `json:"first_id"`
	LowWater  string `json:"low_water"`
	Retention struct {
		Effective struct {
			MaxAge    string `json:"max_age"`
			MaxEvents uint64 `json:"max_events"`
			MaxBytes  uint64 `json:"max_bytes"`
		} `json:"effective"`
	} `json:"retention"`
}

func getStream(t *testing.T, base, name string) streamView {
	t.Helper()
	resp, err := httpClient.Get(base + "/v1/streams/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v streamView
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET stream %s: status %d", name, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestServeRetention runs the server's retention worker from its flags:
// it trims to the configured limit, and a client resuming from a trimmed
// position is told with a reset, before and after a restart.
func TestServeRetention(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "x.db")
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", db, "--retain-events", "5", "--retain-bytes", "1MiB", "--retain-age", "0", "--retain-interval", "20ms")
	data := make([]string, 10)
	for i := range data {
		data[i] = fmt.Sprint(i)
	}
	ids := publishBatch(t, srv.eventsURL("s"), data...)

	var v streamView
	testkit.WaitFor(t, "the stream to be trimmed to 5 events", func() bool {
		v = getStream(t, srv.URL, "s")
		return v.Count == 5
	})
	if v.FirstID != ids[5] || v.LowWater != ids[4] {
		t.Fatalf("after trim %+v; want first %s, low water %s", v, ids[5], ids[4])
	}
	eff := v.Retention.Effective
	if eff.MaxAge != "0s" || eff.MaxEvents != 5 || eff.MaxBytes != 1<<20 {
		t.Fatalf("effective retention %+v, want the flags' 0s, 5, 1MiB", eff)
	}

	want := []sseEvent{{ID: ids[4], Type: "reset", Data: fmt.Sprintf(`{"reason":"trimmed","oldest_id":"%s"}`, ids[5])}}
	for i := 5; i < 10; i++ {
		want = append(want, sseEvent{ID: ids[i], Data: data[i]})
	}
	sub := subscribe(t, srv.eventsURL("s"), ids[1])
	if d := diffEvents(sub.waitFor(t, len(want)), want); d != "" {
		t.Fatalf("resume below the low-water mark: %s", d)
	}
	srv.stop(t)

	// No limits now: nothing more is trimmed, and the mark is remembered.
	srv = startServer(t, "--addr", "127.0.0.1:0", "--db", db, "--retain-age", "0")
	sub = subscribe(t, srv.eventsURL("s"), ids[0])
	if d := diffEvents(sub.waitFor(t, len(want)), want); d != "" {
		t.Fatalf("after restart: %s", d)
	}
	sub = subscribe(t, srv.eventsURL("s"), ids[4])
	if d := diffEvents(sub.waitFor(t, 5), want[1:]); d != "" {
		t.Fatalf("resume from the reset's id: %s", d)
	}
}
