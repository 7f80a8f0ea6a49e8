package httpapi_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// signRaw signs claims written as JSON text with the test secret: the
// attacks below (repeated keys, keys in another case) cannot be written
// with jwt.MapClaims, which is a Go map.
func signRaw(tb testing.TB, claims string) string {
	tb.Helper()
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString([]byte(claims))
	sig, err := jwt.SigningMethodHS256.Sign(signing, testSecret)
	if err != nil {
		tb.Fatal(err)
	}
	return signing + "." + enc.EncodeToString(sig)
}

// TestAuthExactClaims holds token claims to exact JSON: each refused token
// below, correctly signed, was accepted when claims were decoded by
// encoding/json's struct matching (keys folded for case, the last of a
// repeated key winning, a string taken for a NumericDate), most of them
// as admin. In the claims, %[1]d is an exp an hour after authNow.
func TestAuthExactClaims(t *testing.T) {
	t.Parallel()
	s, _ := newAuthServer(t, testSecret, httpapi.Options{})
	if _, err := s.log.Append(context.Background(), "orders", []store.Event{{Data: []byte("0")}}); err != nil {
		t.Fatal(err)
	}
	exp := authNow.Add(time.Hour).Unix()
	tests := []struct {
		name         string
		claims       string
		method, path string // GET /v1/backup when empty
		body         string
		want         int
	}{
		// Still accepted.
		{name: "admin", claims: `{"exp":%[1]d,"sselog":{"admin":true}}`, want: 200},
		{name: "every registered claim", claims: `{"iss":"me","sub":"u1","aud":["sselog"],"exp":%[1]d,"nbf":1,"iat":1,"jti":"j","sselog":{"admin":true}}`, want: 200},
		{name: "audience as a string", claims: `{"aud":"sselog","exp":%[1]d,"sselog":{"admin":true}}`, want: 200},
		{name: "other claims, one key in sibling objects", claims: `{"exp":%[1]d,"roles":["a"],"ext":{"a":[{"k":1},{"k":2}],"k":3},"sselog":{"admin":true}}`, want: 200},
		{name: "escaped keys decode to ours", claims: `{"\u0065xp":%[1]d,"\u0073selog":{"\u0061dmin":true}}`, want: 200},
		{name: "fractional exp", claims: `{"exp":%[1]d.5,"sselog":{"admin":true}}`, want: 200},
		{name: "null grant list", claims: `{"exp":%[1]d,"sselog":{"publish":null,"admin":true}}`, want: 200},
		{name: "subscriber is not admin", claims: `{"exp":%[1]d,"sselog":{"subscribe":["orders"]}}`, want: 403},
		{name: "publisher publishes", claims: `{"exp":%[1]d,"sselog":{"publish":["orders"]}}`, method: "POST", path: "/v1/streams/orders/events", body: `{"data":1}`, want: 201},

		// Keys in another case.
		{name: "aDmIn beside a grant", claims: `{"exp":%[1]d,"sselog":{"subscribe":["orders"],"aDmIn":true}}`, want: 401},
		{name: "admin false then ADMIN true", claims: `{"exp":%[1]d,"sselog":{"admin":false,"ADMIN":true}}`, want: 401},
		{name: "long s in sselog", claims: `{"exp":%[1]d,"sſelog":{"admin":true}}`, want: 401},
		{name: "long s in sselog, escaped", claims: `{"exp":%[1]d,"s\u017felog":{"admin":true}}`, want: 401},
		{name: "Sselog after sselog", claims: `{"exp":%[1]d,"sselog":{"subscribe":["orders"]},"Sselog":{"admin":true}}`, want: 401},
		{name: "SSELOG alone", claims: `{"exp":%[1]d,"SSELOG":{"admin":true}}`, want: 401},
		{name: "expired exp revived by Exp", claims: `{"exp":1,"Exp":%[1]d,"sselog":{"admin":true}}`, want: 401},
		{name: "EXP alone", claims: `{"EXP":%[1]d,"sselog":{"admin":true}}`, want: 401},
		{name: "AUD", claims: `{"exp":%[1]d,"AUD":"sselog","sselog":{"admin":true}}`, want: 401},
		{name: "PUBLISH", claims: `{"exp":%[1]d,"sselog":{"PUBLISH":["orders"]}}`, method: "POST", path: "/v1/streams/orders/events", body: `{"data":1}`, want: 401},
		{name: "Admin deletes", claims: `{"exp":%[1]d,"sselog":{"Admin":true}}`, method: "DELETE", path: "/v1/streams/orders", want: 401},
		{name: "Admin sets retention", claims: `{"exp":%[1]d,"sselog":{"Admin":true}}`, method: "PUT", path: "/v1/streams/orders/retention", body: `{"max_events":1}`, want: 401},

		// Repeated keys, at any depth.
		{name: "admin twice", claims: `{"exp":%[1]d,"sselog":{"admin":false,"admin":true}}`, want: 401},
		{name: "admin twice, one escaped", claims: `{"exp":%[1]d,"sselog":{"admin":false,"\u0061dmin":true}}`, want: 401},
		{name: "sselog twice", claims: `{"exp":%[1]d,"sselog":{"subscribe":["orders"]},"sselog":{"admin":true}}`, want: 401},
		{name: "exp twice", claims: `{"exp":1,"exp":%[1]d,"sselog":{"admin":true}}`, want: 401},
		{name: "subscribe twice", claims: `{"exp":%[1]d,"sselog":{"subscribe":["other"],"subscribe":["orders"]}}`, method: "GET", path: "/v1/streams/orders/history", want: 401},
		{name: "a key twice deep in another claim", claims: `{"exp":%[1]d,"ext":{"a":[{"k":1,"k":2}]},"sselog":{"admin":true}}`, want: 401},

		// Values of the wrong kind.
		{name: "exp as a string", claims: `{"exp":"%[1]d","sselog":{"admin":true}}`, want: 401},
		{name: "nbf as a string", claims: `{"exp":%[1]d,"nbf":"0","sselog":{"admin":true}}`, want: 401},
		{name: "sselog null", claims: `{"exp":%[1]d,"sselog":null}`, method: "GET", path: "/v1/streams", want: 401},
		{name: "claims not UTF-8", claims: "{\"exp\":%[1]d,\"sselog\":{\"admin\":true},\"\xff\":1}", want: 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method, path := orDefault(tt.method, http.MethodGet), orDefault(tt.path, "/v1/backup")
			contentType := ""
			if tt.body != "" {
				contentType = "application/json"
			}
			before := takeSnapshot(t, s)
			tok := signRaw(t, fmt.Sprintf(tt.claims, exp))
			status, hdr, b := s.doFull(t, method, path, contentType, tt.body, bearer(tok))
			switch tt.want {
			case http.StatusUnauthorized:
				expectRefused(t, status, hdr.Get("Content-Type"), b, hdr, tt.want, challengeInvalid)
			case http.StatusForbidden:
				expectRefused(t, status, hdr.Get("Content-Type"), b, hdr, tt.want, challengeScope)
			default:
				if status != tt.want {
					t.Fatalf("%s %s: status %d, want %d: %.200q", method, path, status, tt.want, b)
				}
				return
			}
			if after := takeSnapshot(t, s); !reflect.DeepEqual(before, after) {
				t.Errorf("a refused request changed the log: %+v -> %+v", before, after)
			}
		})
	}
}

