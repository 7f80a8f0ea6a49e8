package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// readRepoFile reads a file by its path from the repository's root; go
// test runs in this package's directory.
func readRepoFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", filepath.FromSlash(path)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestReadmeQuotesNginxConf checks that the configuration the README shows
// under "Behind nginx" is deploy/nginx.conf, the file TestNginx runs.
func TestReadmeQuotesNginxConf(t *testing.T) {
	t.Parallel()
	readme := readRepoFile(t, "README.md")
	_, section, ok := strings.Cut(readme, "\n### Behind nginx\n")
	if !ok {
		t.Fatal(`README.md has no "### Behind nginx" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	_, block, ok := strings.Cut(section, "\n```nginx\n")
	if !ok {
		t.Fatal(`README.md's "Behind nginx" section has no nginx code block`)
	}
	block, _, ok = strings.Cut(block, "\n```\n")
	if !ok {
		t.Fatal(`README.md's nginx code block is not closed`)
	}
	if want := readRepoFile(t, "deploy/nginx.conf"); block+"\n" != want {
		t.Errorf("README.md's nginx block differs from deploy/nginx.conf: copy the file into the README\nREADME:\n%s\nfile:\n%s", block, want)
	}
}

// unitExecStart returns the arguments of deploy/sselog.service's ExecStart.
func unitExecStart(t *testing.T, unit string) []string {
	t.Helper()
	var args []string
	for line := range strings.Lines(unit) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "ExecStart="); ok {
			if args != nil || strings.HasSuffix(v, `\`) {
				t.Fatalf("deploy/sselog.service: want one ExecStart on one line, have %q", line)
			}
			args = strings.Fields(v)
		}
	}
	if len(args) < 2 || args[1] != "serve" {
		t.Fatalf("deploy/sselog.service: ExecStart %q is not sselog serve", args)
	}
	return args
}

// unitExposure is the most "systemd-analyze security" may rate
// deploy/sselog.service, in tenths: 12 is the "1.2 OK" that systemd 252
// (Debian 12's) gives it. Dropping any hardening line that DynamicUser=yes
// does not imply (CapabilityBoundingSet=, SystemCallFilter=, Protect*=,
// Restrict*=, PrivateDevices=, IPAddressDeny=, ...) raises the rating past
// it. A systemd that weighs the options otherwise may rate the same file
// differently: then read its report and set the figure anew.
const unitExposure = 12

// TestSystemdUnitVerifies runs systemd-analyze verify on
// deploy/sselog.service and requires it to find nothing to say, then
// requires systemd-analyze security to rate its exposure at most
// unitExposure.
func TestSystemdUnitVerifies(t *testing.T) {
	t.Parallel()
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("no systemd-analyze in PATH (Debian's systemd package has it)")
	}
	unit := readRepoFile(t, "deploy/sselog.service")
	// verify checks that ExecStart's program exists and is executable, and
	// /usr/local/bin/sselog is not installed where the tests run: point it
	// at this test binary, an executable that is there, and keep every
	// other line as it is.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := unitExecStart(t, unit)[0]
	if n := strings.Count(unit, "ExecStart="+bin+" "); n != 1 {
		t.Fatalf("deploy/sselog.service: ExecStart=%s found %d times", bin, n)
	}
	unit = strings.Replace(unit, "ExecStart="+bin+" ", "ExecStart="+self+" ", 1)
	// The unit's name comes from its file name.
	path := filepath.Join(t.TempDir(), "sselog.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", "--man=no", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("systemd-analyze verify deploy/sselog.service: %v\n%s", err, out)
	}
	// --offline rates the file as it is, not a unit loaded in a running
	// systemd (there is none where CI runs).
	out, err = exec.Command(analyze, "security", "--offline=yes", fmt.Sprintf("--threshold=%d", unitExposure), path).CombinedOutput()
	_, level, _ := bytes.Cut(out, []byte("Overall exposure level"))
	if err != nil {
		t.Errorf("systemd-analyze security deploy/sselog.service, threshold %d: %v\n%s", unitExposure, err, out)
	} else {
		t.Logf("systemd-analyze security: overall exposure level %s", bytes.TrimSpace(level))
	}
}

// TestSystemdUnitCommandLine starts sselog with the command line of
// deploy/sselog.service, its paths moved into a temporary directory, and
// checks that it serves, requires tokens signed with the credential's key,
// and listens where deploy/nginx.conf sends requests.
func TestSystemdUnitCommandLine(t *testing.T) {
	t.Parallel()
	args := unitExecStart(t, readRepoFile(t, "deploy/sselog.service"))[2:]
	nginx := readRepoFile(t, "deploy/nginx.conf")

	secret := []byte("a-secret-of-at-least-thirty-two-bytes!")
	credentials := t.TempDir() // what systemd puts at %d
	if err := os.WriteFile(filepath.Join(credentials, "jwt-secret"), append(secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir() // /var/lib/sselog, the StateDirectory
	addr := ""
	for i, a := range args {
		switch {
		case i > 0 && args[i-1] == "--addr":
			addr = a
			args[i] = "127.0.0.1:0"
		case strings.HasPrefix(a, "/var/lib/sselog/"):
			args[i] = filepath.Join(state, strings.TrimPrefix(a, "/var/lib/sselog/"))
		case strings.HasPrefix(a, "%d/"):
			args[i] = filepath.Join(credentials, strings.TrimPrefix(a, "%d/"))
		case strings.Contains(a, "%"):
			t.Fatalf("deploy/sselog.service: ExecStart has the specifier %q, which this test does not stand in for", a)
		}
	}
	if !strings.Contains(nginx, "server "+addr+";") {
		t.Errorf("sselog.service listens on %q, but nginx.conf's upstream is not that address", addr)
	}

	srv := startServer(t, args...)
	if status, _, body := send(t, "POST", srv.eventsURL("orders"), `{"data":1}`, ""); status != http.StatusUnauthorized {
		t.Errorf("publish without a token: %d %s, want 401", status, body)
	}
	token := tokenFor(t, jwt.SigningMethodHS256, secret, map[string]any{"publish": []string{"orders"}})
	if status, _, body := send(t, "POST", srv.eventsURL("orders"), `{"data":1}`, token); status != http.StatusCreated {
		t.Errorf("publish with a token: %d %s, want 201", status, body)
	}
	srv.stop(t)
	if _, err := os.Stat(filepath.Join(state, "sselog.db")); err != nil {
		t.Errorf("the database is not in the state directory: %v", err)
	}
}
