package main

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// fallbackMemoryLimit is the default --memory-limit where the machine's
// memory cannot be read.
const fallbackMemoryLimit = 1 << 30

// minMemoryLimit is the lowest --memory-limit accepted: below it the
// collector would run without pause on an ordinary server's live heap.
const minMemoryLimit = 64 << 20

// defaultMemoryLimit is half the memory the process may use: its cgroup's
// limit when it has one (a container), else the machine's memory. Half,
// because the limit is soft and the process shares its machine: the
// collector works harder from there on instead of letting GOGC's
// headroom (five times the live heap, see defaultGCPercent) take the rest.
func defaultMemoryLimit() int64 {
	total := machineMemory()
	if total <= 0 {
		return fallbackMemoryLimit
	}
	if cg := cgroupMemory(); cg > 0 && cg < total {
		total = cg
	}
	return total / 2 &^ (1<<20 - 1) // whole MiB, as -h shows it
}

// machineMemory is MemTotal from /proc/meminfo, or 0.
func machineMemory() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// MemTotal:       24592040 kB
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// cgroupMemory is the memory limit of the process's cgroup, or 0 when it
// has none: the smallest limit set on the process's own group or one of
// its ancestors, under cgroup v2, else under v1's memory controller
// (machines may mount both).
func cgroupMemory() int64 {
	v2, v1 := cgroupPaths()
	if v2 != "" {
		// Mounted alone, or beside v1 ("hybrid").
		for _, root := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
			if n := leastLimit(root, v2, "memory.max"); n > 0 {
				return n
			}
		}
	}
	if v1 != "" {
		return leastLimit("/sys/fs/cgroup/memory", v1, "memory.limit_in_bytes")
	}
	return 0
}

// cgroupPaths are the process's cgroup v2 path ("0::/system.slice/x") and
// its v1 memory controller's ("4:memory:/x"), from /proc/self/cgroup.
func cgroupPaths() (v2, v1 string) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		_, rest, _ := strings.Cut(line, ":")
		controllers, path, ok := strings.Cut(rest, ":")
		switch {
		case !ok:
		case controllers == "":
			v2 = filepath.Clean("/" + path)
		case slices.Contains(strings.Split(controllers, ","), "memory"):
			v1 = filepath.Clean("/" + path)
		}
	}
	return v2, v1
}

// leastLimit is the smallest limit in file along dir and its ancestors
// under root, or 0.
func leastLimit(root, dir, file string) int64 {
	least := int64(0)
	for {
		if n := readLimit(filepath.Join(root, dir, file)); n > 0 && (least == 0 || n < least) {
			least = n
		}
		if dir == "/" || dir == "." {
			return least
		}
		dir = filepath.Dir(dir)
	}
}

// readLimit reads a cgroup memory limit file: a number of bytes, or "max"
// (or a missing file) for none, which is 0.
func readLimit(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
	if err != nil || n >= 1<<62 {
		return 0 // v1 writes "no limit" as a number near 2^63
	}
	return n
}
