package httpapi

import (
	"strings"
	"testing"
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

// BenchmarkPatternsMeet is the widest request's check against many
// grants: 64 patterns of 256 characters against 20 grants (the decision
// a token holder can make the server take on every merged request).
func BenchmarkPatternsMeet(b *testing.B) {
	p := strings.Repeat("*a", 128)
	g := strings.Repeat("b*", 14)
	for b.Loop() {
		for range 64 * 20 {
			if !patternsMeet(p, g) {
				b.Fatal("*a... and b*... share names")
			}
		}
	}
}
