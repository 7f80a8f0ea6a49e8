package httpapi

import (
	"bytes"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestQueryTokenScrubbed checks that the token is removed from the request
// however its query key is percent-encoded: every pair url.ParseQuery
// reads as access_token (so the one tokenFrom uses) is gone from the URL
// and RequestURI the route's handler sees, and nothing else is.
func TestQueryTokenScrubbed(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef-test-secret")
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	v, err := NewVerifier(VerifierOptions{Key: secret, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": now.Add(time.Hour).Unix()}).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	h := NewHandler(nil, nil, Options{Auth: v, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	tests := []struct {
		name  string
		query string // T stands for the token
		kept  string // the query the handler sees
		used  bool   // the token authenticates the request
	}{
		{name: "plain", query: "access_token=T&a=1", kept: "a=1", used: true},
		{name: "underscore escaped", query: "a=1&access%5Ftoken=T", kept: "a=1", used: true},
		{name: "underscore escaped, lower-case hex", query: "access%5ftoken=T&a=1", kept: "a=1", used: true},
		{name: "every byte escaped", query: "%61%63%63%65%73%73%5F%74%6F%6B%65%6E=T", kept: "", used: true},
		{name: "twice, second escaped", query: "access_token=T&b=2&%61ccess_token=T", kept: "b=2", used: true},
		{name: "bad escape in the value", query: "access%5Ftoken=T%zz&a=1", kept: "a=1"},
		{name: "after a semicolon", query: "a=1;access_token=T&b=2", kept: "b=2"},
		{name: "before a semicolon", query: "access%5Ftoken=T;a=1&b=2", kept: "b=2"},
		{name: "another key", query: "access_tokens=x&Access_token=y&access+token=z", kept: "access_tokens=x&Access_token=y&access+token=z"},
		{name: "empty pairs kept", query: "a=1&&access_token=T&", kept: "a=1&&", used: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var seen *http.Request
			next := func(w http.ResponseWriter, r *http.Request) { seen = r }
			query := strings.ReplaceAll(tt.query, "T", tok)
			r := httptest.NewRequest(http.MethodGet, "/v1/streams?"+query, nil)
			if got, err := tokenFrom(r); (err == nil && got == tok) != tt.used {
				t.Fatalf("tokenFrom = %.20q, %v; want the token used: %v", got, err, tt.used)
			}
			h.authorize(needToken, next)(httptest.NewRecorder(), r)
			if tt.used != (seen != nil) {
				t.Fatalf("handler reached: %v, want %v", seen != nil, tt.used)
			}
			// The request the handler sees is the one a refusal logs, and
			// what withoutQueryToken gives is both.
			if seen == nil {
				seen = withoutQueryToken(r)
			}
			if seen.URL.RawQuery != tt.kept {
				t.Errorf("query %q, want %q", seen.URL.RawQuery, tt.kept)
			}
			for _, s := range []string{seen.URL.String(), seen.RequestURI, seen.URL.RawQuery} {
				if strings.Contains(s, tok) {
					t.Errorf("the token is still in %q", s)
				}
			}
			if _, err := tokenFrom(seen); !errors.Is(err, ErrNoToken) && tt.used {
				t.Errorf("tokenFrom after scrubbing: %v, want ErrNoToken", err)
			}
		})
	}
	if strings.Contains(logs.String(), strings.Split(tok, ".")[2]) {
		t.Fatalf("the log holds the token:\n%s", logs.String())
	}
}
