package httpapi_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sselog/sselog/httpapi"
	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
	"github.com/sselog/sselog/stream"
)

// authNow is the verifier's clock in these tests: token times are relative
// to it, so a test never depends on how long it runs.
var authNow = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

var testSecret = []byte("0123456789abcdef0123456789abcdef-test-secret")

// grant is the "sselog" claim of a test token.
type grant struct {
	Publish   []string `json:"publish,omitempty"`
	Subscribe []string `json:"subscribe,omitempty"`
	Admin     bool     `json:"admin,omitempty"`
}

// claims is a token's claims expiring an hour after authNow.
func claims(g grant) jwt.MapClaims {
	return jwt.MapClaims{"exp": authNow.Add(time.Hour).Unix(), "sselog": g}
}

func sign(tb testing.TB, method jwt.SigningMethod, key any, c jwt.Claims) string {
	tb.Helper()
	tok, err := jwt.NewWithClaims(method, c).SignedString(key)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

func hmacToken(tb testing.TB, g grant) string {
	return sign(tb, jwt.SigningMethodHS256, testSecret, claims(g))
}

func mustVerifier(tb testing.TB, key any) *httpapi.Verifier {
	tb.Helper()
	v, err := httpapi.NewVerifier(httpapi.VerifierOptions{Key: key, Now: func() time.Time { return authNow }})
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// lockedBuffer is a log destination shared by handlers and the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newAuthServer serves the API with tokens checked by key, logging
// everything to the returned buffer.
func newAuthServer(tb testing.TB, key any, opts httpapi.Options) (*testServer, *lockedBuffer) {
	tb.Helper()
	logs := &lockedBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts.Auth = mustVerifier(tb, key)
	return newServer(tb, opts, stream.Options{}), logs
}

// bearer is a header carrying tok.
func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// withToken sends a token its three ways: as a header, a cookie or a query
// parameter, and returns the path and header to use.
func withToken(source, path, tok string) (string, http.Header) {
	switch source {
	case "header":
		return path, bearer(tok)
	case "cookie":
		return path, http.Header{"Cookie": {httpapi.TokenCookie + "=" + tok}}
	case "query":
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		return path + sep + httpapi.TokenParam + "=" + url.QueryEscape(tok), nil
	}
	panic("unknown token source " + source)
}

// dialWith opens an SSE stream with extra request headers.
func (s *testServer) dialWith(t *testing.T, path string, header http.Header) (*testkit.SSEReader, int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Wait)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return nil, resp.StatusCode, b
	}
	c := testkit.NewSSEReader(resp, cancel)
	t.Cleanup(c.Close)
	return c, resp.StatusCode, nil
}

// expectRefused checks a refusal's status, JSON body and challenge.
func expectRefused(t *testing.T, status int, ct string, body []byte, hdr http.Header, want int, challenge string) {
	t.Helper()
	if status != want {
		t.Fatalf("status %d, want %d: %s", status, want, body)
	}
	assertJSONError(t, ct, body)
	if got := hdr.Get("WWW-Authenticate"); got != challenge {
		t.Errorf("WWW-Authenticate %q, want %q", got, challenge)
	}
}

// doFull is do that also returns the answer's headers.
func (s *testServer) doFull(t *testing.T, method, path, contentType, body string, header http.Header) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, s.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

const (
	challengeNone    = `Bearer realm="sselog"`
	challengeInvalid = `Bearer realm="sselog", error="invalid_token"`
	challengeScope   = `Bearer realm="sselog", error="insufficient_scope"`
)

