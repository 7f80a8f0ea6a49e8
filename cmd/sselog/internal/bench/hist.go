package bench

import (
	"math"
	"math/bits"
	"time"
)

// The histogram is log-linear, like HDR histograms: values below 2*histSub
// nanoseconds have a bucket each, and every power of two above that is split
// into histSub buckets, so a bucket is at most 1/histSub (about 3%) of its
// values wide. Values from histMax up land in the last bucket (the exact
// maximum is kept apart).
const (
	histSubBits = 5
	histSub     = 1 << histSubBits
	histMaxBits = 40 // 2^40 ns is about 18 minutes
	histMax     = 1<<histMaxBits - 1
	histBuckets = (histMaxBits - histSubBits + 1) * histSub
)

// histogram records latencies without locks or allocations: each goroutine
// owns one and they are merged at the end. Its zero value is ready to use.
type histogram struct {
	counts [histBuckets]uint32
	n      int64
	sum    int64
	min    int64
	max    int64
}

// bucketOf maps a value in nanoseconds to its bucket.
func bucketOf(v int64) int {
	if v < 0 {
		v = 0
	}
	if v > histMax {
		v = histMax
	}
	if v < 2*histSub {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - histSubBits - 1
	return (shift+1)*histSub + int(v>>shift) - histSub
}

// bucketHigh is the largest value that falls in bucket i.
func bucketHigh(i int) int64 {
	if i < 2*histSub {
		return int64(i)
	}
	shift := i/histSub - 1
	top := int64(i%histSub + histSub)
	return (top+1)<<shift - 1
}

// record adds one value in nanoseconds.
func (h *histogram) record(v int64) {
	if v < 0 {
		v = 0 // a clock step; not worth failing the run for
	}
	h.counts[bucketOf(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += v
}

// merge adds o's values to h.
func (h *histogram) merge(o *histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// quantile returns the value at or below which a fraction q of the values
// lie: the value of rank ceil(q*n), to within its bucket's width (the
// bucket's top, clamped to the recorded minimum and maximum). Zero when
// nothing was recorded.
func (h *histogram) quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := rankOf(q, h.n)
	var seen int64
	for i, c := range h.counts {
		seen += int64(c)
		if seen >= rank {
			return max(h.min, min(bucketHigh(i), h.max))
		}
	}
	return h.max
}

// rankOf is the 1-based rank of quantile q among n values: ceil(q*n),
// forgiving the rounding error of q*n, and within [1, n].
func rankOf(q float64, n int64) int64 {
	return max(1, min(int64(math.Ceil(q*float64(n)-1e-9)), n))
}

// latency is the summary a report prints.
type latency struct {
	P50  float64 `json:"latency_p50_ms"`
	P99  float64 `json:"latency_p99_ms"`
	Max  float64 `json:"latency_max_ms"`
	Mean float64 `json:"latency_mean_ms"`
}

func (h *histogram) summary() latency {
	ms := func(ns int64) float64 { return float64(ns) / float64(time.Millisecond) }
	var mean float64
	if h.n > 0 {
		mean = ms(h.sum / h.n)
	}
	return latency{P50: ms(h.quantile(0.50)), P99: ms(h.quantile(0.99)), Max: ms(h.max), Mean: mean}
}
