package main

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sselog/sselog/internal/testkit"
	"github.com/sselog/sselog/store"
)

// tokenFor signs a token valid for an hour granting the sselog claim g.
func tokenFor(t *testing.T, method jwt.SigningMethod, key any, g map[string]any) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(method, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "sselog": g}).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// writeFile writes data to a new file in a temporary directory.
func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func publicPEM(t *testing.T, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// send makes one request with an optional bearer token and returns the
// status, headers and body.
func send(t *testing.T, method, url, body, token string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// TestCheckAnonymous is the decision a server without a token key makes
// about its listen address, and what it logs.
func TestCheckAnonymous(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr     string
		loopback bool
	}{
		{"127.0.0.1:8080", true},
		{"127.0.0.1:0", true},
		{"127.9.9.9:80", true},
		{"localhost:8080", true},
		{"LocalHost:8080", true},
		{"[::1]:8080", true},
		{"[::ffff:127.0.0.1]:8080", true},
		{":8080", false},
		{"0.0.0.0:8080", false},
		{"[::]:8080", false},
		{"10.0.0.1:8080", false},
		{"192.168.1.20:8080", false},
		{"[fe80::1]:8080", false},
		{"example.com:8080", false},
		{"localhost.example.com:8080", false},
		{"127.0.0.1", false}, // no port: not an address at all
	}
	for _, tt := range tests {
		for _, insecure := range []bool{false, true} {
			var logs bytes.Buffer
			logger := slog.New(slog.NewTextHandler(&logs, nil))
			err := checkAnonymous(tt.addr, insecure, logger)
			switch {
			case tt.loopback:
				if err != nil || !strings.Contains(logs.String(), "level=INFO") || !strings.Contains(logs.String(), "anonymous access") {
					t.Errorf("%s (insecure %v): err %v, log %q; want allowed, with an info line", tt.addr, insecure, err, logs.String())
				}
			case insecure:
				if err != nil || !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "--insecure-no-auth") {
					t.Errorf("%s with --insecure-no-auth: err %v, log %q; want allowed, with a warning", tt.addr, err, logs.String())
				}
			default:
				if err == nil || !strings.Contains(err.Error(), "--insecure-no-auth") || !strings.Contains(err.Error(), "--jwt-secret-file") {
					t.Errorf("%s: err %v; want a refusal naming the ways out", tt.addr, err)
				}
			}
		}
	}
}

// TestServeAuthRefusals checks that bad token settings stop the server
// before it touches the database, with an error naming the problem.
func TestServeAuthRefusals(t *testing.T) {
	t.Parallel()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	secret := writeFile(t, "secret", []byte(strings.Repeat("s", 40)+"\n"))
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"short secret", []string{"--jwt-secret-file", writeFile(t, "short", []byte("hunter2\n"))}, "at least 32 bytes"},
		{"empty secret", []string{"--jwt-secret-file", writeFile(t, "empty", nil)}, "at least 32 bytes"},
		{"secret is a directory", []string{"--jwt-secret-file", t.TempDir()}, "--jwt-secret-file"},
		{"unreadable secret", []string{"--jwt-secret-file", filepath.Join(t.TempDir(), "nope")}, "no such file"},
		{"key not PEM", []string{"--jwt-public-key", writeFile(t, "k.pem", []byte("ssh-rsa AAAA"))}, "no PEM block"},
		{"private key", []string{"--jwt-public-key", writeFile(t, "k.pem", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}))}, "public key only"},
		{"both keys", []string{"--jwt-secret-file", secret, "--jwt-public-key", writeFile(t, "k.pem", publicPEM(t, &rsaKey.PublicKey))}, "exclude each other"},
		{"insecure with a key", []string{"--jwt-secret-file", secret, "--insecure-no-auth"}, "contradicts"},
		{"all interfaces without a key", []string{"--addr", "0.0.0.0:0"}, "--insecure-no-auth"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expectRefusedServe(t, tt.args, tt.wantErr)
		})
	}
}

