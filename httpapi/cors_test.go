package httpapi_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/stream"
)

const (
	appOrigin   = "https://app.example.com"
	localOrigin = "http://localhost:3000"
)

// vary lists the answer's Vary values, however they are split over lines.
func vary(h http.Header) []string {
	var out []string
	for _, v := range h.Values("Vary") {
		for _, f := range strings.Split(v, ",") {
			out = append(out, strings.TrimSpace(f))
		}
	}
	return out
}

// TestCORS checks preflights and actual requests from allowed and other
// origins, on a server that also checks tokens: a preflight never carries
// one, and a refusal must still be readable by an allowed page.
func TestCORS(t *testing.T) {
	t.Parallel()
	// The trailing slash and capitals in the configuration are forgiven.
	s, _ := newAuthServer(t, testSecret, httpapi.Options{CORSOrigins: []string{appOrigin, "HTTP://localhost:3000/"}})
	tok := hmacToken(t, grant{Publish: []string{"orders"}, Subscribe: []string{"orders"}})
	preflight := func(origin string) http.Header {
		h := http.Header{"Access-Control-Request-Method": {"POST"}, "Access-Control-Request-Headers": {"authorization,content-type"}}
		if origin != "" {
			h.Set("Origin", origin)
		}
		return h
	}
	withOrigin := func(origin string, h http.Header) http.Header {
		h = h.Clone()
		if h == nil {
			h = http.Header{}
		}
		h.Set("Origin", origin)
		return h
	}
	tests := []struct {
		name       string
		method     string
		header     http.Header
		body       string
		want       int
		wantOrigin string // Access-Control-Allow-Origin; "" means none of the CORS headers
		preflight  bool
	}{
		{name: "preflight", method: "OPTIONS", header: preflight(appOrigin), want: 204, wantOrigin: appOrigin, preflight: true},
		{name: "preflight, second origin", method: "OPTIONS", header: preflight(localOrigin), want: 204, wantOrigin: localOrigin, preflight: true},
		{name: "preflight, other origin", method: "OPTIONS", header: preflight("https://evil.example.com"), want: 405},
		{name: "preflight, origin with a suffix", method: "OPTIONS", header: preflight(appOrigin + ".evil.com"), want: 405},
		{name: "preflight, other scheme", method: "OPTIONS", header: preflight("http://app.example.com"), want: 405},
		{name: "preflight, other port", method: "OPTIONS", header: preflight(appOrigin + ":8443"), want: 405},
		{name: "preflight, null origin", method: "OPTIONS", header: preflight("null"), want: 405},
		{name: "preflight, no origin", method: "OPTIONS", header: preflight(""), want: 405},
		{name: "OPTIONS that is not a preflight", method: "OPTIONS", header: withOrigin(appOrigin, nil), want: 405, wantOrigin: appOrigin},
		{name: "publish", method: "POST", header: withOrigin(appOrigin, bearer(tok)), body: `{"data":1}`, want: 201, wantOrigin: appOrigin},
		{name: "publish without a token", method: "POST", header: withOrigin(appOrigin, nil), body: `{"data":1}`, want: 401, wantOrigin: appOrigin},
		{name: "publish from another origin", method: "POST", header: withOrigin("https://evil.example.com", bearer(tok)), body: `{"data":1}`, want: 201},
		{name: "publish with no origin", method: "POST", header: bearer(tok), body: `{"data":1}`, want: 201},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, hdr, b := s.doFull(t, tt.method, "/v1/streams/orders/events", "application/json", tt.body, tt.header)
			if status != tt.want {
				t.Fatalf("status %d, want %d: %s", status, tt.want, b)
			}
			if !slices.Contains(vary(hdr), "Origin") {
				t.Errorf("Vary %q lacks Origin", hdr.Values("Vary"))
			}
			if got := hdr.Get("Access-Control-Allow-Origin"); got != tt.wantOrigin {
				t.Fatalf("Access-Control-Allow-Origin %q, want %q", got, tt.wantOrigin)
			}
			if tt.wantOrigin == "" {
				for k := range hdr {
					if strings.HasPrefix(k, "Access-Control-") {
						t.Errorf("%s: %q sent to an origin not allowed", k, hdr.Get(k))
					}
				}
				return
			}
			if got := hdr.Get("Access-Control-Allow-Credentials"); got != "true" {
				t.Errorf("Access-Control-Allow-Credentials %q", got)
			}
			if !tt.preflight {
				if got := hdr.Get("Access-Control-Expose-Headers"); !strings.Contains(got, "WWW-Authenticate") || !strings.Contains(got, "Idempotent-Replayed") {
					t.Errorf("Access-Control-Expose-Headers %q", got)
				}
				return
			}
			if len(b) != 0 {
				t.Errorf("preflight answer has a body: %q", b)
			}
			for k, want := range map[string]string{
				"Access-Control-Allow-Methods": "GET, POST, PUT, DELETE",
				"Access-Control-Allow-Headers": "Authorization, Content-Type, Idempotency-Key, Last-Event-ID",
				"Access-Control-Max-Age":       "600",
			} {
				if got := hdr.Get(k); got != want {
					t.Errorf("%s %q, want %q", k, got, want)
				}
			}
		})
	}
	if n := len(s.readAll(t, "orders")); n != 3 {
		t.Errorf("%d events stored, want the 3 publishes with a token", n)
	}
}

// TestCORSStream opens an SSE stream from an allowed origin with the token
// in a cookie, as EventSource with withCredentials does, and from another
// origin.
func TestCORSStream(t *testing.T) {
	t.Parallel()
	s, _ := newAuthServer(t, testSecret, httpapi.Options{CORSOrigins: []string{appOrigin}, Heartbeat: time.Hour})
	tok := hmacToken(t, grant{Subscribe: []string{"orders"}})
	cookie := http.Header{"Cookie": {httpapi.TokenCookie + "=" + tok}, "Last-Event-ID": {"00000000000000000000000000"}}
	for origin, want := range map[string]string{appOrigin: appOrigin, "https://evil.example.com": ""} {
		h := cookie.Clone()
		h.Set("Origin", origin)
		c, status, b := s.dialWith(t, "/v1/streams/orders/events", h)
		if c == nil {
			t.Fatalf("subscribe from %s: %d: %s", origin, status, b)
		}
		got := c.Response().Header
		if got.Get("Access-Control-Allow-Origin") != want || (want != "") != (got.Get("Access-Control-Allow-Credentials") == "true") {
			t.Errorf("stream from %s: CORS headers %v", origin, got)
		}
		if blk, err := c.Next(); err != nil || blk.Retry == "" {
			t.Fatalf("first block %+v, %v", blk, err)
		}
	}
}

// TestCORSOff checks that without configured origins nothing changes: no
// CORS header, and OPTIONS is the router's 405.
func TestCORSOff(t *testing.T) {
	t.Parallel()
	s := newServer(t, httpapi.Options{}, stream.Options{})
	for _, method := range []string{"OPTIONS", "GET"} {
		h := http.Header{"Origin": {appOrigin}, "Access-Control-Request-Method": {"GET"}}
		status, hdr, b := s.doFull(t, method, "/v1/streams", "", "", h)
		if want := map[string]int{"OPTIONS": 405, "GET": 200}[method]; status != want {
			t.Fatalf("%s: status %d, want %d: %s", method, status, want, b)
		}
		for k := range hdr {
			if strings.HasPrefix(k, "Access-Control-") || k == "Vary" {
				t.Errorf("%s: %s %q without CORS configured", method, k, hdr.Get(k))
			}
		}
	}
}
