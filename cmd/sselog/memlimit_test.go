package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestLeastLimit: a cgroup's limit is the smallest set on it or on an
// ancestor; "max", and v1's number for no limit, are none.
func TestLeastLimit(t *testing.T) {
	root := t.TempDir()
	write := func(dir, v string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, dir, "memory.max"), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("/", "max")
	write("/system.slice", "1073741824")
	write("/system.slice/sselog.service", "max")
	write("/user.slice", "9223372036854771712")
	for _, tt := range []struct {
		dir  string
		want int64
	}{
		{"/system.slice/sselog.service", 1 << 30},
		{"/system.slice", 1 << 30},
		{"/user.slice", 0},
		{"/", 0},
		{"/missing/group", 0},
	} {
		if got := leastLimit(root, tt.dir, "memory.max"); got != tt.want {
			t.Errorf("leastLimit(%s) = %d, want %d", tt.dir, got, tt.want)
		}
	}
}
