package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

type historyPage struct {
	Events []struct {
		ID   store.ID        `json:"id"`
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
		Time string          `json:"time"`
	} `json:"events"`
	Gap bool `json:"gap"`
}

// TestHistoryPaging walks a stream page by page, as a backfilling client
// does, and must see every event once, in order, with its time.
func TestHistoryPaging(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	for i := range 12 {
		body := fmt.Sprintf(`[{"data":{"n":%d}},{"type":"t%d","data":"%d"},{"data":[%d]}]`, i, i, i, i)
		s.mustPublish(t, "h", body)
		s.mustPublish(t, "other", `{"data":0}`)
	}
	want := s.readAll(t, "h")

	for _, limit := range []int{1, 7, 36, 1000} {
		t.Run(fmt.Sprint("limit ", limit), func(t *testing.T) {
			var got []store.Event
			after := ""
			for pages := 0; ; pages++ {
				if pages > len(want)+1 {
					t.Fatal("paging does not end")
				}
				var page historyPage
				s.getJSON(t, fmt.Sprintf("/v1/streams/h/history?limit=%d%s", limit, after), &page)
				if len(page.Events) > limit {
					t.Fatalf("page of %d events, limit %d", len(page.Events), limit)
				}
				if len(page.Events) == 0 {
					break
				}
				for _, e := range page.Events {
					id := e.ID
					tm, err := time.Parse(time.RFC3339, e.Time)
					if err != nil {
						t.Fatalf("time %q: %v", e.Time, err)
					}
					if !tm.Equal(id.Time()) || !strings.HasSuffix(e.Time, "Z") {
						t.Fatalf("time %q, want %s in UTC, the id's time", e.Time, id.Time().UTC().Format(time.RFC3339Nano))
					}
					typ := e.Type
					if typ == "message" {
						// The history names the SSE default; the log stores it empty.
						typ = ""
					}
					got = append(got, store.Event{ID: id, Stream: "h", Type: typ, Data: e.Data})
				}
				after = "&after=" + page.Events[len(page.Events)-1].ID.String()
			}
			if len(got) != len(want) {
				t.Fatalf("walked %d events, want %d", len(got), len(want))
			}
			for i := range want {
				if got[i].ID != want[i].ID || got[i].Type != want[i].Type || string(got[i].Data) != string(want[i].Data) {
					t.Fatalf("event %d: got %+v, want %+v", i, got[i], want[i])
				}
			}
		})
	}

	t.Run("default limit", func(t *testing.T) {
		var page historyPage
		s.getJSON(t, "/v1/streams/h/history", &page)
		if n := min(len(want), httpapi.DefaultHistoryLimit); len(page.Events) != n {
			t.Fatalf("%d events, want %d", len(page.Events), n)
		}
	})
	t.Run("omitted type is message", func(t *testing.T) {
		var page historyPage
		s.getJSON(t, "/v1/streams/h/history?limit=2", &page)
		if page.Events[0].Type != "message" || page.Events[1].Type != "t0" {
			t.Fatalf("types %q, %q; want message, t0", page.Events[0].Type, page.Events[1].Type)
		}
	})
	t.Run("unknown stream", func(t *testing.T) {
		var page historyPage
		s.getJSON(t, "/v1/streams/nothing/history", &page)
		if page.Events == nil || len(page.Events) != 0 {
			t.Fatalf("events %v, want []", page.Events)
		}
	})
	t.Run("after the last", func(t *testing.T) {
		var page historyPage
		s.getJSON(t, "/v1/streams/h/history?after="+want[len(want)-1].ID.String(), &page)
		if page.Events == nil || len(page.Events) != 0 {
			t.Fatalf("events %v, want []", page.Events)
		}
	})
}

func TestHistoryLimitClamped(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	n := httpapi.MaxHistoryLimit + 5
	s.mustPublish(t, "h", "["+strings.Repeat(`{"data":1},`, n-1)+`{"data":1}]`)
	for _, limit := range []string{"1001", "5000", "999999999999"} {
		var page historyPage
		s.getJSON(t, "/v1/streams/h/history?limit="+limit, &page)
		if len(page.Events) != httpapi.MaxHistoryLimit {
			t.Errorf("limit=%s: %d events, want %d", limit, len(page.Events), httpapi.MaxHistoryLimit)
		}
	}
}

func TestListStreams(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	var list struct {
		Streams []struct {
			Name     string   `json:"name"`
			Count    uint64   `json:"count"`
			Bytes    uint64   `json:"bytes"`
			FirstID  store.ID `json:"first_id"`
			LastID   store.ID `json:"last_id"`
			LowWater store.ID `json:"low_water"`
		} `json:"streams"`
	}
	s.getJSON(t, "/v1/streams", &list)
	if list.Streams == nil || len(list.Streams) != 0 {
		t.Fatalf("empty log lists %+v, want []", list.Streams)
	}

	b := s.mustPublish(t, "b", `[{"data":1},{"data":2}]`)
	a := s.mustPublish(t, "a", `{"data":1}`)
	a = append(a, s.mustPublish(t, "a", `[{"data":2},{"data":3}]`)...)
	b = append(b, s.mustPublish(t, "b", `{"data":3}`)...)
	s.getJSON(t, "/v1/streams", &list)
	want := []struct {
		name string
		ids  []store.ID
	}{{"a", a}, {"b", b}}
	if len(list.Streams) != len(want) {
		t.Fatalf("listed %+v, want streams a and b", list.Streams)
	}
	for i, w := range want {
		got := list.Streams[i]
		if got.Name != w.name || got.Count != uint64(len(w.ids)) || got.Bytes == 0 ||
			got.FirstID != w.ids[0] || got.LastID != w.ids[len(w.ids)-1] {
			t.Errorf("stream %d: %+v, want %s with %d events from %s to %s", i, got, w.name, len(w.ids), w.ids[0], w.ids[len(w.ids)-1])
		}
	}
}

func TestHealthz(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	var body struct{ Status string }
	s.getJSON(t, "/healthz", &body)
	if body.Status != "ok" {
		t.Fatalf("status %q, want ok", body.Status)
	}
	status, _, _, err := s.do(http.MethodHead, "/healthz", "", "", nil)
	if err != nil || status != http.StatusOK {
		t.Fatalf("HEAD /healthz: %d, %v", status, err)
	}
}

// TestHistoryDataBytes: history gives an event's data as stored, the bytes
// SSE sends, with no HTML escaping of "<", ">" and "&"; the answer says
// nosniff.
func TestHistoryDataBytes(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	const data = "{\"html\":\"<b>&amp;</b>\",\"sep\":\"\u2028\"}"
	s.mustPublish(t, "s", `{"data":`+data+`}`)
	status, _, body, err := s.do(http.MethodGet, "/v1/streams/s/history", "", "", nil)
	if err != nil || status != http.StatusOK {
		t.Fatal(status, err)
	}
	if !strings.Contains(string(body), `"data":`+data+`,`) {
		t.Fatalf("history %s does not hold the data %s as stored", body, data)
	}
	resp, err := s.client.Get(s.URL + "/v1/streams/s/history")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Fatalf("X-Content-Type-Options %q", got)
	}
}