// TestAuthKeyTypes signs tokens with each kind of key and algorithm the
// server accepts, with the public half read from PEM as the server reads
// it, and checks that each key accepts only its own algorithms.
func TestAuthKeyTypes(t *testing.T) {
	t.Parallel()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	pemOf := func(pub any) []byte {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	tests := []struct {
		name     string
		verify   []byte // PEM; nil for the HMAC secret
		methods  []jwt.SigningMethod
		signWith any
		want     []string
	}{
		{"HMAC", nil, []jwt.SigningMethod{jwt.SigningMethodHS256, jwt.SigningMethodHS384, jwt.SigningMethodHS512}, testSecret, []string{"HS256", "HS384", "HS512"}},
		{"RSA", pemOf(&rsaKey.PublicKey), []jwt.SigningMethod{jwt.SigningMethodRS256, jwt.SigningMethodRS512, jwt.SigningMethodPS256, jwt.SigningMethodPS384}, rsaKey, []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}},
		{"ECDSA P-256", pemOf(&p256.PublicKey), []jwt.SigningMethod{jwt.SigningMethodES256}, p256, []string{"ES256"}},
		{"ECDSA P-384", pemOf(&p384.PublicKey), []jwt.SigningMethod{jwt.SigningMethodES384}, p384, []string{"ES384"}},
		{"Ed25519", pemOf(edPub), []jwt.SigningMethod{jwt.SigningMethodEdDSA}, edPriv, []string{"EdDSA"}},
	}
	g := grant{Publish: []string{"orders"}, Subscribe: []string{"orders"}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var key any = testSecret
			if tt.verify != nil {
				var err error
				if key, err = httpapi.ParsePublicKey(tt.verify); err != nil {
					t.Fatal(err)
				}
			}
			if got := mustVerifier(t, key).Algorithms(); !slices.Equal(got, tt.want) {
				t.Errorf("Algorithms() = %v, want %v", got, tt.want)
			}
			s, _ := newAuthServer(t, key, httpapi.Options{})
			for _, m := range tt.methods {
				tok := sign(t, m, tt.signWith, claims(g))
				status, ct, b, err := s.do(http.MethodPost, "/v1/streams/orders/events", "application/json", `{"data":"`+m.Alg()+`"}`, bearer(tok))
				if err != nil || status != http.StatusCreated {
					t.Fatalf("%s: status %d, %v: %s (%s)", m.Alg(), status, err, b, ct)
				}
			}
			var page historyPage
			status, _, b, _ := s.do(http.MethodGet, "/v1/streams/orders/history", "", "", bearer(sign(t, tt.methods[0], tt.signWith, claims(g))))
			if err := json.Unmarshal(b, &page); err != nil || status != http.StatusOK || len(page.Events) != len(tt.methods) {
				t.Fatalf("history: status %d, %v: %s", status, err, b)
			}
		})
	}
}

