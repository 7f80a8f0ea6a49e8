package main

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/sselog/sselog/internal/testkit"
)

// scrape reads /metrics at url and parses it as Prometheus text.
func scrape(t *testing.T, url, token string) map[string]*dto.MetricFamily {
	t.Helper()
	status, _, body := send(t, http.MethodGet, url, "", token)
	if status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, status, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("%s is not the Prometheus text format: %v", url, err)
	}
	out := make(map[string]*dto.MetricFamily, len(families))
	for name, f := range families {
		out[name] = f
	}
	return out
}

// value is a metric's value (a counter, a gauge, or a histogram's count)
// for the labels given as name=value pairs.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
	for _, m := range f.GetMetric() {
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			match = match && found
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no %s with labels %v", name, labels)
	return 0
}

// TestMetrics publishes, refuses a publish, follows a stream and lets
// retention trim, then reads every metric the issue names from GET
// /metrics: each moved as the server worked, and no label holds a stream
// name.
func TestMetrics(t *testing.T) {
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "m.db"), "--retain-events", "2", "--retain-interval", "20ms", "--retain-age", "0")
	url := srv.eventsURL("orders.secret-name")
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Wait)
	defer cancel()
	c, err := testkit.DialSSE(ctx, http.DefaultClient, url+"?last_event_id=00000000000000000000000000", "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	publishOne(t, url, "t", `1`)
	publishBatch(t, url, `2`, `3`)
	if status, _, _ := post(url, `{"data":`); status != http.StatusBadRequest {
		t.Fatalf("malformed publish: %d", status)
	}
	for range 3 {
		if _, err := c.NextEvent(); err != nil {
			t.Fatal(err)
		}
	}
	var fams map[string]*dto.MetricFamily
	testkit.WaitFor(t, "retention to trim and the metrics to show it", func() bool {
		fams = scrape(t, srv.URL+"/metrics", "")
		f, ok := fams["sselog_retention_removed_events_total"]
		return ok && f.GetMetric()[0].GetCounter().GetValue() >= 1
	})
	for _, want := range []struct {
		name   string
		labels []string
		min    float64
		max    float64
	}{
		{"sselog_events_appended_total", nil, 3, 3},
		{"sselog_publish_requests_total", []string{"code", "201"}, 2, 2},
		{"sselog_publish_requests_total", []string{"code", "400"}, 1, 1},
		{"sselog_commit_duration_seconds", nil, 2, 2},
		{"sselog_commit_events", nil, 2, 2},
		{"sselog_commit_failures_total", nil, 0, 0},
		{"sselog_publish_requests_total", []string{"code", "503"}, 0, 0},
		{"sselog_subscribers", nil, 1, 1},
		{"sselog_events_delivered_total", nil, 3, 3},
		{"sselog_replay_events_total", nil, 0, 3},
		{"sselog_retention_removed_events_total", nil, 1, 1},
		{"sselog_streams", nil, 1, 1},
		{"sselog_db_size_bytes", nil, 1, 1 << 40},
		{"go_goroutines", nil, 1, 1e6},
		{"process_resident_memory_bytes", nil, 1, 1 << 40},
	} {
		if got := value(t, fams, want.name, want.labels...); got < want.min || got > want.max {
			t.Errorf("%s%v = %v, want %v to %v", want.name, want.labels, got, want.min, want.max)
		}
	}
	_, _, text := send(t, http.MethodGet, srv.URL+"/metrics", "", "")
	if strings.Contains(text, "secret-name") {
		t.Fatal("a metric carries a stream name")
	}
	if !regexp.MustCompile(`sselog_commit_events_sum 3\b`).MatchString(text) {
		t.Errorf("sselog_commit_events_sum is not the 3 events stored:\n%s", grep(text, "sselog_commit_events"))
	}
}

func grep(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestMetricsAccess: with a token key, /metrics answers admin tokens only;
// with --metrics-addr it is served on that listener without a token, and
// not on the API's; with --metrics=false nowhere.
func TestMetricsAccess(t *testing.T) {
	secret := []byte("a-secret-of-at-least-thirty-two-bytes!")
	file := writeFile(t, "secret", secret)
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "a.db"), "--jwt-secret-file", file)
	admin := tokenFor(t, jwt.SigningMethodHS256, secret, map[string]any{"admin": true})
	reader := tokenFor(t, jwt.SigningMethodHS256, secret, map[string]any{"subscribe": []string{"*"}})
	if status, _, _ := send(t, http.MethodGet, srv.URL+"/metrics", "", ""); status != http.StatusUnauthorized {
		t.Fatalf("no token: %d", status)
	}
	if status, _, _ := send(t, http.MethodGet, srv.URL+"/metrics", "", reader); status != http.StatusForbidden {
		t.Fatalf("a subscribe token: %d", status)
	}
	scrape(t, srv.URL+"/metrics", admin)

	apart := startServer(t, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "b.db"), "--jwt-secret-file", file, "--metrics-addr", "127.0.0.1:0")
	var addr string
	testkit.WaitFor(t, "the metrics listener's address in the log", func() bool {
		m := regexp.MustCompile(`addr=http://(127\.0\.0\.1:\d+)/metrics`).FindStringSubmatch(apart.stderr.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	fams := scrape(t, "http://"+addr+"/metrics", "")
	if _, ok := fams["sselog_subscribers"]; !ok {
		t.Fatal("the separate listener lacks sselog_subscribers")
	}
	if status, _, _ := send(t, http.MethodGet, apart.URL+"/metrics", "", admin); status != http.StatusNotFound {
		t.Fatalf("/metrics on the API's listener with --metrics-addr: %d, want 404", status)
	}

	off := startServer(t, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "c.db"), "--metrics=false")
	resp, err := httpClient.Get(off.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("--metrics=false: /metrics %d", resp.StatusCode)
	}
}
