package bench

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
)

const testJWTKey = "bench-test-key"

// fakeHub is the part of a Mercure hub the adapter uses, written from the
// protocol: it checks the shape of every request, stores what is
// published, and serves subscriptions with history and live updates. With
// historyCap > 0 a subscription that would replay more ends its stream
// after historyCap events, as Mercure's does when its buffer of 1,000
// fills.
type fakeHub struct {
	t          *testing.T
	historyCap int

	mu      sync.Mutex
	updates []fakeUpdate
	subs    map[chan fakeUpdate]string // subscriber: its topic
	bad     []string                   // requests of the wrong shape
	posts   int
	lastIDs []string // the Last-Event-ID of each subscription, "" for none
}

type fakeUpdate struct{ id, topic, typ, data string }

func newFakeHub(t *testing.T, historyCap int) (*fakeHub, string) {
	h := &fakeHub{t: t, historyCap: historyCap, subs: make(map[chan fakeUpdate]string)}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.CloseClientConnections() // ends the streams, which Close would wait for
		srv.Close()
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, b := range h.bad {
			t.Error(b)
		}
	})
	return h, srv.URL
}

// count returns the number of publishes stored.
func (h *fakeHub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.posts
}

// resumes returns the Last-Event-ID of each subscription so far.
func (h *fakeHub) resumes() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.lastIDs)
}

func (h *fakeHub) refuse(w http.ResponseWriter, status int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	h.mu.Lock()
	h.bad = append(h.bad, msg)
	h.mu.Unlock()
	http.Error(w, msg, status)
}

func (h *fakeHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != mercureHub {
		h.refuse(w, http.StatusNotFound, "request to %s", r.URL.Path)
		return
	}
	switch r.Method {
	case http.MethodPost:
		h.publish(w, r)
	case http.MethodGet:
		if r.URL.Query().Get("topic") == "" {
			http.Error(w, `Missing "topic" parameter.`, http.StatusBadRequest) // the health check
			return
		}
		h.subscribe(w, r)
	default:
		h.refuse(w, http.StatusMethodNotAllowed, "method %s", r.Method)
	}
}

// checkJWT checks a publisher token: HS256, signed with testJWTKey, the
// claim that allows publishing to every topic.
func checkJWT(auth string) error {
	token, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok {
		return fmt.Errorf("authorization %q is not a bearer token", auth)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return fmt.Errorf("token %q is not a JWT", token)
	}
	enc := base64.RawURLEncoding
	mac := hmac.New(sha256.New, []byte(testJWTKey))
	mac.Write([]byte(parts[0] + "." + parts[1]))
	if sig, err := enc.DecodeString(parts[2]); err != nil || !hmac.Equal(sig, mac.Sum(nil)) {
		return fmt.Errorf("token %q: signature does not match the key", token)
	}
	var header struct{ Alg, Typ string }
	var claims struct {
		Mercure struct{ Publish []string } `json:"mercure"`
	}
	h, err1 := enc.DecodeString(parts[0])
	c, err2 := enc.DecodeString(parts[1])
	if err := errors.Join(err1, err2, json.Unmarshal(h, &header), json.Unmarshal(c, &claims)); err != nil {
		return fmt.Errorf("token %q: %w", token, err)
	}
	if header.Alg != "HS256" || len(claims.Mercure.Publish) != 1 || claims.Mercure.Publish[0] != "*" {
		return fmt.Errorf("token header %s, claims %s: want HS256 and mercure.publish [\"*\"]", h, c)
	}
	return nil
}