// TestRetentionExactKeys holds a retention policy body to exact JSON: a
// key in another case or given twice is a 400 and leaves the override as
// it was, where encoding/json would have taken it.
func TestRetentionExactKeys(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	const path = "/v1/streams/s/retention"
	s.mustDo(t, http.MethodPut, path, "application/json", `{"max_events":7}`, http.StatusOK)
	want := s.retention(t, "s")
	for _, tc := range []struct{ name, body string }{
		{"upper case", `{"MAX_EVENTS":1}`},
		{"title case", `{"Max_Events":1}`},
		{"one letter", `{"max_eventS":1}`},
		{"case variant after the key", `{"max_events":7,"MAX_EVENTS":1}`},
		{"key twice", `{"max_events":7,"max_events":1}`},
		{"key twice, one escaped", `{"max_age":"1h","max_\u0061ge":"2h"}`},
		{"key twice, same value", `{"max_bytes":1,"max_bytes":1}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.mustDo(t, http.MethodPut, path, "application/json", tc.body, http.StatusBadRequest)
			if got := s.retention(t, "s"); !sameJSON(got, string(want)) {
				t.Fatalf("a refused policy changed the override: %s -> %s", want, got)
			}
		})
	}
	// An escape that spells the exact key is the key.
	put := s.mustDo(t, http.MethodPut, path, "application/json", `{"max_\u0065vents":3}`, http.StatusOK)
	var got struct {
		Override map[string]any `json:"override"`
	}
	if err := json.Unmarshal(put, &got); err != nil || !reflect.DeepEqual(got.Override, map[string]any{"max_events": 3.0}) {
		t.Fatalf("PUT answered %s (%v), want the override {\"max_events\":3}", put, err)
	}
}

// TestPublishExactKeys checks what the hand-written publish decoder
// promises: "type" and "data" are matched byte for byte (after escapes)
// and given once, and a body that breaks this appends nothing.
func TestPublishExactKeys(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	s.mustPublish(t, "s", `{"data":0}`)
	for _, tc := range []struct{ name, body string }{
		{"type twice", `{"type":"a","type":"b","data":1}`},
		{"data twice", `{"data":1,"data":2}`},
		{"type twice, one escaped", `{"type":"a","\u0074ype":"b","data":1}`},
		{"data twice, one escaped", `{"data":1,"d\u0061ta":2}`},
		{"Type", `{"Type":"a","data":1}`},
		{"TYPE beside type", `{"type":"a","TYPE":"b","data":1}`},
		{"Data alone", `{"Data":1}`},
		{"DATA beside data", `{"data":1,"DATA":2}`},
		{"case variant in a batch", `[{"data":1},{"data":2,"Data":3}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := takeSnapshot(t, s)
			s.mustDo(t, http.MethodPost, "/v1/streams/s/events", "application/json", tc.body, http.StatusBadRequest)
			if after := takeSnapshot(t, s); !reflect.DeepEqual(before, after) {
				t.Fatalf("refused publish changed the log: %+v -> %+v", before, after)
			}
		})
	}
}

