// Debian's nginx is the proxy under test; Pdeathsig below is Linux's.
//go:build linux

package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// nginxTestEnv, set to 1 (as .ci/run does), turns a missing nginx from a
// skip into a failure: CI must not pass without having run it.
const nginxTestEnv = "SSELOG_NGINX_TEST"

// nginxRequired is read as the package is initialised, before TestMain
// clears every SSELOG_ variable from the environment.
var nginxRequired = os.Getenv(nginxTestEnv) == "1"

// nginxDelivery is the longest a live event may take to reach a subscriber
// through nginx once its publish is acknowledged. A buffering proxy holds
// events until a buffer fills or the stream ends: seconds, or forever.
const nginxDelivery = 200 * time.Millisecond

// findNginx returns the path of nginx, skipping the test when there is
// none, unless nginxTestEnv says it must run. Debian installs it in
// /usr/sbin, which is not on an unprivileged user's PATH.
func findNginx(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	msg := "no nginx found (in PATH or /usr/sbin); install Debian's nginx to run this test"
	if nginxRequired {
		t.Fatalf("%s, and %s=1 requires it", msg, nginxTestEnv)
	}
	t.Skipf("%s (set %s=1 to make this a failure)", msg, nginxTestEnv)
	return ""
}

// substitute replaces each old string in conf with its new one, failing
// the test unless each occurs exactly once: an edit of deploy/nginx.conf
// that moves one of them has to come with an edit here, not leave the test
// running some other configuration.
func substitute(t *testing.T, conf string, oldNew ...string) string {
	t.Helper()
	for i := 0; i < len(oldNew); i += 2 {
		if n := strings.Count(conf, oldNew[i]); n != 1 {
			t.Fatalf("deploy/nginx.conf has %q %d times, want once", oldNew[i], n)
		}
		conf = strings.Replace(conf, oldNew[i], oldNew[i+1], 1)
	}
	return conf
}

// nginxMain is the nginx.conf the test runs deploy/nginx.conf in, with
// everything nginx writes kept in dir. The http {} settings are those of
// Debian's /etc/nginx/nginx.conf that could change what a client sees,
// its access log among them: deploy/nginx.conf has to keep tokens out of
// that one too.
const nginxMain = `daemon off;
worker_processes 1;
pid {{dir}}/nginx.pid;
error_log stderr;
{{user}}
events {
    worker_connections 256;
}
http {
    sendfile on;
    tcp_nopush on;
    gzip on;
    access_log {{dir}}/access.log;
    client_body_temp_path {{dir}}/client_body;
    proxy_temp_path {{dir}}/proxy;
    fastcgi_temp_path {{dir}}/fastcgi;
    uwsgi_temp_path {{dir}}/uwsgi;
    scgi_temp_path {{dir}}/scgi;
    include {{dir}}/sselog.conf;
}
`

// proxy is a running nginx with deploy/nginx.conf in front of sselog.
type proxy struct {
	URL       string // https://127.0.0.1:port
	accessLog string // the sselog server's, from deploy/nginx.conf
	httpLog   string // the one inherited from http {}
	stderr    *syncBuffer
	roots     *x509.CertPool // trusts the proxy's certificate
}

// startNginx runs nginx with deploy/nginx.conf, its upstream set to
// upstream (host:port), and stops it when the test ends.
func startNginx(t *testing.T, path, upstream string) *proxy {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile, roots := writeCertificate(t, dir)
	port := freePort(t)
	p := &proxy{
		URL:       "https://127.0.0.1:" + port,
		accessLog: filepath.Join(dir, "sselog.log"),
		httpLog:   filepath.Join(dir, "access.log"),
		stderr:    newSyncBuffer(),
		roots:     roots,
	}
	site, err := os.ReadFile(filepath.Join("..", "..", "deploy", "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := substitute(t, string(site),
		"server 127.0.0.1:8080;", "server "+upstream+";",
		"listen 443 ssl http2;", "listen 127.0.0.1:"+port+" ssl http2;",
		"/etc/ssl/events.example.com.pem", certFile,
		"/etc/ssl/events.example.com.key", keyFile,
		"/var/log/nginx/sselog.log", p.accessLog,
	)
	// Run as root (as CI is), nginx's workers would switch to "nobody",
	// who cannot enter the test's directory to write request bodies.
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	mainConf := strings.NewReplacer("{{dir}}", dir, "{{user}}", user).Replace(nginxMain)
	mainFile := filepath.Join(dir, "nginx.conf")
	for name, data := range map[string]string{mainFile: mainConf, filepath.Join(dir, "sselog.conf"): conf} {
		if err := os.WriteFile(name, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// -e stderr: the error log compiled in (/var/log/nginx/error.log) is
	// opened before the configuration is read, and is not ours to write.
	cmd := exec.Command(path, "-p", dir, "-c", mainFile, "-e", "stderr")
	cmd.Stdout, cmd.Stderr = p.stderr, p.stderr
	cmd.WaitDelay = time.Second
	// A test binary that dies (a -timeout panic skips every cleanup)
	// takes nginx with it: SIGTERM makes the master stop its workers too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		// SIGTERM is nginx's fast shutdown: SIGQUIT's graceful one would
		// wait for the streams it proxies to end, which they never do.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(stopTimeout):
			t.Errorf("nginx still running %v after SIGTERM", stopTimeout)
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("nginx stderr:\n%s", p.stderr)
		}
	})

	// Ready when it accepts connections: the master binds before it
	// starts the workers, and the kernel queues connections until one
	// accepts.
	deadline := time.Now().Add(startTimeout)
	for {
		conn, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second)
		if err == nil {
			conn.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("nginx exited before listening (%v):\n%s", waitErr, p.stderr)
		case <-time.After(10 * time.Millisecond): // a poll interval
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx not listening on %s after %v: %v\n%s", port, startTimeout, err, p.stderr)
		}
	}
	return p
}

