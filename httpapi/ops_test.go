package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// retentionDoc is a retention answer, kept raw to be compared with sameJSON.
type retentionDoc struct {
	Override  json.RawMessage `json:"override"`
	Effective json.RawMessage `json:"effective"`
}

// streamFields are what GET /v1/streams/{stream} says besides retention.
type streamFields struct {
	Name     string   `json:"name"`
	Count    uint64   `json:"count"`
	Bytes    uint64   `json:"bytes"`
	FirstID  store.ID `json:"first_id"`
	LastID   store.ID `json:"last_id"`
	LowWater store.ID `json:"low_water"`
}

// streamDoc is GET /v1/streams/{stream}.
type streamDoc struct {
	streamFields
	Retention   retentionDoc `json:"retention"`
	Idempotency struct {
		Window string `json:"window"`
	} `json:"idempotency"`
}

// mustDo sends a request that must be answered with want; error answers
// must have the JSON error shape.
func (s *testServer) mustDo(t *testing.T, method, path, contentType, body string, want int) []byte {
	t.Helper()
	status, ct, b, err := s.do(method, path, contentType, body, nil)
	if err != nil {
		t.Fatal(err)
	}
	if status != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, status, want, b)
	}
	if status >= 400 {
		assertJSONError(t, ct, b)
	} else if ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q", method, path, ct)
	}
	return b
}

func (s *testServer) retention(t *testing.T, name string) []byte {
	t.Helper()
	return s.mustDo(t, http.MethodGet, "/v1/streams/"+name+"/retention", "", "", http.StatusOK)
}

// TestGetStream checks what GET /v1/streams/{stream} says of streams
// published, trimmed, overridden, deleted and never published.
func TestGetStream(t *testing.T) {
	defaults := store.Limits{MaxAge: 7 * 24 * time.Hour, MaxEvents: 500}
	defaultsJSON := `{"max_age":"168h0m0s","max_events":500,"max_bytes":0}`
	s := newServer(t, httpapi.Options{Retention: defaults}, stream.Options{})
	a := publishN(t, s, "a", 3)
	b := publishN(t, s, "b", 10)
	var untrimmed streamDoc
	s.getJSON(t, "/v1/streams/b", &untrimmed)
	low := trim(t, s.log, "b", store.Cut{MaxEvents: 4}, 3)
	s.mustDo(t, http.MethodPut, "/v1/streams/b/retention", "application/json", `{"max_age":"24h","max_bytes":2048}`, http.StatusOK)
	s.mustDo(t, http.MethodPut, "/v1/streams/policy-only/retention", "application/json", `{"max_events":1}`, http.StatusOK)
	publishN(t, s, "gone", 2)
	s.mustDo(t, http.MethodDelete, "/v1/streams/gone", "", "", http.StatusOK)

	if untrimmed.Count != 10 || untrimmed.Bytes == 0 || untrimmed.Bytes%10 != 0 {
		t.Fatalf("before the trim: %+v, want 10 events of equal size", untrimmed)
	}
	tests := []struct {
		name   string
		stream string
		status int
		want   streamFields // compared when status is 200
		// Retention, as JSON.
		override, effective string
	}{
		{name: "published", stream: "a", status: 200,
			want:     streamFields{Name: "a", Count: 3, Bytes: untrimmed.Bytes / 10 * 3, FirstID: a[0], LastID: a[2]},
			override: `{}`, effective: defaultsJSON},
		{name: "trimmed, with override", stream: "b", status: 200,
			want:     streamFields{Name: "b", Count: 4, Bytes: untrimmed.Bytes / 10 * 4, FirstID: b[6], LastID: b[9], LowWater: low},
			override: `{"max_age":"24h0m0s","max_bytes":2048}`, effective: `{"max_age":"24h0m0s","max_events":500,"max_bytes":2048}`},
		{name: "never published", stream: "never", status: 404},
		{name: "override but no events", stream: "policy-only", status: 404},
		{name: "deleted", stream: "gone", status: 404},
		{name: "invalid name", stream: "a~b", status: 400},
		{name: "dot name", stream: ".a", status: 400},
		{name: "name too long", stream: strings.Repeat("n", store.MaxStreamLen+1), status: 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := s.mustDo(t, http.MethodGet, "/v1/streams/"+tc.stream, "", "", tc.status)
			if tc.status != http.StatusOK {
				return
			}
			var got streamDoc
			if err := decodeStrict(body, &got); err != nil {
				t.Fatalf("%v in %s", err, body)
			}
			if !sameJSON(got.Retention.Override, tc.override) || !sameJSON(got.Retention.Effective, tc.effective) {
				t.Fatalf("retention %s, want override %s, effective %s", body, tc.override, tc.effective)
			}
			if got.streamFields != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			if got.Idempotency.Window != "24h0m0s" {
				t.Fatalf("idempotency window %q, want the default 24h0m0s", got.Idempotency.Window)
			}
		})
	}
}

