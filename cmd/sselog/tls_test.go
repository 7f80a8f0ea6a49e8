package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// selfSigned writes a certificate for 127.0.0.1 and localhost, and its key,
// to a temporary directory, and returns their paths and a pool that trusts
// the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sselog test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = writeFile(t, "cert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	keyFile = writeFile(t, "key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestServeTLS serves HTTPS with a self-signed certificate and checks that
// a client trusting it speaks HTTP/2, publishes, and follows two SSE
// streams at once on its one connection; and that an HTTP/1.1 client over
// TLS streams too.
func TestServeTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := selfSigned(t)
	db := filepath.Join(t.TempDir(), "x.db")
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", db, "--tls-cert", certFile, "--tls-key", keyFile, "--heartbeat", "1h")
	if !strings.HasPrefix(srv.URL, "https://") {
		t.Fatalf("serving on %s, want https", srv.URL)
	}

	var handshakes atomic.Int32
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{
			RootCAs: pool,
			VerifyConnection: func(tls.ConnectionState) error {
				handshakes.Add(1)
				return nil
			},
		},
		ForceAttemptHTTP2: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}

	resp, err := client.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %s, status %d; want HTTP/2 and 200", resp.Proto, resp.StatusCode)
	}

	streams := []string{"a", "b"}
	subs := make([]*sseStream, len(streams))
	for i, name := range streams {
		var resp *http.Response
		subs[i], resp = subscribeWith(t, client, srv.eventsURL(name), zeroID)
		if resp.ProtoMajor != 2 {
			t.Fatalf("stream %s: %s, want HTTP/2", name, resp.Proto)
		}
	}
	want := map[string][]sseEvent{}
	for i := range 4 {
		name := streams[i%2]
		data := fmt.Sprintf(`{"n":%d}`, i)
		resp, err := client.Post(srv.eventsURL(name), "application/json", strings.NewReader(`{"type":"t","data":`+data+`}`))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var id string
		if _, err := fmt.Sscanf(string(b), `{"id":%q}`, &id); err != nil || resp.StatusCode != http.StatusCreated || resp.ProtoMajor != 2 {
			t.Fatalf("publish over %s: %d %s (%v)", resp.Proto, resp.StatusCode, b, err)
		}
		want[name] = append(want[name], sseEvent{ID: id, Type: "t", Data: data})
	}
	for i, name := range streams {
		if d := diffEvents(subs[i].waitFor(t, len(want[name])), want[name]); d != "" {
			t.Errorf("stream %s: %s", name, d)
		}
	}
	if n := handshakes.Load(); n != 1 {
		t.Errorf("%d TLS handshakes, want 1: both streams and every publish share one HTTP/2 connection", n)
	}

	// HTTP/1.1 over TLS: the stream runs on the connection taken over
	// from net/http.
	h1 := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	t.Cleanup(h1.CloseIdleConnections)
	sub, resp := subscribeWith(t, &http.Client{Transport: h1}, srv.eventsURL("a"), zeroID)
	if resp.ProtoMajor != 1 {
		t.Fatalf("%s, want HTTP/1.1", resp.Proto)
	}
	if d := diffEvents(sub.waitFor(t, len(want["a"])), want["a"]); d != "" {
		t.Errorf("HTTP/1.1 stream: %s", d)
	}

	// Plain HTTP to the HTTPS port is refused, not served.
	plain := "http://" + strings.TrimPrefix(srv.URL, "https://")
	if resp, err := httpClient.Get(plain + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the TLS port: %d, want 400", resp.StatusCode)
		}
	}
	srv.stop(t)
	for i := range subs {
		if _, err := subs[i].waitEnd(t); !errors.Is(err, io.EOF) {
			t.Errorf("stream %s ended with %v, want a clean end", streams[i], err)
		}
	}
}

// TestServeTLSRefusals checks that bad certificate settings stop the
// server with a clear error.
func TestServeTLSRefusals(t *testing.T) {
	t.Parallel()
	certFile, keyFile, _ := selfSigned(t)
	otherCert, _, _ := selfSigned(t)
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"key does not match", []string{"--tls-cert", otherCert, "--tls-key", keyFile}, "private key does not match"},
		{"swapped files", []string{"--tls-cert", keyFile, "--tls-key", certFile}, "--tls-cert"},
		{"not PEM", []string{"--tls-cert", writeFile(t, "c.pem", []byte("nope")), "--tls-key", keyFile}, "--tls-cert"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := filepath.Join(t.TempDir(), "x.db")
			_, _, err := runQuick(t, append([]string{"serve", "--addr", "127.0.0.1:0", "--db", db}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
