package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestBuckets(t *testing.T) {
	// Every value maps into range, buckets are in value order, and each
	// bucket's top is the largest value that maps to it.
	prev := 0
	for v := int64(0); v < 1<<16; v++ {
		b := bucketOf(v)
		if b < prev || b > prev+1 {
			t.Fatalf("bucketOf(%d) = %d after %d: not contiguous", v, b, prev)
		}
		if b != prev && bucketHigh(prev) != v-1 {
			t.Fatalf("bucketHigh(%d) = %d, want %d", prev, bucketHigh(prev), v-1)
		}
		prev = b
	}
	for _, v := range []int64{-5, 0, 1, 63, 64, 1000, 1 << 30, histMax, histMax + 1, 1 << 62} {
		b := bucketOf(v)
		if b < 0 || b >= histBuckets {
			t.Fatalf("bucketOf(%d) = %d, out of [0, %d)", v, b, histBuckets)
		}
		if v >= 0 && v <= histMax && (bucketHigh(b) < v || (b > 0 && bucketHigh(b-1) >= v)) {
			t.Fatalf("value %d is not within bucket %d (top %d)", v, b, bucketHigh(b))
		}
	}
	if bucketOf(histMax) != histBuckets-1 {
		t.Fatalf("bucketOf(histMax) = %d, want the last bucket %d", bucketOf(histMax), histBuckets-1)
	}
}

func TestQuantileMatchesSortedReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	tests := []struct {
		name string
		gen  func() int64
		n    int
	}{
		{"constant", func() int64 { return 1_234_567 }, 1000},
		{"small exact values", func() int64 { return r.Int64N(64) }, 500},
		{"uniform to 50ms", func() int64 { return r.Int64N(50_000_000) }, 100_000},
		{"log-uniform 1µs to 10s", func() int64 { return int64(1000 * math.Pow(10, r.Float64()*7)) }, 100_000},
		{"one value", func() int64 { return 42_000 }, 1},
		{"bimodal", func() int64 {
			if r.IntN(100) == 0 {
				return 200_000_000 + r.Int64N(1000)
			}
			return 1_000_000 + r.Int64N(1000)
		}, 10_000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h histogram
			ref := make([]int64, tc.n)
			for i := range ref {
				ref[i] = tc.gen()
				h.record(ref[i])
			}
			slices.Sort(ref)
			for _, q := range []float64{0, 0.01, 0.5, 0.9, 0.99, 0.999, 1} {
				want := ref[rankOf(q, int64(len(ref)))-1]
				got := h.quantile(q)
				// The answer is the top of the reference's bucket (clamped to
				// the maximum): never below it, and at most one bucket width
				// (1/histSub of the value) above.
				if got < want || got-want > want/histSub {
					t.Errorf("quantile(%v) = %d, reference %d", q, got, want)
				}
			}
			if h.max != ref[len(ref)-1] || h.min != ref[0] || h.n != int64(tc.n) {
				t.Errorf("min, max, n = %d, %d, %d; want %d, %d, %d", h.min, h.max, h.n, ref[0], ref[len(ref)-1], tc.n)
			}
		})
	}
}

func TestMergeEqualsRecordingAll(t *testing.T) {
	var a, b, all histogram
	for i := range int64(10_000) {
		v := i * i % 9_999_991
		if i%3 == 0 {
			a.record(v)
		} else {
			b.record(v)
		}
		all.record(v)
	}
	var m histogram
	m.merge(&a)
	m.merge(&b)
	m.merge(&histogram{}) // an empty one changes nothing
	if m != all {
		t.Fatalf("merged histogram differs from one that recorded everything: n %d/%d min %d/%d max %d/%d",
			m.n, all.n, m.min, all.min, m.max, all.max)
	}
}

func TestEmptyHistogram(t *testing.T) {
	var h histogram
	if s := h.summary(); s != (latency{}) {
		t.Fatalf("summary of nothing = %+v, want zeros", s)
	}
}

func TestRecordDoesNotAllocate(t *testing.T) {
	h := new(histogram)
	if n := testing.AllocsPerRun(100, func() { h.record(12345) }); n != 0 {
		t.Fatalf("record allocates %v times", n)
	}
}