func (h *fakeHub) publish(w http.ResponseWriter, r *http.Request) {
	if err := checkJWT(r.Header.Get("Authorization")); err != nil {
		h.refuse(w, http.StatusUnauthorized, "publish: %v", err)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
		h.refuse(w, http.StatusBadRequest, "publish: Content-Type %q", ct)
		return
	}
	if err := r.ParseForm(); err != nil {
		h.refuse(w, http.StatusBadRequest, "publish: %v", err)
		return
	}
	f := r.PostForm
	if len(f) != 3 || len(f["topic"]) != 1 || f.Get("type") != "bench" || len(f["data"]) != 1 {
		h.refuse(w, http.StatusBadRequest, "publish: form %v, want one topic, type bench and one data", f)
		return
	}
	// The data is the payload every target gets: a JSON object padded to
	// 100 bytes (a replay's markers aside).
	data := f.Get("data")
	var payload struct {
		N int64 `json:"n"`
	}
	if err := json.Unmarshal([]byte(data), &payload); err != nil || (payload.N < markerBase && len(data) != DefaultSize) {
		h.refuse(w, http.StatusBadRequest, "publish: data %q (%d bytes, %v)", data, len(data), err)
		return
	}
	h.mu.Lock()
	h.posts++
	u := fakeUpdate{id: fmt.Sprintf("urn:uuid:%08x-fake", 0x9e3779b9*uint32(len(h.updates)+1)), topic: f.Get("topic"), typ: "bench", data: data}
	h.updates = append(h.updates, u)
	for ch, topic := range h.subs {
		if topic == u.topic {
			ch <- u
		}
	}
	h.mu.Unlock()
	io.WriteString(w, u.id)
}

func (h *fakeHub) subscribe(w http.ResponseWriter, r *http.Request) {
	topic, last := r.URL.Query().Get("topic"), r.Header.Get("Last-Event-ID")
	live := make(chan fakeUpdate, 100_000)
	h.mu.Lock()
	h.lastIDs = append(h.lastIDs, last)
	var history []fakeUpdate
	if last != "" {
		after := last == "earliest"
		for _, u := range h.updates {
			if after && u.topic == topic {
				history = append(history, u)
			}
			after = after || u.id == last
		}
	}
	h.subs[live] = topic
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.subs, live)
		h.mu.Unlock()
	}()

	w.Header().Set("Content-Type", "text/event-stream")
	io.WriteString(w, ":\n")
	rc := http.NewResponseController(w)
	send := func(u fakeUpdate) bool {
		_, err := fmt.Fprintf(w, "event: %s\nid: %s\ndata: %s\n\n", u.typ, u.id, u.data)
		return err == nil && rc.Flush() == nil
	}
	if h.historyCap > 0 && len(history) > h.historyCap {
		for _, u := range history[:h.historyCap] {
			send(u)
		}
		return // the stream ends, as Mercure's does when its buffer fills
	}
	for _, u := range history {
		if !send(u) {
			return
		}
	}
	if rc.Flush() != nil {
		return
	}
	for {
		select {
		case u := <-live:
			if !send(u) {
				return
			}
		case <-r.Context().Done():
			return
		}
	}
}

func mercureArgs(url string, args ...string) []string {
	return append(args, "--url", url, "--target", "mercure", "--mercure-jwt-key", testJWTKey)
}

// Each workload against the fake hub: every request has the shape of the
// Mercure protocol (checked by the hub), and the figures add up.
func TestMercureWorkloads(t *testing.T) {
	h, url := newFakeHub(t, 0)

	p, err := runJSON[publishReport](t, mercureArgs(url, "publish", "-c", "3", "-n", "40")...)
	if err != nil {
		t.Fatal(err)
	}
	if posts := h.count(); p.Target != "mercure" || p.Events != 40 || p.Errors != 0 || posts != 40 {
		t.Errorf("publish: %+v, the hub had %d publishes", p, posts)
	}

	f, err := runJSON[fanoutReport](t, mercureArgs(url, "fanout", "--subscribers", "10", "--rate", "200", "--duration", "300ms", "--size", "100")...)
	if err != nil {
		t.Fatal(err)
	}
	if f.Published != 60 || f.Deliveries != 600 || !f.Complete || f.Gaps+f.Duplicates+f.Malformed+f.Errors != 0 || f.OrderChecked {
		t.Errorf("fanout: %+v", f)
	}
	// Catching up publishes one event per request: none carries a batch.
	if f.PublishRequests != f.Published {
		t.Errorf("fanout: %d events in %d requests", f.Published, f.PublishRequests)
	}

	r, err := runJSON[replayReport](t, mercureArgs(url, "replay", "-n", "500", "-c", "2")...)
	if err != nil {
		t.Fatal(err)
	}
	if r.Received != 500 || r.Missing+r.Duplicates+r.Malformed+r.Errors != 0 || r.Ended != endComplete || r.OrderChecked {
		t.Errorf("replay: %+v", r)
	}
	if ids := h.resumes(); ids[len(ids)-1] != "earliest" {
		t.Errorf("replay subscribed with Last-Event-ID %q, want earliest", ids[len(ids)-1])
	}

	if runtime.GOOS == "linux" {
		i, err := runJSON[idleReport](t, mercureArgs(url, "idle", "--subscribers", "20", "--pid", fmt.Sprint(os.Getpid()))...)
		if err != nil || i.Subscribers != 20 || i.Errors != 0 {
			t.Errorf("idle: %+v, %v", i, err)
		}
	}
}

