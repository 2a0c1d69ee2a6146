//go:build linux

package main

import (
	"math/bits"
	"time"
)

// hist is a log-linear latency histogram in microseconds: exact below 64 µs,
// then 64 buckets per power of two (under 1.6% error), up to about 2^40 µs.
type hist struct {
	counts [histBuckets]uint64
	n      uint64
	max    int64 // µs
}

const (
	histSub     = 64
	histBuckets = 40 * histSub
)

func histIndex(us int64) int {
	if us < histSub {
		if us < 0 {
			return 0
		}
		return int(us)
	}
	e := bits.Len64(uint64(us)) - 7 // us>>e is in [64, 128)
	i := (e+1)*histSub + int(us>>e) - histSub
	if i >= histBuckets {
		return histBuckets - 1
	}
	return i
}

// histValue is the middle of bucket i, in µs.
func histValue(i int) int64 {
	if i < histSub {
		return int64(i)
	}
	e := i/histSub - 1
	lo := int64(i%histSub+histSub) << e
	return lo + (int64(1)<<e)/2
}

func (h *hist) add(d time.Duration) {
	us := int64(d / time.Microsecond)
	h.counts[histIndex(us)]++
	h.n++
	if us > h.max {
		h.max = us
	}
}

func (h *hist) reset() { *h = hist{} }

// sparse lists the non-empty buckets as [index, count] pairs for a report.
func (h *hist) sparse() [][2]uint64 {
	var out [][2]uint64
	for i, c := range h.counts {
		if c != 0 {
			out = append(out, [2]uint64{uint64(i), c})
		}
	}
	return out
}

func (h *hist) merge(sp [][2]uint64, max int64) {
	for _, p := range sp {
		if p[0] < histBuckets {
			h.counts[p[0]] += p[1]
			h.n += p[1]
		}
	}
	if max > h.max {
		h.max = max
	}
}

// quantile returns the q-quantile (0 < q <= 1) in milliseconds.
func (h *hist) quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return float64(min(histValue(i), h.max)) / 1000
		}
	}
	return float64(h.max) / 1000
}
