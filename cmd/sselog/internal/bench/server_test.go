package bench

import (
	"os"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestParseRSS(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		want    int64
		wantErr bool
	}{
		{"linux status", "Name:\tsselog\nVmPeak:\t 1000 kB\nVmRSS:\t   12345 kB\nRssAnon:\t 100 kB\n", 12345 << 10, false},
		{"no VmRSS", "Name:\tkthreadd\nState:\tS\n", 0, true},
		{"odd unit", "VmRSS:\t12 MB\n", 0, true},
		{"not a number", "VmRSS:\tlots kB\n", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseRSS([]byte(tc.status))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("parseRSS = %d, %v; want %d, error %t", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestReadOwnProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	debug.FreeOSMemory() // so that the allocation below takes new pages
	rss, err := readRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// A Go test binary is several megabytes resident and far from a terabyte.
	if rss < 1<<20 || rss > 1<<40 {
		t.Fatalf("own VmRSS = %d bytes, not plausible", rss)
	}
	// Growing the heap by 32 MiB of touched memory shows in the reading.
	ballast := make([]byte, 32<<20)
	for i := range ballast {
		ballast[i] = 1
	}
	grown, err := readRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if grown-rss < 16<<20 {
		t.Fatalf("VmRSS grew by %d bytes after touching 32 MiB", grown-rss)
	}
	runtime.KeepAlive(ballast)

	before, err := readCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(100 * time.Millisecond); time.Now().Before(end); {
	}
	after, err := readCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after <= before || after-before > 10*time.Second {
		t.Fatalf("CPU time went from %v to %v over 100ms of spinning", before, after)
	}
	if _, err := readRSS(-1); err == nil {
		t.Fatal("no error for a process that cannot exist")
	}
}

func TestStable(t *testing.T) {
	tests := []struct {
		samples []int64
		want    bool
	}{
		{[]int64{100 << 20, 100 << 20, 100 << 20, 100 << 20}, true},
		{[]int64{100 << 20, 100<<20 + 100<<10, 100 << 20, 100<<20 - 100<<10}, true},
		{[]int64{100 << 20, 101 << 20, 102 << 20, 103 << 20}, false},
	}
	for _, tc := range tests {
		if got := stable(tc.samples); got != tc.want {
			t.Errorf("stable(%v) = %t, want %t", tc.samples, got, tc.want)
		}
	}
}