// TestPublishResetLookalikes refuses event types a client could take for
// the server's "reset" notice, and still takes types that merely contain
// the word.
func TestPublishResetLookalikes(t *testing.T) {
	s := newServer(t, httpapi.Options{}, stream.Options{})
	s.mustPublish(t, "s", `{"data":0}`)
	for _, tc := range []struct {
		name, typ string
		want      int
	}{
		{"leading space", " reset", 400},
		{"trailing space", "reset ", 400},
		{"title case", "Reset", 400},
		{"upper case", "RESET", 400},
		{"byte order mark", "\ufeffreset", 400},
		{"long s", "reſet", 400},
		{"zero-width space inside", "re\u200bset", 400},
		{"left-to-right mark", "\u200ereset", 400},
		{"trailing no-break space", "reset\u00a0", 400},
		{"leading line separator", "\u2028reset", 400},
		{"plain", "user.created", 201},
		{"longer word", "resets", 201},
		{"word inside", "preset", 201},
		{"space inside", "re set", 201},
		{"non-ASCII", "événement", 201},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := takeSnapshot(t, s)
			body := string(mustJSON(t, map[string]any{"type": tc.typ, "data": 1}))
			s.mustDo(t, http.MethodPost, "/v1/streams/s/events", "application/json", body, tc.want)
			if tc.want != 201 {
				if after := takeSnapshot(t, s); !reflect.DeepEqual(before, after) {
					t.Fatalf("refused publish changed the log: %+v -> %+v", before, after)
				}
				return
			}
			if got := s.readAll(t, "s"); got[len(got)-1].Type != tc.typ {
				t.Fatalf("stored type %q, want %q", got[len(got)-1].Type, tc.typ)
			}
		})
	}
}