// TestAuthRefusals checks every way a token can be wrong: each is 401 (or
// 403 when valid but not granted), with a JSON error and the challenge
// that says which, and appends nothing.
func TestAuthRefusals(t *testing.T) {
	t.Parallel()
	s, _ := newAuthServer(t, testSecret, httpapi.Options{})
	pub := grant{Publish: []string{"orders"}}
	at := func(exp time.Time) jwt.MapClaims { return jwt.MapClaims{"exp": exp.Unix(), "sselog": pub} }
	hs := func(c jwt.Claims) string { return sign(t, jwt.SigningMethodHS256, testSecret, c) }
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims(pub)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	tampered := func() string {
		// Grant admin in the payload of a token that did not: the
		// signature no longer matches.
		parts := strings.Split(hs(claims(pub)), ".")
		parts[1] = base64.RawURLEncoding.EncodeToString(mustJSON(t, claims(grant{Publish: []string{"*"}, Admin: true})))
		return strings.Join(parts, ".")
	}()
	good := hs(claims(pub))
	tests := []struct {
		name      string
		header    http.Header
		path      string // default: publish to orders
		want      int
		challenge string
	}{
		{name: "valid", header: bearer(good), want: 201},
		{name: "lower-case scheme", header: http.Header{"Authorization": {"bearer " + good}}, want: 201},
		{name: "no token", want: 401, challenge: challengeNone},
		{name: "basic scheme", header: http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}}, want: 401, challenge: challengeNone},
		{name: "empty bearer", header: http.Header{"Authorization": {"Bearer "}}, want: 401, challenge: challengeInvalid},
		{name: "malformed", header: bearer("not.a.jwt"), want: 401, challenge: challengeInvalid},
		{name: "garbage", header: bearer("%%%"), want: 401, challenge: challengeInvalid},
		{name: "too long", header: bearer(strings.Repeat("a", 9000)), want: 401, challenge: challengeInvalid},
		{name: "expired 10s ago, within the leeway", header: bearer(hs(at(authNow.Add(-10 * time.Second)))), want: 201},
		{name: "expired 60s ago", header: bearer(hs(at(authNow.Add(-60 * time.Second)))), want: 401, challenge: challengeInvalid},
		{name: "not valid for 10s, within the leeway", header: bearer(hs(jwt.MapClaims{"exp": authNow.Add(time.Hour).Unix(), "nbf": authNow.Add(10 * time.Second).Unix(), "sselog": pub})), want: 201},
		{name: "not valid for 60s", header: bearer(hs(jwt.MapClaims{"exp": authNow.Add(time.Hour).Unix(), "nbf": authNow.Add(time.Minute).Unix(), "sselog": pub})), want: 401, challenge: challengeInvalid},
		{name: "no exp", header: bearer(hs(jwt.MapClaims{"sselog": pub})), want: 401, challenge: challengeInvalid},
		{name: "exp not a number", header: bearer(hs(jwt.MapClaims{"exp": "tomorrow", "sselog": pub})), want: 401, challenge: challengeInvalid},
		{name: "wrong secret", header: bearer(sign(t, jwt.SigningMethodHS256, []byte(strings.Repeat("x", 32)), claims(pub))), want: 401, challenge: challengeInvalid},
		{name: "alg none", header: bearer(none), want: 401, challenge: challengeInvalid},
		{name: "tampered payload", header: bearer(tampered), want: 401, challenge: challengeInvalid},
		{name: "misspelt action", header: bearer(hs(jwt.MapClaims{"exp": authNow.Add(time.Hour).Unix(), "sselog": map[string]any{"publsh": []string{"orders"}}})), want: 401, challenge: challengeInvalid},
		{name: "invalid pattern", header: bearer(hs(jwt.MapClaims{"exp": authNow.Add(time.Hour).Unix(), "sselog": map[string]any{"publish": []string{"orders/x"}}})), want: 401, challenge: challengeInvalid},
		{name: "grants not an object", header: bearer(hs(jwt.MapClaims{"exp": authNow.Add(time.Hour).Unix(), "sselog": []string{"orders"}})), want: 401, challenge: challengeInvalid},
		{name: "no sselog claim", header: bearer(hs(jwt.MapClaims{"exp": authNow.Add(time.Hour).Unix()})), want: 403, challenge: challengeScope},
		{name: "subscribe only", header: bearer(hs(claims(grant{Subscribe: []string{"orders"}}))), want: 403, challenge: challengeScope},
		{name: "another stream", header: bearer(hs(claims(grant{Publish: []string{"orders2", "order", "orders.*"}}))), want: 403, challenge: challengeScope},
		{name: "admin does not publish", header: bearer(hs(claims(grant{Admin: true}))), want: 403, challenge: challengeScope},
		{name: "bad header, good cookie", header: http.Header{"Authorization": {"Bearer x"}, "Cookie": {httpapi.TokenCookie + "=" + good}}, want: 401, challenge: challengeInvalid},
		{name: "bad cookie, good query", header: http.Header{"Cookie": {httpapi.TokenCookie + "=x"}}, path: "/v1/streams/orders/events?access_token=" + good, want: 401, challenge: challengeInvalid},
		{name: "invalid stream name", header: bearer(good), path: "/v1/streams/.orders/events", want: 400},
		{name: "invalid stream name, no token", path: "/v1/streams/.orders/events", want: 401, challenge: challengeNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := takeSnapshot(t, s)
			path := orDefault(tt.path, "/v1/streams/orders/events")
			status, hdr, b := s.doFull(t, http.MethodPost, path, "application/json", `{"data":1}`, tt.header)
			if tt.want == http.StatusCreated {
				if status != tt.want {
					t.Fatalf("status %d, want 201: %s", status, b)
				}
				return
			}
			if tt.want == http.StatusBadRequest {
				expectRefused(t, status, hdr.Get("Content-Type"), b, hdr, tt.want, "")
			} else {
				expectRefused(t, status, hdr.Get("Content-Type"), b, hdr, tt.want, tt.challenge)
			}
			if after := takeSnapshot(t, s); after.last != before.last {
				t.Errorf("a refused publish appended: last id %v -> %v", before.last, after.last)
			}
		})
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func mustJSON(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestAuthWrongAlgorithm holds an RSA-keyed server to RSA algorithms: a
// token signed with HS256 using the public key's PEM as the secret (the
// classic confusion attack), or with another kind of key, is refused.
func TestAuthWrongAlgorithm(t *testing.T) {
	t.Parallel()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	s, _ := newAuthServer(t, &rsaKey.PublicKey, httpapi.Options{})
	g := claims(grant{Publish: []string{"*"}})
	tests := []struct {
		name string
		tok  string
		want int
	}{
		{"RS256", sign(t, jwt.SigningMethodRS256, rsaKey, g), 201},
		{"HS256 with the public key as secret", sign(t, jwt.SigningMethodHS256, pubPEM, g), 401},
		{"HS256 with the DER as secret", sign(t, jwt.SigningMethodHS256, der, g), 401},
		{"RS256 by another key", sign(t, jwt.SigningMethodRS256, other, g), 401},
		{"ES256", sign(t, jwt.SigningMethodES256, ec, g), 401},
		{"EdDSA", sign(t, jwt.SigningMethodEdDSA, ed, g), 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, b, err := s.do(http.MethodPost, "/v1/streams/x/events", "application/json", `{"data":1}`, bearer(tt.tok))
			if err != nil || status != tt.want {
				t.Fatalf("status %d, %v, want %d: %s", status, err, tt.want, b)
			}
		})
	}
}