// A replay the hub ends early is missing events: the run fails its
// checks, with no error of the tool; resuming as EventSource does, or
// dropping and resuming, gets the rest.
func TestMercureReplayStopsEarly(t *testing.T) {
	h, url := newFakeHub(t, 300)
	args := mercureArgs(url, "replay", "--stream", "capped", "-n", "1000")
	if _, err := runJSON[replayReport](t, append(args, "--phase", "load")...); err != nil {
		t.Fatal(err)
	}
	r, err := runJSON[replayReport](t, append(args, "--phase", "read")...)
	if !errors.Is(err, ErrCheck) {
		t.Fatalf("error %v, want ErrCheck", err)
	}
	if r.Received != 300 || r.Missing != 700 || r.Errors != 0 || r.ServerEnded != 1 || r.Ended != endClosed {
		t.Errorf("one connection: %+v", r)
	}

	for _, extra := range [][]string{{"--resume"}, {"--drop-every", "200"}} {
		before := len(h.resumes())
		r, err := runJSON[replayReport](t, append(append(args, "--phase", "read"), extra...)...)
		if err != nil {
			t.Fatalf("%v: %v", extra, err)
		}
		if r.Received != 1000 || r.Missing+r.Duplicates+r.Errors != 0 || r.Connections < 4 {
			t.Errorf("%v: %+v", extra, r)
		}
		// Each connection after the first resumes after the last event
		// received.
		for i, id := range h.resumes()[before:] {
			if i == 0 && id != "earliest" || i > 0 && !strings.HasPrefix(id, "urn:uuid:") {
				t.Errorf("%v: connection %d sent Last-Event-ID %q", extra, i, id)
			}
		}
	}
}

// What Mercure has no counterpart for is refused, not emulated.
func TestMercureRefusals(t *testing.T) {
	_, url := newFakeHub(t, 0)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"batch publish", mercureArgs(url, "publish", "--batch", "10", "-n", "10"), "one event per request"},
		{"idempotency keys", mercureArgs(url, "publish", "--idempotency", "-n", "10"), "Idempotency-Key"},
		{"merged fan-out", mercureArgs(url, "fanout", "--merged"), "no merged"},
		{"spawn", mercureArgs(url, "idle", "--spawn"), "starts sselog only"},
		{"no key", []string{"publish", "--url", url, "--target", "mercure"}, "--mercure-jwt-key is required"},
		{"unknown target", []string{"publish", "--url", url, "--target", "nats"}, "sselog|mercure"},
		{"not a hub", []string{"publish", "--url", newServer(t), "--target", "mercure", "--mercure-jwt-key", "k"}, "not a Mercure hub"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runBench(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// The publish body is a form whose data is the payload, escaped; its
// unescaped form is what the hub stores and sends.
func TestMercurePublishBody(t *testing.T) {
	a := &mercureAdapter{}
	b := newEventBuilder(100)
	body := a.appendPublish([]byte("prefix:"), "orders/1 ü", b, 1, 1764000000000000000, 42, 1)
	rest, ok := strings.CutPrefix(string(body), "prefix:")
	if !ok {
		t.Fatalf("body %q does not extend dst", body)
	}
	form, err := parseForm(rest)
	if err != nil {
		t.Fatal(err)
	}
	want := string(b.appendData(nil, 1764000000000000000, 42))
	if form["topic"] != "orders/1 ü" || form["type"] != "bench" || form["data"] != want || len(want) != 100 {
		t.Errorf("form %q, want topic %q, type bench, data %s", form, "orders/1 ü", want)
	}
}

func parseForm(s string) (map[string]string, error) {
	r, err := http.NewRequest(http.MethodPost, "/", strings.NewReader(s))
	if err != nil {
		return nil, err
	}
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if err := r.ParseForm(); err != nil {
		return nil, err
	}
	out := make(map[string]string)
	for k, v := range r.PostForm {
		out[k] = strings.Join(v, ",")
	}
	return out, nil
}
