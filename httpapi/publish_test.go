package httpapi_test

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// snapshot is what a refused request must leave as it was.
type snapshot struct {
	last    store.ID
	streams []store.StreamInfo
}

func takeSnapshot(t *testing.T, s *testServer) snapshot {
	t.Helper()
	streams, err := s.log.Streams()
	if err != nil {
		t.Fatal(err)
	}
	return snapshot{s.log.LastID(), streams}
}

// assertJSONError checks the one error shape every refusal has.
func assertJSONError(t *testing.T, contentType string, body []byte) {
	t.Helper()
	var e map[string]any
	if err := json.Unmarshal(body, &e); err != nil || contentType != "application/json" {
		t.Fatalf("error body %q (Content-Type %q) is not JSON: %v", body, contentType, err)
	}
	msg, ok := e["error"].(string)
	if len(e) != 1 || !ok || msg == "" {
		t.Fatalf(`error body %s, want {"error": "..."}`, body)
	}
}

func TestBadInput(t *testing.T) {
	const maxBody = 1024
	s := newServer(t, httpapi.Options{MaxBody: maxBody}, stream.Options{})
	s.mustPublish(t, "s", `{"data":0}`)
	valid := `{"data":1}`
	events := "/v1/streams/s/events"
	long := strings.Repeat("a", store.MaxStreamLen+1)

	tests := []struct {
		name        string
		method      string // POST when empty
		path        string // events when empty
		contentType string // application/json when empty, none when "-"
		header      http.Header
		body        string
		want        int
		wantAlso    []int // other acceptable statuses
	}{
		{name: "malformed json", body: `{"data":`, want: 400},
		{name: "malformed json comma", body: `{"data":1,}`, want: 400},
		{name: "malformed data value", body: `{"data":tru}`, want: 400},
		{name: "trailing object", body: `{"data":1}{"data":2}`, want: 400},
		{name: "trailing garbage", body: `{"data":1} x`, want: 400},
		{name: "trailing after array", body: `[{"data":1}] [`, want: 400},
		{name: "trailing bracket", body: `{"data":1}]`, want: 400},
		{name: "number", body: `42`, want: 400},
		{name: "string", body: `"event"`, want: 400},
		{name: "null", body: `null`, want: 400},
		{name: "bool", body: `true`, want: 400},
		{name: "array of numbers", body: `[1,2]`, want: 400},
		{name: "array of strings", body: `["a"]`, want: 400},
		{name: "array of arrays", body: `[[{"data":1}]]`, want: 400},
		{name: "array with null", body: `[{"data":1},null]`, want: 400},
		{name: "empty body", body: ``, want: 400},
		{name: "blank body", body: " \r\n\t", want: 400},
		{name: "empty batch", body: `[]`, want: 400},
		{name: "batch with bad type", body: `[{"data":1},{"type":"a\nb","data":2}]`, want: 400},
		{name: "batch missing data", body: `[{"data":1},{"type":"x"}]`, want: 400},
		{name: "batch unknown field", body: `[{"data":1},{"data":2,"retry":5}]`, want: 400},
		{name: "unknown field", body: `{"data":1,"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV"}`, want: 400},
		{name: "missing data", body: `{"type":"x"}`, want: 400},
		{name: "empty object", body: `{}`, want: 400},
		{name: "type not a string", body: `{"type":1,"data":1}`, want: 400},
		{name: "type too long", body: `{"type":"` + strings.Repeat("t", store.MaxTypeLen+1) + `","data":1}`, want: 400},
		{name: "invalid utf-8 in data", body: "{\"data\":\"\xff\"}", want: 400},
		{name: "invalid utf-8 in type", body: "{\"type\":\"\xc3\",\"data\":1}", want: 400},
		{name: "invalid utf-8 outside strings", body: "{\"data\":1}\xff", want: 400},
		{name: "body over MaxBody", body: `{"data":"` + strings.Repeat("x", 2*maxBody) + `"}`, want: 413},
		{name: "batch over MaxBody", body: "[" + strings.Repeat(`{"data":1},`, maxBody/10) + `{"data":1}]`, want: 413},
		{name: "text/plain", contentType: "text/plain", body: valid, want: 415},
		{name: "form", contentType: "application/x-www-form-urlencoded", body: valid, want: 415},
		{name: "no content type", contentType: "-", body: valid, want: 415},
		{name: "json-like content type", contentType: "application/jsonx", body: valid, want: 415},
		{name: "bad content type syntax", contentType: "application/json; charset", body: valid, want: 415},
		{name: "stream too long", path: "/v1/streams/" + long + "/events", body: valid, want: 400},
		{name: "stream starts with dot", path: "/v1/streams/.hidden/events", body: valid, want: 400},
		{name: "stream with space", path: "/v1/streams/a%20b/events", body: valid, want: 400},
		{name: "stream with tilde", path: "/v1/streams/a~b/events", body: valid, want: 400},
		{name: "stream with unicode", path: "/v1/streams/caf%C3%A9/events", body: valid, want: 400},
		{name: "stream with colon", path: "/v1/streams/a:b/events", body: valid, want: 400},
		{name: "stream with NUL", path: "/v1/streams/a%00b/events", body: valid, want: 400},
		{name: "dot-dot path", path: "/v1/streams/../x/events", body: valid, want: 301, wantAlso: []int{400, 404}},
		{name: "encoded dot-dot path", path: "/v1/streams/%2e%2e/events", body: valid, want: 301, wantAlso: []int{400, 404}},
		{name: "encoded slash", path: "/v1/streams/a%2Fb/events", body: valid, want: 404, wantAlso: []int{301, 400}},
		{name: "empty stream segment", path: "/v1/streams//events", body: valid, want: 301, wantAlso: []int{400, 404}},
		{name: "PUT", method: http.MethodPut, body: valid, want: 405},
		{name: "DELETE", method: http.MethodDelete, want: 405},
		{name: "unknown endpoint", path: "/v1/stream/s/events", body: valid, want: 404},

		{name: "subscribe bad stream", method: http.MethodGet, path: "/v1/streams/.x/events", want: 400},
		{name: "subscribe bad Last-Event-ID", method: http.MethodGet, header: http.Header{"Last-Event-Id": {"nope"}}, want: 400},
		{name: "subscribe Last-Event-ID too long", method: http.MethodGet, header: http.Header{"Last-Event-Id": {"01ARZ3NDEKTSV4RRFFQ69G5FAVX"}}, want: 400},
		{name: "subscribe Last-Event-ID overflow", method: http.MethodGet, header: http.Header{"Last-Event-Id": {"80000000000000000000000000"}}, want: 400},
		{name: "subscribe bad last_event_id", method: http.MethodGet, path: events + "?last_event_id=nope", want: 400},
		{name: "subscribe bad header, good query", method: http.MethodGet, path: events + "?last_event_id=01ARZ3NDEKTSV4RRFFQ69G5FAV", header: http.Header{"Last-Event-Id": {"nope"}}, want: 400},
		{name: "history bad stream", method: http.MethodGet, path: "/v1/streams/a~b/history", want: 400},
		{name: "history bad after", method: http.MethodGet, path: "/v1/streams/s/history?after=xyz", want: 400},
		{name: "history limit 0", method: http.MethodGet, path: "/v1/streams/s/history?limit=0", want: 400},
		{name: "history limit -1", method: http.MethodGet, path: "/v1/streams/s/history?limit=-1", want: 400},
		{name: "history limit abc", method: http.MethodGet, path: "/v1/streams/s/history?limit=abc", want: 400},
		{name: "history limit 1.5", method: http.MethodGet, path: "/v1/streams/s/history?limit=1.5", want: 400},
		{name: "history POST", method: http.MethodPost, path: "/v1/streams/s/history", body: valid, want: 405},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method, path, ct := tc.method, tc.path, tc.contentType
			if method == "" {
				method = http.MethodPost
			}
			if path == "" {
				path = events
			}
			switch ct {
			case "":
				ct = "application/json"
			case "-":
				ct = ""
			}
			before := takeSnapshot(t, s)
			status, gotCT, body, err := s.do(method, path, ct, tc.body, tc.header)
			if err != nil {
				t.Fatal(err)
			}
			if status != tc.want && !slices.Contains(tc.wantAlso, status) {
				t.Fatalf("status %d, want %d: %s", status, tc.want, body)
			}
			if status >= 400 {
				assertJSONError(t, gotCT, body)
			}
			if after := takeSnapshot(t, s); !reflect.DeepEqual(before, after) {
				t.Fatalf("refused request changed the log: %+v -> %+v", before, after)
			}
		})
	}
}

