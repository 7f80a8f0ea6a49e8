package main

import (
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// TestIdempotencyWindowFlag: the window set by environment reaches the
// log and is stated by GET /v1/streams/{stream}, and a keyed repeat is
// answered from the first request.
func TestIdempotencyWindowFlag(t *testing.T) {
	t.Setenv("SSELOG_IDEMPOTENCY_WINDOW", "90m")
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "e.db"))
	send := func(body string) (int, string, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, srv.eventsURL("orders"), strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "order-42")
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Idempotent-Replayed"), string(b)
	}
	status, replayed, first := send(`{"data":{"total":3}}`)
	if status != http.StatusCreated || replayed != "" {
		t.Fatalf("first: %d %q %s", status, replayed, first)
	}
	status, replayed, again := send(`{ "data" : { "total" : 3 } }`)
	if status != http.StatusCreated || replayed != "true" || again != first {
		t.Fatalf("repeat: %d %q %s, want 201 true %s", status, replayed, again, first)
	}
	if status, _, body := send(`{"data":{"total":4}}`); status != http.StatusUnprocessableEntity {
		t.Fatalf("another body: %d %s, want 422", status, body)
	}
	resp, err := httpClient.Get(srv.URL + "/v1/streams/orders")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var info struct {
		Count       int `json:"count"`
		Idempotency struct {
			Window string `json:"window"`
		} `json:"idempotency"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		t.Fatal(err)
	}
	if info.Count != 1 || info.Idempotency.Window != "1h30m0s" {
		t.Fatalf("stream: %+v, want 1 event and window 1h30m0s", info)
	}
}
