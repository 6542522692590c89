package bench

import (
	"math"
	"math/bits"
	"time"
)

// histogramSubBits sets the histogram's precision: each power-of-two range
// of values is split into 2^(histogramSubBits-1) linear buckets, so a
// reported value is within 1/64 (1.6%) of the recorded one.
const histogramSubBits = 7

const (
	histogramSubCount = 1 << histogramSubBits
	histogramHalf     = histogramSubCount / 2
)

// Histogram is a log-linear histogram of durations in microseconds, in the
// manner of HdrHistogram: fixed memory (about 30 KiB), constant-time
// recording, percentiles within 1.6%. The zero value is not usable; use
// NewHistogram. It is not safe for concurrent use.
type Histogram struct {
	counts []int64
	total  int64
	min    int64
	max    int64
	sum    float64
}

// NewHistogram returns an empty Histogram.
func NewHistogram() *Histogram {
	return &Histogram{counts: make([]int64, histogramSubCount+64*histogramHalf), min: math.MaxInt64}
}

func histogramIndex(v int64) int {
	if v < histogramSubCount {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - histogramSubBits
	sub := int(v >> shift) // in [histogramHalf, histogramSubCount)
	return histogramSubCount + (shift-1)*histogramHalf + sub - histogramHalf
}

// histogramHighest is the largest value that falls in bucket i.
func histogramHighest(i int) int64 {
	if i < histogramSubCount {
		return int64(i)
	}
	shift := (i-histogramSubCount)/histogramHalf + 1
	sub := int64((i-histogramSubCount)%histogramHalf + histogramHalf)
	return (sub+1)<<shift - 1
}

// Record adds one duration; negative ones count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := max(d.Microseconds(), 0)
	h.counts[histogramIndex(v)]++
	h.total++
	h.min = min(h.min, v)
	h.max = max(h.max, v)
	h.sum += float64(v)
}

// Merge adds every value of other.
func (h *Histogram) Merge(other *Histogram) {
	for i, c := range other.counts {
		h.counts[i] += c
	}
	h.total += other.total
	h.min = min(h.min, other.min)
	h.max = max(h.max, other.max)
	h.sum += other.sum
}

// Count is the number of recorded values.
func (h *Histogram) Count() int64 { return h.total }

// Max is the largest recorded value, exactly.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) * time.Microsecond }

// Mean is the mean of the recorded values.
func (h *Histogram) Mean() time.Duration {
	if h.total == 0 {
		return 0
	}
	return time.Duration(h.sum/float64(h.total)) * time.Microsecond
}

// Percentile returns the value at or below which p percent (0 < p <= 100)
// of the recorded values fall, as the highest value of its bucket (never
// above Max); 0 when nothing was recorded.
func (h *Histogram) Percentile(p float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := int64(math.Ceil(p / 100 * float64(h.total)))
	rank = min(max(rank, 1), h.total)
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(histogramHighest(i), h.max)) * time.Microsecond
		}
	}
	return h.Max()
}