// TestTypeInjection checks that no event type can add a line to an SSE
// frame: every type with a control character is refused whole, however it
// is spelt in the JSON, and the types that are allowed arrive intact.
func TestTypeInjection(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	s.mustPublish(t, "s", `{"data":0}`)
	refused := []struct{ name, jsonType string }{
		{"escaped LF", `"\n"`},
		{"escaped CR", `"\r"`},
		{"escaped CRLF", `"a\r\nb"`},
		{"NEL", `"\u0085"`},
		{"raw NEL", "\"a\u0085b\""},
		{"NUL", `"\u0000"`},
		{"tab", `"\t"`},
		{"DEL", `"\u007f"`},
		{"data injection", `"x\ndata: evil"`},
		{"id injection", `"x\nid: 99999999999999999999999999\n\n"`},
		{"raw LF", "\"x\ndata: evil\""},
	}
	for _, tc := range refused {
		for _, batch := range []bool{false, true} {
			body := `{"type":` + tc.jsonType + `,"data":1}`
			if batch {
				body = `[{"data":1},` + body + `]`
			}
			before := takeSnapshot(t, s)
			status, ct, b, err := s.do(http.MethodPost, "/v1/streams/s/events", "application/json", body, nil)
			if err != nil {
				t.Fatal(err)
			}
			if status != http.StatusBadRequest {
				t.Errorf("%s (batch %v): status %d, want 400: %s", tc.name, batch, status, b)
				continue
			}
			assertJSONError(t, ct, b)
			if after := takeSnapshot(t, s); !reflect.DeepEqual(before, after) {
				t.Errorf("%s (batch %v): refused publish changed the log", tc.name, batch)
			}
		}
	}

	// Types that look dangerous but are not: SSE splits lines only at CR
	// and LF, and a field's value runs to the end of its line.
	accepted := []string{"a:b", "inner space", "data: x", "line\u2028separator", "ünïcödé", ":"}
	c := s.dial(t, "/v1/streams/s/events?last_event_id="+s.log.LastID().String(), "")
	var want []store.Event
	for _, typ := range accepted {
		body, _ := json.Marshal(map[string]any{"type": typ, "data": typ})
		ids := s.mustPublish(t, "s", string(body))
		data, _ := json.Marshal(typ)
		want = append(want, store.Event{ID: ids[0], Type: typ, Data: data})
	}
	if err := testkit.DiffEvents(readEvents(t, c, len(want)), want); err != nil {
		t.Fatal(err)
	}
}

