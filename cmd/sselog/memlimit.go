package main

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
)

// fallbackMemoryLimit is the default --memory-limit where the machine's
// memory cannot be read.
const fallbackMemoryLimit = 1 << 30

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

// cgroupMemory is the memory limit of the process's cgroup (v2, then v1),
// or 0 when it has none.
func cgroupMemory() int64 {
	for _, path := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
		if err != nil {
			continue // "max": no limit
		}
		return n
	}
	return 0
}
