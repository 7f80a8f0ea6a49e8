package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// exportedNames scrapes a running server and returns the names of its
// metrics, histograms' series included.
func exportedNames(t *testing.T) map[string]bool {
	t.Helper()
	srv := startServer(t, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "d.db"))
	publishOne(t, srv.eventsURL("s"), "t", `1`)
	names := make(map[string]bool)
	for name, f := range scrape(t, srv.URL+"/metrics", "") {
		names[name] = true
		if f.GetType().String() == "HISTOGRAM" {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				names[name+suffix] = true
			}
		}
	}
	return names
}

var metricName = regexp.MustCompile(`\b(sselog|go|process)_[a-z_]+\b`)

// TestDeployMonitoring: the Grafana dashboard and the alert rules under
// deploy/ name only metrics the server exports, and the rules pass
// promtool where it is installed (Debian's prometheus package; CI sets
// SSELOG_PROMTOOL_TEST=1 and installs it).
func TestDeployMonitoring(t *testing.T) {
	names := exportedNames(t)
	dash, err := os.ReadFile("../../deploy/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(dash, &d); err != nil || len(d.Panels) == 0 {
		t.Fatalf("deploy/grafana-dashboard.json: %v (%d panels)", err, len(d.Panels))
	}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			for _, n := range metricName.FindAllString(tg.Expr, -1) {
				if !names[n] {
					t.Errorf("dashboard panel %q uses %s, which the server does not export", p.Title, n)
				}
			}
		}
	}
	rules, err := os.ReadFile("../../deploy/prometheus-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(rules), "\n") {
		if expr, ok := strings.CutPrefix(strings.TrimSpace(line), "expr:"); ok {
			for _, n := range metricName.FindAllString(expr, -1) {
				if !names[n] {
					t.Errorf("alert rule %q uses %s, which the server does not export", strings.TrimSpace(expr), n)
				}
			}
		}
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("SSELOG_PROMTOOL_TEST") == "1" {
			t.Fatal("SSELOG_PROMTOOL_TEST=1 and no promtool: install Debian's prometheus package")
		}
		t.Skip("no promtool (Debian's prometheus package): the rules' names are checked, their syntax is not")
	}
	out, err := exec.Command(promtool, "check", "rules", "../../deploy/prometheus-rules.yml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