// TestAuthTokenSources publishes and subscribes with the token in each of
// the places it is read from.
func TestAuthTokenSources(t *testing.T) {
	t.Parallel()
	s, _ := newAuthServer(t, testSecret, httpapi.Options{Heartbeat: time.Hour})
	tok := hmacToken(t, grant{Publish: []string{"orders"}, Subscribe: []string{"orders"}})
	for _, source := range []string{"header", "cookie", "query"} {
		t.Run(source, func(t *testing.T) {
			path, hdr := withToken(source, "/v1/streams/orders/events?last_event_id="+store.ID{}.String(), tok)
			c, status, b := s.dialWith(t, path, hdr)
			if c == nil {
				t.Fatalf("subscribe: status %d: %s", status, b)
			}
			path, hdr = withToken(source, "/v1/streams/orders/events", tok)
			status, _, b, err := s.do(http.MethodPost, path, "application/json", `{"data":"`+source+`"}`, hdr)
			if err != nil || status != http.StatusCreated {
				t.Fatalf("publish: status %d, %v: %s", status, err, b)
			}
			all := s.readAll(t, "orders")
			got := readEvents(t, c, len(all))
			if err := testkit.DiffEvents(got, all); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestAuthPatterns checks the pattern semantics through the API: a token
// granting one pattern may read exactly the streams it matches.
func TestAuthPatterns(t *testing.T) {
	t.Parallel()
	s, _ := newAuthServer(t, testSecret, httpapi.Options{})
	tests := []struct {
		pattern, stream string
		want            bool
	}{
		{"orders", "orders", true},
		{"orders", "Orders", false},
		{"orders", "orders2", false},
		{"orders", "order", false},
		{"audit.*", "audit.x", true},
		{"audit.*", "audit.x.y", true},
		{"audit.*", "audit.", true},
		{"audit.*", "audit", false},
		{"audit.*", "auditx", false},
		{"audit.*", "xaudit.x", false},
		{"*", "anything", true},
		{"*", "a", true},
		{"*.eu", "orders.eu", true},
		{"*.eu", "orders.eu.x", false},
		{"*.eu", "eu", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "abcb", false},
		{"a*b*c", "aXbXcXc", true},
		{"**", "x", true},
		{"tenant-*-orders", "tenant-42-orders", true},
		{"tenant-*-orders", "tenant--orders", true},
		{"tenant-*-orders", "tenant-42-orders-x", false},
	}
	for _, tt := range tests {
		t.Run(tt.pattern+" "+tt.stream, func(t *testing.T) {
			tok := hmacToken(t, grant{Subscribe: []string{tt.pattern}})
			status, _, b, err := s.do(http.MethodGet, "/v1/streams/"+tt.stream+"/history", "", "", bearer(tok))
			if err != nil {
				t.Fatal(err)
			}
			if got := status == http.StatusOK; got != tt.want || (status != 200 && status != 403) {
				t.Fatalf("status %d, want match %v: %s", status, tt.want, b)
			}
		})
	}
}

// TestAuthPublishPattern publishes under a pattern grant, and checks that
// a stream outside it is refused with nothing appended.
func TestAuthPublishPattern(t *testing.T) {
	t.Parallel()
	s, _ := newAuthServer(t, testSecret, httpapi.Options{})
	tok := hmacToken(t, grant{Publish: []string{"orders", "audit.*"}})
	for stream, want := range map[string]int{"orders": 201, "audit.x": 201, "audit.x.y": 201, "audit": 403, "orders.x": 403, "secret": 403} {
		status, _, b, err := s.do(http.MethodPost, "/v1/streams/"+stream+"/events", "application/json", `{"data":1}`, bearer(tok))
		if err != nil || status != want {
			t.Errorf("publish to %s: status %d, %v, want %d: %s", stream, status, err, want, b)
		}
		if n := len(s.readAll(t, stream)); (want == 201) != (n == 1) {
			t.Errorf("%s holds %d events after a %d", stream, n, status)
		}
	}
}

// TestAuthSubscribeGrant checks that a subscriber is refused before it is
// subscribed to a stream it was not granted, and that a granted one sees
// only its stream.
func TestAuthSubscribeGrant(t *testing.T) {
	t.Parallel()
	s, _ := newAuthServer(t, testSecret, httpapi.Options{Heartbeat: time.Hour})
	publisher := hmacToken(t, grant{Publish: []string{"*"}})
	reader := hmacToken(t, grant{Subscribe: []string{"orders"}})
	from := "?last_event_id=" + store.ID{}.String()
	publish := func(stream string) {
		t.Helper()
		if status, _, b, err := s.do(http.MethodPost, "/v1/streams/"+stream+"/events", "application/json", `{"data":"`+stream+`"}`, bearer(publisher)); err != nil || status != 201 {
			t.Fatalf("publish: %d, %v: %s", status, err, b)
		}
	}
	publish("secret")
	for _, source := range []string{"header", "cookie", "query"} {
		path, hdr := withToken(source, "/v1/streams/secret/events"+from, reader)
		c, status, b := s.dialWith(t, path, hdr)
		if c != nil || status != http.StatusForbidden {
			t.Fatalf("%s: subscribe to an ungranted stream: status %d: %s", source, status, b)
		}
		assertJSONError(t, "application/json", b)
	}
	if n := s.hub.Following(); n != 0 {
		t.Fatalf("refused subscribers left %d streams followed", n)
	}
	c, status, b := s.dialWith(t, "/v1/streams/orders/events"+from, bearer(reader))
	if c == nil {
		t.Fatalf("subscribe: %d: %s", status, b)
	}
	publish("secret")
	publish("orders")
	publish("secret")
	publish("orders")
	got := readEvents(t, c, 2)
	if err := testkit.DiffEvents(got, s.readAll(t, "orders")); err != nil {
		t.Fatal(err)
	}
}

// TestAuthEndpoints checks what each endpoint needs: admin for changes to
// retention, deletion and backup; subscribe (or admin, for metadata) for
// reads; nothing for /healthz.
func TestAuthEndpoints(t *testing.T) {
	t.Parallel()
	s, _ := newAuthServer(t, testSecret, httpapi.Options{})
	tokens := map[string]string{
		"publisher":     hmacToken(t, grant{Publish: []string{"*"}}),
		"subscriber":    hmacToken(t, grant{Subscribe: []string{"orders"}}),
		"all but admin": hmacToken(t, grant{Publish: []string{"*"}, Subscribe: []string{"*"}}),
		"admin":         hmacToken(t, grant{Admin: true}),
	}
	for _, name := range []string{"orders", "doomed", "other"} {
		if status, _, b, _ := s.do(http.MethodPost, "/v1/streams/"+name+"/events", "application/json", `{"data":1}`, bearer(tokens["publisher"])); status != 201 {
			t.Fatalf("publish: %d: %s", status, b)
		}
	}
	type call struct{ method, path, body string }
	tests := []struct {
		call
		allowed []string // the tokens answered 200; the others get 403
	}{
		{call{"GET", "/v1/streams/orders", ""}, []string{"subscriber", "all but admin", "admin"}},
		{call{"GET", "/v1/streams/other", ""}, []string{"all but admin", "admin"}},
		{call{"GET", "/v1/streams/orders/retention", ""}, []string{"subscriber", "all but admin", "admin"}},
		{call{"GET", "/v1/streams/orders/history", ""}, []string{"subscriber", "all but admin"}},
		{call{"PUT", "/v1/streams/orders/retention", `{"max_events": 10}`}, []string{"admin"}},
		{call{"DELETE", "/v1/streams/orders/retention", ""}, []string{"admin"}},
		{call{"GET", "/v1/backup", ""}, []string{"admin"}},
		{call{"DELETE", "/v1/streams/doomed", ""}, []string{"admin"}},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			status, hdr, b := s.doFull(t, tt.method, tt.path, "application/json", tt.body, nil)
			expectRefused(t, status, hdr.Get("Content-Type"), b, hdr, 401, challengeNone)
			for _, who := range []string{"publisher", "subscriber", "all but admin", "admin"} {
				want := http.StatusForbidden
				if slices.Contains(tt.allowed, who) {
					want = http.StatusOK
				}
				status, hdr, b := s.doFull(t, tt.method, tt.path, "application/json", tt.body, bearer(tokens[who]))
				if want == http.StatusOK && status != want {
					t.Fatalf("%s: status %d, want 200: %s", who, status, b)
				}
				if want == http.StatusForbidden {
					expectRefused(t, status, hdr.Get("Content-Type"), b, hdr, want, challengeScope)
				}
			}
		})
	}
	if status, _, b, _ := s.do(http.MethodGet, "/healthz", "", "", nil); status != http.StatusOK {
		t.Errorf("healthz without a token: %d: %s", status, b)
	}
}

// TestAuthListStreams checks that GET /v1/streams lists only what the
// token may subscribe to, everything for admin, and needs a token.
func TestAuthListStreams(t *testing.T) {
	t.Parallel()
	s, _ := newAuthServer(t, testSecret, httpapi.Options{})
	publisher := hmacToken(t, grant{Publish: []string{"*"}})
	for _, name := range []string{"audit.a", "audit.b", "orders", "secret"} {
		if status, _, b, _ := s.do(http.MethodPost, "/v1/streams/"+name+"/events", "application/json", `{"data":1}`, bearer(publisher)); status != 201 {
			t.Fatalf("publish: %d: %s", status, b)
		}
	}
	tests := []struct {
		name  string
		grant grant
		want  []string
	}{
		{"patterns", grant{Subscribe: []string{"orders", "audit.*"}}, []string{"audit.a", "audit.b", "orders"}},
		{"admin", grant{Admin: true}, []string{"audit.a", "audit.b", "orders", "secret"}},
		{"publish only", grant{Publish: []string{"*"}}, []string{}},
		{"nothing", grant{}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, b, err := s.do(http.MethodGet, "/v1/streams", "", "", bearer(hmacToken(t, tt.grant)))
			var out struct {
				Streams []struct {
					Name string `json:"name"`
				} `json:"streams"`
			}
			if err != nil || status != 200 || json.Unmarshal(b, &out) != nil || out.Streams == nil {
				t.Fatalf("status %d, %v: %s", status, err, b)
			}
			got := []string{}
			for _, st := range out.Streams {
				got = append(got, st.Name)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("listed %v, want %v", got, tt.want)
			}
		})
	}
	status, hdr, b := s.doFull(t, http.MethodGet, "/v1/streams", "", "", nil)
	expectRefused(t, status, hdr.Get("Content-Type"), b, hdr, 401, challengeNone)
}

// TestAuthNoAuthOptions checks that zero Options leave every endpoint open
// and ignore a token that comes along.
func TestAuthNoAuthOptions(t *testing.T) {
	t.Parallel()
	s := newServer(t, httpapi.Options{}, stream.Options{})
	s.mustPublish(t, "x", `{"data":1}`)
	if status, _, b, _ := s.do(http.MethodDelete, "/v1/streams/x?access_token=whatever", "", "", bearer("not-a-token")); status != 200 {
		t.Fatalf("delete without auth: %d: %s", status, b)
	}
}

// TestAuthTokenNeverLogged makes requests that fail in every way the
// handler logs, with the token in the query string and a debug logger, and
// checks that no log line holds the token.
func TestAuthTokenNeverLogged(t *testing.T) {
	t.Parallel()
	s, logs := newAuthServer(t, testSecret, httpapi.Options{})
	good := hmacToken(t, grant{Publish: []string{"orders"}, Subscribe: []string{"orders"}})
	expired := sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"exp": authNow.Add(-time.Hour).Unix(), "sselog": grant{Admin: true}})
	forged := sign(t, jwt.SigningMethodHS256, []byte(strings.Repeat("k", 40)), claims(grant{Admin: true}))
	for _, tok := range []string{good, expired, forged} {
		q := httpapi.TokenParam + "=" + url.QueryEscape(tok)
		for _, req := range []struct{ method, path, body string }{
			{"GET", "/v1/streams/orders/events?last_event_id=nope&" + q, ""},
			{"GET", "/v1/streams/orders/history?limit=-1&" + q, ""},
			{"GET", "/v1/streams/secret/history?" + q, ""},
			{"GET", "/v1/streams/orders?" + q, ""},
			{"POST", "/v1/streams/orders/events?" + q, `{"data":`},
			{"DELETE", "/v1/streams/orders?" + q, ""},
			{"GET", "/v1/nope?" + q, ""},
			{"PATCH", "/v1/streams/orders?" + q, ""},
		} {
			if status, _, b, err := s.do(req.method, req.path, "application/json", req.body, nil); err != nil || status < 400 {
				t.Fatalf("%s %s: status %d, %v: %s", req.method, req.path, status, err, b)
			}
		}
	}
	out := logs.String()
	if !strings.Contains(out, "request refused") {
		t.Fatalf("no refusal was logged; the test checks nothing:\n%s", out)
	}
	for _, tok := range []string{good, expired, forged} {
		// The payload and the signature are each particular to the token.
		parts := strings.Split(tok, ".")
		if strings.Contains(out, parts[1]) || strings.Contains(out, parts[2]) {
			t.Fatalf("the log holds a token:\n%s", out)
		}
	}
}