// TestDeleteStream follows a stream through its deletion: live subscribers
// are told and let go, clients resuming from before are told again, a
// client resuming from the reset waits, and publishing recreates the
// stream with new, larger ids and no trace of the old override.
func TestDeleteStream(t *testing.T) {
	s := newServer(t, httpapi.Options{Heartbeat: time.Hour, Retention: store.Limits{MaxEvents: 100}}, stream.Options{})
	old := publishN(t, s, "d", 5)
	s.mustPublish(t, "other", `{"data":"other"}`)
	s.mustDo(t, http.MethodPut, "/v1/streams/d/retention", "application/json", `{"max_events":3}`, http.StatusOK)

	live := s.dial(t, "/v1/streams/d/events", "")
	replayed := s.dial(t, "/v1/streams/d/events", zeroID)
	bystander := s.dial(t, "/v1/streams/other/events", s.log.LastID().String())
	if _, err := live.Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := bystander.Next(); err != nil {
		t.Fatal(err)
	}
	readEvents(t, replayed, len(old))
	waitFollowing(t, s, 2)

	body := s.mustDo(t, http.MethodDelete, "/v1/streams/d", "", "", http.StatusOK)
	var answer struct {
		Deleted  string   `json:"deleted"`
		LowWater store.ID `json:"low_water"`
	}
	if err := decodeStrict(body, &answer); err != nil || answer.Deleted != "d" || answer.LowWater != old[4] {
		t.Fatalf("DELETE answered %s (%v), want deleted d, low_water %s", body, err, old[4])
	}
	deleted := map[string]string{"reason": "deleted"}
	var resetID store.ID
	for _, c := range []*testkit.SSEReader{live, replayed} {
		resetID = readReset(t, c, old[4], false, deleted)
		expectEnd(t, c)
	}
	// Other streams go on.
	expectFrom(t, s, bystander, "other", s.log.LastID())

	t.Run("gone", func(t *testing.T) {
		s.mustDo(t, http.MethodGet, "/v1/streams/d", "", "", http.StatusNotFound)
		s.mustDo(t, http.MethodDelete, "/v1/streams/d", "", "", http.StatusNotFound)
		var list struct {
			Streams []streamFields `json:"streams"`
		}
		s.getJSON(t, "/v1/streams", &list)
		if len(list.Streams) != 1 || list.Streams[0].Name != "other" {
			t.Fatalf("streams %+v, want only other", list.Streams)
		}
		var page historyPage
		s.getJSON(t, "/v1/streams/d/history", &page)
		if page.Events == nil || len(page.Events) != 0 {
			t.Fatalf("history of a deleted stream: %+v, want no events", page.Events)
		}
		if got := s.retention(t, "d"); !sameJSON(got, `{"override":{},"effective":{"max_age":"0s","max_events":100,"max_bytes":0}}`) {
			t.Fatalf("retention of a deleted stream: %s, want no override", got)
		}
	})

	t.Run("resume from before", func(t *testing.T) {
		for _, tc := range []struct{ name, query, header string }{
			{"zero id", "", zeroID},
			{"oldest id", "", old[0].String()},
			{"just below the last id", "", old[3].String()},
			{"in query", "?last_event_id=" + old[1].String(), ""},
		} {
			c := s.dial(t, "/v1/streams/d/events"+tc.query, tc.header)
			readReset(t, c, old[4], false, deleted)
			expectEnd(t, c)
		}
		waitFollowing(t, s, 1)
	})

	// Clients that resume from the reset wait for the stream to come back,
	// and then get exactly its new events.
	waiters := []*testkit.SSEReader{
		s.dial(t, "/v1/streams/d/events", resetID.String()),
		s.dial(t, "/v1/streams/d/events", old[4].String()),
	}
	for _, c := range waiters {
		if _, err := c.Next(); err != nil {
			t.Fatal(err)
		}
	}
	waitFollowing(t, s, 2)
	lastBefore := s.log.LastID()
	fresh := s.mustPublish(t, "d", `[{"data":"new1"},{"type":"t","data":"new2"}]`)
	if fresh[0].Compare(lastBefore) <= 0 {
		t.Fatalf("recreated stream's id %s is not above the old ids (up to %s)", fresh[0], lastBefore)
	}
	want := []store.Event{{ID: fresh[0], Data: []byte(`"new1"`)}, {ID: fresh[1], Type: "t", Data: []byte(`"new2"`)}}
	for _, c := range waiters {
		if err := testkit.DiffEvents(readEvents(t, c, 2), want); err != nil {
			t.Fatal(err)
		}
	}
	reconnected := s.dial(t, "/v1/streams/d/events", resetID.String())
	if err := testkit.DiffEvents(readEvents(t, reconnected, 2), want); err != nil {
		t.Fatal(err)
	}

	var info streamDoc
	s.getJSON(t, "/v1/streams/d", &info)
	if info.Count != 2 || info.FirstID != fresh[0] || info.LastID != fresh[1] {
		t.Fatalf("recreated stream: %+v, want 2 events from %s", info, fresh[0])
	}
	if !sameJSON(info.Retention.Override, `{}`) {
		t.Fatalf("recreated stream has override %s; the delete should have removed it", info.Retention.Override)
	}
}

