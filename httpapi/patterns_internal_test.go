package httpapi

import (
	"strings"
	"testing"
	"time"
)

// TestPatternsMeet holds patternsMeet to a brute force: every pair of
// patterns of up to 4 characters over {a, b, *} meets exactly when some
// string of up to 8 characters over {a, b} matches both.
func TestPatternsMeet(t *testing.T) {
	var patterns []string
	var gen func(prefix string)
	gen = func(prefix string) {
		patterns = append(patterns, prefix)
		if len(prefix) == 4 {
			return
		}
		for _, c := range []string{"a", "b", "*"} {
			gen(prefix + c)
		}
	}
	gen("")
	var words []string
	var genW func(prefix string)
	genW = func(prefix string) {
		words = append(words, prefix)
		if len(prefix) == 8 {
			return
		}
		genW(prefix + "a")
		genW(prefix + "b")
	}
	genW("")
	for _, p := range patterns {
		for _, q := range patterns {
			want := false
			for _, w := range words {
				if matchPattern(p, w) && matchPattern(q, w) {
					want = true
					break
				}
			}
			if got := patternsMeet(p, q); got != want {
				t.Fatalf("patternsMeet(%q, %q) = %v, want %v", p, q, got, want)
			}
		}
	}
}

// TestPatternsMeetCost: the widest request against many grants costs
// little: 64 patterns of 256 characters against 20 grants.
func TestPatternsMeetCost(t *testing.T) {
	p := strings.Repeat("*a", 128)
	g := strings.Repeat("b*", 14)
	start := time.Now()
	for range 64 * 20 {
		if patternsMeet(p, g) != true {
			t.Fatal("*a... and b*... share names")
		}
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("64×20 pairs took %v", d)
	}
}