// TestParsePublicKey checks the key forms the server reads and the clear
// refusals of the rest.
func TestParsePublicKey(t *testing.T) {
	t.Parallel()
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	block := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	pkix := func(pub any) []byte {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return block("PUBLIC KEY", der)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: authNow, NotAfter: authNow.Add(time.Hour)}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, edPub, edPriv)
	if err != nil {
		t.Fatal(err)
	}
	edPrivDER, _ := x509.MarshalPKCS8PrivateKey(edPriv)
	tests := []struct {
		name    string
		pem     []byte
		wantErr string
	}{
		{"RSA PKIX", pkix(&rsaKey.PublicKey), ""},
		{"RSA PKCS1", block("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)), ""},
		{"ECDSA P-521", pkix(&p521.PublicKey), ""},
		{"Ed25519", pkix(edPub), ""},
		{"certificate", block("CERTIFICATE", certDER), ""},
		{"RSA 1024", pkix(&small.PublicKey), "at least 2048 bits"},
		{"ECDSA P-224", pkix(&p224.PublicKey), "P-224"},
		{"private key", block("PRIVATE KEY", edPrivDER), "public key only"},
		{"RSA private key", block("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), "public key only"},
		{"not PEM", []byte("ssh-ed25519 AAAA"), "no PEM block"},
		{"empty", nil, "no PEM block"},
		{"wrong type", block("EC PARAMETERS", []byte{1}), "EC PARAMETERS"},
		{"corrupt", block("PUBLIC KEY", []byte("garbage")), "invalid key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := httpapi.ParsePublicKey(tt.pem)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if _, err := httpapi.NewVerifier(httpapi.VerifierOptions{Key: key}); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, httpapi.ErrInvalidKey) {
				t.Fatalf("err = %v, want ErrInvalidKey mentioning %q", err, tt.wantErr)
			}
		})
	}
	for _, key := range []any{nil, []byte("short"), "a string secret", ed25519.PublicKey{1, 2}} {
		if _, err := httpapi.NewVerifier(httpapi.VerifierOptions{Key: key}); !errors.Is(err, httpapi.ErrInvalidKey) {
			t.Errorf("NewVerifier(%T) = %v, want ErrInvalidKey", key, err)
		}
	}
}

// TestAuthStreamEndsWithToken: an SSE stream lives no longer than the token
// that opened it (its exp plus the leeway): then it ends with a retry hint,
// so the client comes back with a fresh token or is refused.
func TestAuthStreamEndsWithToken(t *testing.T) {
	v, err := httpapi.NewVerifier(httpapi.VerifierOptions{Key: testSecret, Leeway: -1, Now: func() time.Time { return authNow }})
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, httpapi.Options{Auth: v, Heartbeat: time.Hour}, stream.Options{})
	tok := sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{
		"exp": authNow.Add(time.Second).Unix(), "sselog": grant{Subscribe: []string{"s"}, Publish: []string{"s"}},
	})
	c, status, body := s.dialWith(t, "/v1/streams/s/events", bearer(tok))
	if c == nil {
		t.Fatalf("subscribe: %d %s", status, body)
	}
	start := time.Now()
	if b, err := c.Next(); err != nil || b.Retry != "3000" {
		t.Fatalf("first block %+v, %v; want the retry hint", b, err)
	}
	b, err := c.Next()
	if err != nil || b.Retry == "" || b.HasData {
		t.Fatalf("at expiry: %+v, %v; want a last retry hint", b, err)
	}
	if b, err := c.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("after the last hint: %+v, %v; want the end of the stream", b, err)
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Fatalf("stream ended after %v, before its token expired", d)
	}
}