// TestServeWithSecret runs the server with an HMAC secret and checks the
// whole path: refusals, publishing with a header, following with the
// token in the query (as EventSource does), a backup with an admin token,
// and a debug log that never shows a token.
func TestServeWithSecret(t *testing.T) {
	t.Parallel()
	secret := []byte("a-secret-of-at-least-thirty-two-bytes!")
	// The file's trailing newline is not part of the secret.
	file := writeFile(t, "secret", append(secret, '\n'))
	db := filepath.Join(t.TempDir(), "x.db")
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", db, "--jwt-secret-file", file, "--log-level", "debug")
	client := tokenFor(t, jwt.SigningMethodHS256, secret, map[string]any{"publish": []string{"orders"}, "subscribe": []string{"orders"}})
	admin := tokenFor(t, jwt.SigningMethodHS512, secret, map[string]any{"admin": true})

	status, hdr, body := send(t, "POST", srv.eventsURL("orders"), `{"data":1}`, "")
	if status != http.StatusUnauthorized || hdr.Get("WWW-Authenticate") == "" || !json.Valid([]byte(body)) {
		t.Fatalf("publish without a token: %d %v %s", status, hdr, body)
	}
	if status, _, body := send(t, "POST", srv.eventsURL("secret"), `{"data":1}`, client); status != http.StatusForbidden {
		t.Fatalf("publish to an ungranted stream: %d %s", status, body)
	}
	if status, _, body := send(t, "GET", srv.URL+"/healthz", "", ""); status != http.StatusOK {
		t.Fatalf("healthz: %d %s", status, body)
	}

	sub := subscribe(t, srv.eventsURL("orders")+"?access_token="+url.QueryEscape(client), "")
	var want []sseEvent
	for i := range 3 {
		data := `{"n":` + string(rune('0'+i)) + `}`
		status, _, body := send(t, "POST", srv.eventsURL("orders"), `{"type":"t","data":`+data+`}`, client)
		var out struct{ ID string }
		if status != http.StatusCreated || json.Unmarshal([]byte(body), &out) != nil {
			t.Fatalf("publish: %d %s", status, body)
		}
		want = append(want, sseEvent{ID: out.ID, Type: "t", Data: data})
	}
	if d := diffEvents(sub.waitFor(t, 3), want); d != "" {
		t.Fatal(d)
	}

	out := filepath.Join(t.TempDir(), "backup.db")
	if _, _, err := runQuick(t, "backup", "--url", srv.URL, "--out", out, "--token", client); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("backup with a non-admin token: %v, want a 403", err)
	}
	if _, _, err := runQuick(t, "backup", "--url", srv.URL, "--out", out, "--token", admin); err != nil {
		t.Fatalf("backup with an admin token: %v", err)
	}

	srv.stop(t)
	logs := srv.stderr.String()
	if !strings.Contains(logs, "request refused") {
		t.Fatalf("no refusal logged at debug level; the next check would prove nothing:\n%s", logs)
	}
	for _, tok := range []string{client, admin} {
		if sig := tok[strings.LastIndexByte(tok, '.')+1:]; strings.Contains(logs, sig) {
			t.Fatalf("the log holds a token:\n%s", logs)
		}
	}
	if got := storedEvents(t, testkit.OpenAt(t, out, store.Options{}), "orders"); diffEvents(got, want) != "" {
		t.Errorf("backup: %s", diffEvents(got, want))
	}
}

// TestServeWithPublicKey runs the server with each kind of public key,
// read from a PEM file, and publishes with a token its private half signed.
func TestServeWithPublicKey(t *testing.T) {
	t.Parallel()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		name   string
		pub    crypto.PublicKey
		method jwt.SigningMethod
		priv   any
	}{
		{"RSA", &rsaKey.PublicKey, jwt.SigningMethodRS256, rsaKey},
		{"ECDSA P-256", &ecKey.PublicKey, jwt.SigningMethodES256, ecKey},
		{"Ed25519", edPub, jwt.SigningMethodEdDSA, edKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			key := writeFile(t, "key.pem", publicPEM(t, tt.pub))
			srv := startServer(t, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "x.db"), "--jwt-public-key", key)
			tok := tokenFor(t, tt.method, tt.priv, map[string]any{"publish": []string{"*"}})
			if status, _, body := send(t, "POST", srv.eventsURL("x"), `{"data":1}`, tok); status != http.StatusCreated {
				t.Fatalf("publish: %d %s", status, body)
			}
			hs := tokenFor(t, jwt.SigningMethodHS256, publicPEM(t, tt.pub), map[string]any{"publish": []string{"*"}})
			if status, _, body := send(t, "POST", srv.eventsURL("x"), `{"data":1}`, hs); status != http.StatusUnauthorized {
				t.Fatalf("HS256 token signed with the public key: %d %s", status, body)
			}
		})
	}
}
