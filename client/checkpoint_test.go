package client_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/sselog/sselog/client"
	"github.com/sselog/sselog/internal/testkit"
)

// TestFileCheckpoint: no file is no checkpoint; a saved id loads back;
// a later one replaces it; nothing is left beside the file; a file that
// holds no id is an error, not a fresh start.
func TestFileCheckpoint(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "consumer.checkpoint")
	cp := client.NewFileCheckpoint(path)
	ctx := t.Context()
	if id, err := cp.Load(ctx); id != "" || err != nil {
		t.Fatalf("no file: %q, %v; want no checkpoint", id, err)
	}
	from, err := client.Resume(ctx, cp, client.Beginning())
	if err != nil || from != client.Beginning() {
		t.Errorf("Resume without a checkpoint: %v, %v; want the beginning", from, err)
	}
	ids := []string{"01JDX3ZJ1P8V6Y5C4Q2W7N9K0A", "01JDX3ZJ1P8V6Y5C4Q2W7N9K0B"}
	for _, id := range ids {
		if err := cp.Save(ctx, id); err != nil {
			t.Fatal(err)
		}
		if got, err := client.NewFileCheckpoint(path).Load(ctx); got != id || err != nil {
			t.Fatalf("after saving %s: %q, %v", id, got, err)
		}
	}
	if from, err := client.Resume(ctx, cp, client.Beginning()); err != nil || from.ID() != ids[1] {
		t.Errorf("Resume: %v, %v; want after %s", from, err, ids[1])
	}
	if b, _ := os.ReadFile(path); string(b) != ids[1]+"\n" {
		t.Errorf("file holds %q", b)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %v, want the checkpoint alone", entries)
	}
	if err := cp.Save(ctx, "not an id"); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("saving a non-id: %v, want ErrInvalid", err)
	}
	for _, bad := range []string{"", "garbage\n", ids[0] + "\n" + ids[1] + "\n"} {
		if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if id, err := cp.Load(ctx); err == nil {
			t.Errorf("file %q loads as %q, want an error", bad, id)
		}
	}
}

// TestFileCheckpointNoDirectory: a checkpoint whose directory is missing,
// or is a file, fails to Load, rather than loading as "nothing saved" and
// failing at the first Save.
func TestFileCheckpointNoDirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(dir, "missing", "c.checkpoint"), filepath.Join(file, "c.checkpoint")} {
		cp := client.NewFileCheckpoint(path)
		if id, err := cp.Load(t.Context()); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %q, %v; want an error naming the checkpoint", path, id, err)
		}
		if _, err := client.Resume(t.Context(), cp, client.Live()); err == nil {
			t.Errorf("%s: Resume started", path)
		}
	}
}

// checkpointChildEnv carries the checkpoint file to TestHelperCheckpoint.
const checkpointChildEnv = "TEST_SSELOG_CHECKPOINT_FILE"

// TestHelperCheckpoint is not a test: it is the body of the child process
// TestFileCheckpointSurvivesKill starts. It saves increasing ids as fast
// as it can, and writes each one's number to stdout once Save returned.
func TestHelperCheckpoint(t *testing.T) {
	path, ok := os.LookupEnv(checkpointChildEnv)
	if !ok {
		t.Skip("the body of a child process, run by TestFileCheckpointSurvivesKill")
	}
	cp := client.NewFileCheckpoint(path)
	for i := 1; ; i++ {
		if err := cp.Save(context.Background(), checkpointID(i)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		fmt.Fprintln(os.Stdout, i)
	}
}

// checkpointID is the i-th id the child saves.
func checkpointID(i int) string {
	return ulid.ULID{15: byte(i), 14: byte(i >> 8), 13: byte(i >> 16)}.String()
}

// TestFileCheckpointSurvivesKill: a process saving checkpoints is
// SIGKILLed at arbitrary points, inside Save as often as not. Every time,
// the file holds an id the process saved, no older than the last one it
// reported saved (nor newer than the one after): never a torn or empty
// file, never a step back.
func TestFileCheckpointSurvivesKill(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "consumer.checkpoint")
	for round := range 5 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperCheckpoint$", "-test.count=1")
		cmd.Env = append(os.Environ(), checkpointChildEnv+"="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Read the reports as they come; kill after some dozens of saves.
		var mu sync.Mutex
		reported := 0
		lines := make(chan struct{}, 1)
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				n, err := strconv.Atoi(sc.Text())
				if err != nil {
					continue // a half-written number at the kill
				}
				mu.Lock()
				reported = n
				mu.Unlock()
				select {
				case lines <- struct{}{}:
				default:
				}
			}
			_, _ = io.Copy(io.Discard, out)
		}()
		target := 20 + round*17
		deadline := time.NewTimer(testkit.Wait)
		for {
			mu.Lock()
			n := reported
			mu.Unlock()
			if n >= target {
				break
			}
			select {
			case <-lines:
			case <-deadline.C:
				_ = cmd.Process.Kill()
				t.Fatalf("round %d: the child saved %d checkpoints in %v\n%s", round, n, testkit.Wait, stderr.String())
			}
		}
		deadline.Stop()
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-readDone
		_ = cmd.Wait()
		mu.Lock()
		last := reported
		mu.Unlock()

		got, err := client.NewFileCheckpoint(path).Load(t.Context())
		if err != nil {
			t.Fatalf("round %d: after SIGKILL: %v", round, err)
		}
		if got != checkpointID(last) && got != checkpointID(last+1) {
			t.Fatalf("round %d: the file holds %s; the child last reported %s saved", round, got, checkpointID(last))
		}
	}
}