func TestPublish(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	tests := []struct {
		name        string
		contentType string
		body        string
		batch       bool
		want        []store.Event // Type and Data as stored
	}{
		{"single", "application/json", `{"type":"t","data":{"a":1}}`, false,
			[]store.Event{{Type: "t", Data: []byte(`{"a":1}`)}}},
		{"compacted", "application/json", "{\n \"data\" : {\n  \"a\" : [ 1, 2 ],\n  \"s\": \"x\\ny\"\n }\n}", false,
			[]store.Event{{Data: []byte(`{"a":[1,2],"s":"x\ny"}`)}}},
		{"type omitted", "application/json", `{"data":"x"}`, false,
			[]store.Event{{Data: []byte(`"x"`)}}},
		{"data null", "application/json", `{"data":null}`, false,
			[]store.Event{{Data: []byte(`null`)}}},
		{"charset", "application/json; charset=utf-8", `{"data":1}`, false,
			[]store.Event{{Data: []byte(`1`)}}},
		{"whitespace around", "application/json", " \n{\"data\":1}\n ", false,
			[]store.Event{{Data: []byte(`1`)}}},
		{"batch", "application/json", `[{"data":1},{"type":"b","data":[2]},{"data":"3"}]`, true,
			[]store.Event{{Data: []byte(`1`)}, {Type: "b", Data: []byte(`[2]`)}, {Data: []byte(`"3"`)}}},
		{"batch of one", "application/json", `[{"data":1}]`, true,
			[]store.Event{{Data: []byte(`1`)}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := s.log.LastID()
			status, ct, b, err := s.do(http.MethodPost, "/v1/streams/p/events", tc.contentType, tc.body, nil)
			if err != nil {
				t.Fatal(err)
			}
			if status != http.StatusCreated || ct != "application/json" {
				t.Fatalf("status %d, Content-Type %q: %s", status, ct, b)
			}
			var got []store.ID
			if tc.batch {
				var resp struct{ IDs []store.ID }
				if err := decodeStrict(b, &resp); err != nil || len(resp.IDs) == 0 {
					t.Fatalf(`answer %s, want {"ids": [...]} (%v)`, b, err)
				}
				got = resp.IDs
			} else {
				var resp struct{ ID store.ID }
				if err := decodeStrict(b, &resp); err != nil || resp.ID.IsZero() {
					t.Fatalf(`answer %s, want {"id": ...} (%v)`, b, err)
				}
				got = []store.ID{resp.ID}
			}
			stored, err := s.log.ReadAfter("p", before, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(stored) != len(tc.want) || len(got) != len(tc.want) {
				t.Fatalf("answered %d ids, stored %d events, want %d", len(got), len(stored), len(tc.want))
			}
			for i, e := range stored {
				if e.ID != got[i] || e.Type != tc.want[i].Type || string(e.Data) != string(tc.want[i].Data) {
					t.Errorf("event %d: stored {%s %q %s}, answered id %s, want {%q %s}", i, e.ID, e.Type, e.Data, got[i], tc.want[i].Type, tc.want[i].Data)
				}
			}
			if last := s.log.LastID(); last != got[len(got)-1] {
				t.Errorf("LastID %s, want the last answered id %s", last, got[len(got)-1])
			}
		})
	}
}

// A body that is malformed on the wire or never arrives is the client's
// fault: a 4xx, never a 500, and a stalled body does not hold the handler.
func TestPublishBrokenBody(t *testing.T) {
	s := newServer(t, httpapi.Options{ReadTimeout: 200 * time.Millisecond}, stream.Options{})
	for _, tc := range []struct {
		name string
		raw  string
		want int
	}{
		{"bad chunk size", "POST /v1/streams/s/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", http.StatusBadRequest},
		{"stalled body", "POST /v1/streams/s/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", http.StatusRequestTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", s.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.SetDeadline(time.Now().Add(testkit.Wait)); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write([]byte(tc.raw)); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
			if last := s.log.LastID(); !last.IsZero() {
				t.Fatalf("something was appended: last id %s", last)
			}
		})
	}
}