// client returns a client of the proxy that speaks only the given
// protocol: HTTP/2, as browsers do over TLS, or HTTP/1.1.
func (p *proxy) client(t *testing.T, h2 bool) *http.Client {
	t.Helper()
	protocols := new(http.Protocols)
	protocols.SetHTTP1(!h2)
	protocols.SetHTTP2(h2)
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: p.roots},
		Protocols:       protocols,
		// A buffering proxy holds back an SSE response's head with its
		// first bytes: a subscription then fails instead of hanging.
		ResponseHeaderTimeout: eventTimeout,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// freePort returns a loopback port that was free a moment ago. Another
// process could take it before nginx binds it; nginx then fails to start,
// saying so, rather than the test passing against something else.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, err := net.SplitHostPort(l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// writeCertificate writes a self-signed certificate for 127.0.0.1 and its
// key to dir, and returns their paths and a pool that trusts it.
func writeCertificate(t *testing.T, dir string) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "sselog nginx test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
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
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(cert)
	return certFile, keyFile, roots
}

// publishThrough publishes one untyped event with the given JSON data
// through client, with token in the query (as some publishers do) or as a
// bearer token, and returns its id and when its 201 arrived.
func publishThrough(t *testing.T, client *http.Client, eventsURL, token string, inQuery bool, data string) (string, time.Time) {
	t.Helper()
	u := eventsURL
	if inQuery {
		u += "?access_token=" + url.QueryEscape(token)
	}
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(`{"data":`+data+`}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if !inQuery {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("publish through nginx: %v", err)
	}
	defer resp.Body.Close()
	acked := time.Now()
	var out struct{ ID string }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("publish through nginx: status %d, %v, %+v", resp.StatusCode, err, out)
	}
	return out.ID, acked
}

// spread describes durations as their least, median and greatest.
func spread(ds []time.Duration) string {
	ds = slices.Sorted(slices.Values(ds))
	r := func(d time.Duration) time.Duration { return d.Round(time.Microsecond) }
	return fmt.Sprintf("min %v, median %v, max %v", r(ds[0]), r(ds[len(ds)/2]), r(ds[len(ds)-1]))
}

// TestNginx runs Debian's nginx with deploy/nginx.conf, as the README shows
// it, in front of sselog, and checks what the configuration is for: every
// event reaches a subscriber at once (no buffering), a resume through the
// proxy replays exactly what was missed, bodies up to --max-body pass, and
// the proxy's access logs hold no token. It runs over HTTP/2 (browsers,
// over TLS) and HTTP/1.1; nginx speaks HTTP/1.1 to sselog either way.
//
// Not parallel: the latency bound is for a proxy that is not buffering,
// not for a machine whose cores other tests of this package hold.
func TestNginx(t *testing.T) {
	path := findNginx(t)
	secret := []byte("a-secret-of-at-least-thirty-two-bytes!")
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "x.db"),
		"--jwt-secret-file", writeFile(t, "secret", secret),
		// Heartbeats let quiet see that a replay is complete, and make
		// nginx notice subscribers that left.
		"--heartbeat", "250ms")
	token := tokenFor(t, jwt.SigningMethodHS256, secret, map[string]any{"publish": []string{"orders.*"}, "subscribe": []string{"orders.*"}})
	upstream, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	p := startNginx(t, path, upstream.Host)
	withToken := func(u string) string { return u + "?access_token=" + url.QueryEscape(token) }
	subscriptions := 0 // SSE requests made, each to be logged once it ends

	for _, proto := range []struct {
		name string
		h2   bool
	}{{"HTTP2", true}, {"HTTP1.1", false}} {
		client := p.client(t, proto.h2)
		wantMajor := 1
		if proto.h2 {
			wantMajor = 2
		}
		subscribeProxied := func(t *testing.T, u, lastID string) *sseStream {
			t.Helper()
			sub, resp := subscribeWith(t, client, withToken(u), lastID)
			subscriptions++
			if resp.ProtoMajor != wantMajor {
				t.Fatalf("the proxy answered over %s, want HTTP/%d", resp.Proto, wantMajor)
			}
			if got := resp.Header.Get("Content-Type"); got != "text/event-stream" {
				t.Errorf("Content-Type through nginx: %q", got)
			}
			return sub
		}

		t.Run(proto.name+"/live", func(t *testing.T) {
			u := p.URL + "/v1/streams/orders.live-" + strings.ToLower(proto.name) + "/events"
			// Resuming from an event published first: the stream is then
			// known to follow everything published after it, without
			// depending on when the subscription reached sselog.
			first, _ := publishThrough(t, client, u, token, false, `0`)
			sub := subscribeProxied(t, u, first)
			const n = 20
			var lat, total []time.Duration
			for i := 1; i <= n; i++ {
				sent := time.Now()
				id, acked := publishThrough(t, client, u, token, i%2 == 0, fmt.Sprint(i))
				got := sub.waitFor(t, i)
				// Measured after waitFor returns: a bound on the real delay,
				// and next to nothing when the event was there before the 201.
				d := time.Since(acked)
				lat, total = append(lat, d), append(total, time.Since(sent))
				if e := got[i-1]; e.ID != id || e.Data != fmt.Sprint(i) {
					t.Fatalf("event %d through nginx: %+v, want id %s data %d", i, e, id, i)
				}
				if d >= nginxDelivery {
					t.Errorf("event %d reached the subscriber %v after its publish was acknowledged, want < %v (is the proxy buffering?)", i, d, nginxDelivery)
				}
			}
			t.Logf("%d events through nginx, from the 201 to the subscriber: %s; from the publish request: %s", n, spread(lat), spread(total))
		})

		t.Run(proto.name+"/resume", func(t *testing.T) {
			u := p.URL + "/v1/streams/orders.resume-" + strings.ToLower(proto.name) + "/events"
			var want []sseEvent
			publish := func(data string) {
				id, _ := publishThrough(t, client, u, token, false, data)
				want = append(want, sseEvent{ID: id, Data: data})
			}
			for i := range 3 {
				publish(fmt.Sprint(i))
			}
			sub := subscribeProxied(t, u, zeroID)
			if d := diffEvents(sub.waitFor(t, 3), want); d != "" {
				t.Fatalf("replay through nginx: %s", d)
			}
			sub.close() // the client goes away, as a dropped connection does
			if _, err := sub.waitEnd(t); err == nil {
				t.Fatal("stream ended without an error after its connection was dropped")
			}
			seen := want[len(want)-1].ID
			for i := 3; i < 7; i++ {
				publish(fmt.Sprint(i))
			}
			missed := want[3:]

			again := subscribeProxied(t, u, seen)
			if d := diffEvents(again.quiet(t, len(missed)), missed); d != "" {
				t.Fatalf("resume from %s through nginx: %s", seen, d)
			}
			publish(`"live"`)
			if d := diffEvents(again.waitFor(t, len(missed)+1), want[3:]); d != "" {
				t.Fatalf("live after the resume through nginx: %s", d)
			}
		})

		t.Run(proto.name+"/max-body", func(t *testing.T) {
			// client_max_body_size 1m and --max-body 1MiB are the same
			// 1,048,576 bytes: nginx must pass every body sselog takes.
			u := p.URL + "/v1/streams/orders.big/events"
			for _, tt := range []struct {
				size int
				want int
			}{{1 << 20, http.StatusCreated}, {1<<20 + 1, http.StatusRequestEntityTooLarge}} {
				body := `{"data":"` + strings.Repeat("x", tt.size-len(`{"data":""}`)) + `"}`
				req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+token)
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != tt.want {
					t.Errorf("a body of %d bytes through nginx: %d, want %d", tt.size, resp.StatusCode, tt.want)
				}
			}
		})
	}

	t.Run("logs", func(t *testing.T) {
		// nginx logs a request when it ends: every subscription above has
		// been dropped by its subtest's cleanup, and nginx notices at the
		// next heartbeat it forwards.
		var log string
		deadline := time.Now().Add(eventTimeout)
		for {
			b, err := os.ReadFile(p.accessLog)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			log = string(b)
			if strings.Count(log, "GET /v1/streams/orders.") >= subscriptions {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d subscriptions logged after %v, want %d:\n%s", strings.Count(log, "GET /v1/streams/orders."), eventTimeout, subscriptions, log)
			}
			time.Sleep(10 * time.Millisecond) // a poll interval
		}
		for name, text := range map[string]string{"the sselog access log": log, "nginx's error log": p.stderr.String()} {
			if strings.Contains(text, token) || strings.Contains(text, "access_token") {
				t.Errorf("%s holds the token:\n%s", name, text)
			}
		}
		if b, err := os.ReadFile(p.httpLog); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		} else if len(b) != 0 {
			t.Errorf("the access log of http {} got lines for sselog's server (its format logs the query string):\n%s", b)
		}
		if !strings.Contains(log, `"POST /v1/streams/orders.live-http2/events HTTP/2.0" 201`) {
			t.Errorf("the access log has no line for a publish with the token in its query:\n%s", log)
		}
		t.Logf("%d lines in the access log, e.g. %s", strings.Count(log, "\n"), strings.SplitN(log, "\n", 2)[0])
	})
}