// TestRetention sets, reads and removes a stream's override: each answer
// shows the override as stored and the defaults with its fields replacing
// them.
func TestRetention(t *testing.T) {
	defaults := store.Limits{MaxAge: 7 * 24 * time.Hour, MaxEvents: 500, MaxBytes: 1 << 20}
	defaultsJSON := `{"max_age":"168h0m0s","max_events":500,"max_bytes":1048576}`
	s := newServer(t, httpapi.Options{Retention: defaults}, stream.Options{})
	s.mustPublish(t, "s", `{"data":1}`)
	tests := []struct {
		name        string
		stream      string // s when empty
		contentType string // application/json when empty
		body        string
		override    string
		effective   string
	}{
		{name: "every field", body: `{"max_age":"24h","max_events":1000,"max_bytes":1048576}`,
			override: `{"max_age":"24h0m0s","max_events":1000,"max_bytes":1048576}`, effective: `{"max_age":"24h0m0s","max_events":1000,"max_bytes":1048576}`},
		{name: "one field replaces all", body: `{"max_events":10}`,
			override: `{"max_events":10}`, effective: `{"max_age":"168h0m0s","max_events":10,"max_bytes":1048576}`},
		{name: "zero is no limit", body: `{"max_age":"0s","max_events":0,"max_bytes":0}`,
			override: `{"max_age":"0s","max_events":0,"max_bytes":0}`, effective: `{"max_age":"0s","max_events":0,"max_bytes":0}`},
		{name: "empty object", body: `{}`, override: `{}`, effective: defaultsJSON},
		{name: "age in minutes", body: ` {"max_age": "90m"} `,
			override: `{"max_age":"1h30m0s"}`, effective: `{"max_age":"1h30m0s","max_events":500,"max_bytes":1048576}`},
		{name: "largest count", body: `{"max_bytes":18446744073709551615}`,
			override: `{"max_bytes":18446744073709551615}`, effective: `{"max_age":"168h0m0s","max_events":500,"max_bytes":18446744073709551615}`},
		{name: "charset", contentType: "application/json; charset=utf-8", body: `{"max_bytes":4096}`,
			override: `{"max_bytes":4096}`, effective: `{"max_age":"168h0m0s","max_events":500,"max_bytes":4096}`},
		{name: "stream not yet published", stream: "later", body: `{"max_events":5}`,
			override: `{"max_events":5}`, effective: `{"max_age":"168h0m0s","max_events":5,"max_bytes":1048576}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name, ct := tc.stream, tc.contentType
			if name == "" {
				name = "s"
			}
			if ct == "" {
				ct = "application/json"
			}
			want := fmt.Sprintf(`{"override":%s,"effective":%s}`, tc.override, tc.effective)
			before := takeSnapshot(t, s)
			put := s.mustDo(t, http.MethodPut, "/v1/streams/"+name+"/retention", ct, tc.body, http.StatusOK)
			if !sameJSON(put, want) {
				t.Fatalf("PUT answered %s, want %s", put, want)
			}
			if got := s.retention(t, name); !sameJSON(got, want) {
				t.Fatalf("GET answered %s, want %s", got, want)
			}
			if after := takeSnapshot(t, s); !reflect.DeepEqual(before, after) {
				t.Fatalf("setting a policy changed the streams: %+v -> %+v", before, after)
			}
			if _, err := s.log.Stream(name); err == nil {
				var info streamDoc
				s.getJSON(t, "/v1/streams/"+name, &info)
				if !sameJSON(info.Retention.Override, tc.override) || !sameJSON(info.Retention.Effective, tc.effective) {
					t.Fatalf("GET stream shows retention %+v, want %s", info.Retention, want)
				}
			}
		})
	}
	t.Run("delete", func(t *testing.T) {
		want := `{"override":{},"effective":` + defaultsJSON + `}`
		for _, name := range []string{"s", "later", "never-set"} {
			// Deleting again, or what was never set, is no error.
			for range 2 {
				if got := s.mustDo(t, http.MethodDelete, "/v1/streams/"+name+"/retention", "", "", http.StatusOK); !sameJSON(got, want) {
					t.Fatalf("DELETE %s answered %s, want %s", name, got, want)
				}
				if got := s.retention(t, name); !sameJSON(got, want) {
					t.Fatalf("GET %s after DELETE: %s, want %s", name, got, want)
				}
			}
		}
	})
}

// TestRetentionBadInput sends retention requests that must be refused with
// a JSON error, and checks that none of them changes the stored policy.
func TestRetentionBadInput(t *testing.T) {
	const maxBody = 256
	s := newServer(t, httpapi.Options{MaxBody: maxBody, Retention: store.Limits{MaxEvents: 9}}, stream.Options{})
	s.mustPublish(t, "s", `{"data":1}`)
	const stored = `{"max_age":"1h","max_events":5}`
	long := strings.Repeat("a", store.MaxStreamLen+1)
	tests := []struct {
		name        string
		method      string // PUT when empty
		path        string // /v1/streams/s/retention when empty
		contentType string // application/json when empty, none when "-"
		body        string
		want        int
	}{
		{name: "unknown field", body: `{"max_events":5,"max_count":1}`, want: 400},
		{name: "negative age", body: `{"max_age":"-1h"}`, want: 400},
		{name: "age not a duration", body: `{"max_age":"soon"}`, want: 400},
		{name: "age without unit", body: `{"max_age":"24"}`, want: 400},
		{name: "empty age", body: `{"max_age":""}`, want: 400},
		{name: "age overflow", body: `{"max_age":"100000000000h"}`, want: 400},
		{name: "age as number", body: `{"max_age":3600}`, want: 400},
		{name: "age invalid utf-8", body: "{\"max_age\":\"\xff\"}", want: 400},
		{name: "negative events", body: `{"max_events":-1}`, want: 400},
		{name: "negative bytes", body: `{"max_bytes":-5}`, want: 400},
		{name: "fractional events", body: `{"max_events":1.5}`, want: 400},
		{name: "events overflow", body: `{"max_events":18446744073709551616}`, want: 400},
		{name: "events as string", body: `{"max_events":"10"}`, want: 400},
		{name: "array", body: `[{"max_events":1}]`, want: 400},
		{name: "empty array", body: `[]`, want: 400},
		{name: "null", body: `null`, want: 400},
		{name: "string", body: `"24h"`, want: 400},
		{name: "number", body: `5`, want: 400},
		{name: "invalid json", body: `{"max_events":`, want: 400},
		{name: "trailing comma", body: `{"max_events":1,}`, want: 400},
		{name: "trailing garbage", body: `{"max_events":1} x`, want: 400},
		{name: "trailing object", body: `{"max_events":1}{}`, want: 400},
		{name: "empty body", body: ``, want: 400},
		{name: "text/plain", contentType: "text/plain", body: `{"max_events":1}`, want: 415},
		{name: "no content type", contentType: "-", body: `{"max_events":1}`, want: 415},
		{name: "form", contentType: "application/x-www-form-urlencoded", body: `{"max_events":1}`, want: 415},
		{name: "body too large", body: `{"max_events":1` + strings.Repeat(" ", 2*maxBody) + `}`, want: 413},
		{name: "invalid name", path: "/v1/streams/a~b/retention", body: `{"max_events":1}`, want: 400},
		{name: "dot name", path: "/v1/streams/.s/retention", body: `{"max_events":1}`, want: 400},
		{name: "name too long", path: "/v1/streams/" + long + "/retention", body: `{"max_events":1}`, want: 400},
		{name: "GET invalid name", method: http.MethodGet, path: "/v1/streams/a~b/retention", want: 400},
		{name: "DELETE invalid name", method: http.MethodDelete, path: "/v1/streams/.s/retention", want: 400},
		{name: "POST", method: http.MethodPost, body: `{"max_events":1}`, want: 405},
		{name: "PATCH", method: http.MethodPatch, body: `{"max_events":1}`, want: 405},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method, path, ct := tc.method, tc.path, tc.contentType
			if method == "" {
				method = http.MethodPut
			}
			if path == "" {
				path = "/v1/streams/s/retention"
			}
			switch ct {
			case "":
				ct = "application/json"
			case "-":
				ct = ""
			}
			// Each case starts from the same stored override.
			s.mustDo(t, http.MethodPut, "/v1/streams/s/retention", "application/json", stored, http.StatusOK)
			before, policies := takeSnapshot(t, s), s.retention(t, "s")
			status, gotCT, body, err := s.do(method, path, ct, tc.body, nil)
			if err != nil {
				t.Fatal(err)
			}
			if status != tc.want {
				t.Errorf("status %d, want %d: %s", status, tc.want, body)
			} else {
				assertJSONError(t, gotCT, body)
			}
			if after := s.retention(t, "s"); !bytes.Equal(after, policies) {
				t.Fatalf("refused request changed the policy: %s -> %s", policies, after)
			}
			all, err := s.log.Policies()
			if err != nil {
				t.Fatal(err)
			}
			if len(all) != 1 {
				t.Fatalf("refused request stored a policy: %v", all)
			}
			if after := takeSnapshot(t, s); !reflect.DeepEqual(before, after) {
				t.Fatalf("refused request changed the log: %+v -> %+v", before, after)
			}
		})
	}
}

// TestStreamOpsRefused sends requests to the operations endpoints that must
// be refused with a JSON error and change nothing.
func TestStreamOpsRefused(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	s.mustPublish(t, "s", `{"data":1}`)
	long := strings.Repeat("a", store.MaxStreamLen+1)
	tests := []struct {
		name, method, path string
		want               int
	}{
		{"GET never published", http.MethodGet, "/v1/streams/never", 404},
		{"DELETE never published", http.MethodDelete, "/v1/streams/never", 404},
		{"GET invalid name", http.MethodGet, "/v1/streams/a~b", 400},
		{"DELETE invalid name", http.MethodDelete, "/v1/streams/a~b", 400},
		{"DELETE dot name", http.MethodDelete, "/v1/streams/.s", 400},
		{"DELETE name too long", http.MethodDelete, "/v1/streams/" + long, 400},
		{"DELETE encoded slash", http.MethodDelete, "/v1/streams/s%2Fx", 404},
		{"PUT stream", http.MethodPut, "/v1/streams/s", 405},
		{"POST stream", http.MethodPost, "/v1/streams/s", 405},
		{"PATCH stream", http.MethodPatch, "/v1/streams/s", 405},
		{"POST backup", http.MethodPost, "/v1/backup", 405},
		{"DELETE backup", http.MethodDelete, "/v1/backup", 405},
		{"DELETE all streams", http.MethodDelete, "/v1/streams", 405},
		{"under retention", http.MethodGet, "/v1/streams/s/retention/x", 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := takeSnapshot(t, s)
			s.mustDo(t, tc.method, tc.path, "application/json", "", tc.want)
			if after := takeSnapshot(t, s); !reflect.DeepEqual(before, after) {
				t.Fatalf("refused request changed the log: %+v -> %+v", before, after)
			}
		})
	}
}

// getBackup downloads a backup into a file and checks the response.
func getBackup(t *testing.T, s *testServer) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Wait)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/v1/backup", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("backup: status %d: %.200s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/octet-stream" {
		t.Fatalf("backup Content-Type %q", ct)
	}
	if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(body)) || resp.ContentLength != int64(len(body)) {
		t.Fatalf("backup of %d bytes announced Content-Length %q", len(body), cl)
	}
	path := filepath.Join(t.TempDir(), "backup.db")
	if err := os.WriteFile(path, body, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestBackup checks that a backup is a database holding every event,
// stream, low-water mark, tombstone and override: a server started on it
// tells resuming clients what the original would.
func TestBackup(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	publishN(t, s, "a", 3)
	b := publishN(t, s, "b", 10)
	low := trim(t, s.log, "b", store.Cut{MaxEvents: 4}, 3)
	gone := publishN(t, s, "gone", 2)
	s.mustDo(t, http.MethodDelete, "/v1/streams/gone", "", "", http.StatusOK)
	s.mustDo(t, http.MethodPut, "/v1/streams/a/retention", "application/json", `{"max_age":"1h"}`, http.StatusOK)

	path := getBackup(t, s)
	c, _ := newServerAt(t, path, httpapi.Options{}, stream.Options{})
	if got, want := c.log.LastID(), s.log.LastID(); got != want {
		t.Fatalf("backup LastID %s, want %s", got, want)
	}
	if got, want := takeSnapshot(t, c), takeSnapshot(t, s); !reflect.DeepEqual(got, want) {
		t.Fatalf("backup streams %+v, want %+v", got, want)
	}
	for _, name := range []string{"a", "b"} {
		got, want := c.readAll(t, name), s.readAll(t, name)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("stream %s in the backup: %v, want %v", name, got, want)
		}
	}
	if got, want := c.retention(t, "a"), s.retention(t, "a"); !bytes.Equal(got, want) {
		t.Fatalf("retention in the backup: %s, want %s", got, want)
	}
	r := c.dial(t, "/v1/streams/b/events", b[0].String())
	readReset(t, r, low, true, trimmedReset(b[6]))
	expectFrom(t, c, r, "b", low)
	g := c.dial(t, "/v1/streams/gone/events", gone[0].String())
	readReset(t, g, gone[1], true, map[string]string{"reason": "deleted"})
	expectEnd(t, g)
}

// TestBackupUnderLoad takes a backup while publishers keep publishing:
// every event acknowledged before the request is in it, and each stream
// in it is a prefix of the stream as it ends up, as a consistent snapshot
// must be.
func TestBackupUnderLoad(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	const publishers = 4
	var (
		mu    sync.Mutex
		acked [publishers][]store.ID
	)
	stop := make(chan struct{})
	started := make(chan struct{}, publishers)
	errs := make(chan error, publishers)
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			name := fmt.Sprintf("load-%d", p)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ids, err := s.publish(name, fmt.Sprintf(`[{"data":%d},{"type":"x","data":"%s"}]`, i, strings.Repeat("x", 512)))
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				acked[p] = append(acked[p], ids...)
				mu.Unlock()
				if i == 10 {
					started <- struct{}{}
				}
			}
		})
	}
	// halt stops the publishers and waits for them, once.
	halt := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	defer halt()
	timeout := time.After(testkit.Wait)
	for range publishers {
		select {
		case <-started:
		case err := <-errs:
			t.Fatal(err)
		case <-timeout:
			t.Fatal("publishers did not start")
		}
	}
	mu.Lock()
	var before [publishers][]store.ID
	for p := range acked {
		before[p] = slices.Clone(acked[p])
	}
	mu.Unlock()

	path := getBackup(t, s)
	halt()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	backup := testkit.OpenAt(t, path, store.Options{})
	inBackup, extra := 0, 0
	for p := range publishers {
		name := fmt.Sprintf("load-%d", p)
		got, err := backup.ReadAfter(name, store.ID{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		final := s.readAll(t, name)
		if len(got) > len(final) || !reflect.DeepEqual(got, final[:len(got)]) {
			t.Fatalf("%s: the backup's %d events are not a prefix of the stream's %d", name, len(got), len(final))
		}
		if len(got) < len(before[p]) {
			t.Fatalf("%s: %d events acknowledged before the backup, %d in it", name, len(before[p]), len(got))
		}
		for i, id := range before[p] {
			if got[i].ID != id {
				t.Fatalf("%s: event %d in the backup is %s, acknowledged %s", name, i, got[i].ID, id)
			}
		}
		inBackup += len(got)
		extra += len(got) - len(before[p])
	}
	t.Logf("backup holds %d events, %d acknowledged after the request began", inBackup, extra)
}
