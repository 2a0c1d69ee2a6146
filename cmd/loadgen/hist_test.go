//go:build linux

package main

import (
	"math"
	"testing"
	"time"
)

func TestHistIndex(t *testing.T) {
	for _, tc := range []struct {
		us   int64
		want int
	}{
		{math.MinInt64, 0},
		{-1, 0},
		{0, 0},
		{63, 63},
		{64, 64}, // first log-linear bucket, still one µs wide
		{127, 127},
		{128, 128}, // two µs wide from here
		{129, 128},
		{130, 129},
		{255, 191},
		{256, 192},
		{1000, 317},
		{1<<45 - 1, histBuckets - 1}, // the top of the last bucket
		{1 << 45, histBuckets - 1},   // clamped
		{math.MaxInt64, histBuckets - 1},
	} {
		if got := histIndex(tc.us); got != tc.want {
			t.Errorf("histIndex(%d) = %d, want %d", tc.us, got, tc.want)
		}
	}
}

func TestHistValue(t *testing.T) {
	for _, tc := range []struct {
		i    int
		want int64
	}{
		{0, 0},
		{63, 63},
		{64, 64},
		{127, 127},
		{128, 129}, // [128, 130)
		{191, 255}, // [254, 256)
		{192, 258}, // [256, 260)
		{317, 1004},
		{histBuckets - 1, 255 << 37}, // [127<<38, 128<<38)
	} {
		if got := histValue(tc.i); got != tc.want {
			t.Errorf("histValue(%d) = %d, want %d", tc.i, got, tc.want)
		}
	}
}

// TestHistBuckets checks every bucket: its middle falls in it, its lower
// edge starts it, and the middle is within 1/128 of anything in the bucket.
func TestHistBuckets(t *testing.T) {
	for i := range histBuckets {
		mid := histValue(i)
		if got := histIndex(mid); got != i {
			t.Fatalf("histIndex(histValue(%d) = %d) = %d", i, mid, got)
		}
		lo, width := int64(i), int64(1)
		if i >= histSub {
			e := i/histSub - 1
			lo, width = int64(i%histSub+histSub)<<e, int64(1)<<e
		}
		if got := histIndex(lo); got != i {
			t.Fatalf("histIndex(%d) = %d, want %d (lower edge)", lo, got, i)
		}
		if i > 0 {
			if got := histIndex(lo - 1); got != i-1 {
				t.Fatalf("histIndex(%d) = %d, want %d (below the edge)", lo-1, got, i-1)
			}
		}
		if hi := lo + width - 1; float64(max(mid-lo, hi-mid)) > float64(lo)/128 {
			t.Fatalf("bucket %d [%d, %d], middle %d: error above 1/128", i, lo, hi, mid)
		}
	}
}

func TestHistQuantile(t *testing.T) {
	us := func(v ...int64) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Microsecond)
		}
		return d
	}
	oneTo50 := make([]int64, 50)
	for i := range oneTo50 {
		oneTo50[i] = int64(i + 1)
	}
	for _, tc := range []struct {
		name string
		add  []time.Duration
		q    float64
		want float64 // ms
	}{
		{"empty", nil, 0.5, 0},
		{"1..50 µs p50", us(oneTo50...), 0.5, 0.025},
		{"1..50 µs p99 rounds to the 50th", us(oneTo50...), 0.99, 0.05},
		{"1..50 µs p100", us(oneTo50...), 1, 0.05},
		{"1..50 µs p1", us(oneTo50...), 0.01, 0.001},
		{"1..50 µs q 0 is the first", us(oneTo50...), 0, 0.001},
		{"one in a wide bucket: the max, not the middle", us(1000), 0.5, 1},
		{"two in one bucket: capped by the max", us(1000, 1001), 0.5, 1.001},
		{"median of three", us(10, 20, 5000), 0.5, 0.02},
		{"p100 of three is the max", us(10, 20, 5000), 1, 5},
		{"sub-µs counts as 0", []time.Duration{999}, 1, 0},
		{"negative counts as 0", []time.Duration{-time.Second}, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h hist
			for _, d := range tc.add {
				h.add(d)
			}
			if got := h.quantile(tc.q); got != tc.want {
				t.Errorf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
			}
		})
	}
}

func TestHistSparseMerge(t *testing.T) {
	var a hist
	for _, d := range []time.Duration{5 * time.Microsecond, 5 * time.Microsecond, time.Millisecond} {
		a.add(d)
	}
	sp := a.sparse()
	if want := [][2]uint64{{5, 2}, {317, 1}}; len(sp) != len(want) || sp[0] != want[0] || sp[1] != want[1] {
		t.Fatalf("sparse() = %v, want %v", sp, want)
	}
	var b hist
	b.merge(sp, a.max)
	if b != a {
		t.Errorf("merge(sparse()) differs: n %d max %d, want n %d max %d", b.n, b.max, a.n, a.max)
	}

	// A second worker's report adds up; an index out of range is dropped.
	b.merge([][2]uint64{{5, 1}, {histBuckets, 7}}, 2000)
	if b.counts[5] != 3 || b.n != 4 || b.max != 2000 {
		t.Errorf("after a second merge: counts[5] %d, n %d, max %d; want 3, 4, 2000", b.counts[5], b.n, b.max)
	}
	b.merge(nil, 10)
	if b.max != 2000 {
		t.Errorf("merge with a smaller max lowered it to %d", b.max)
	}

	b.reset()
	if b != (hist{}) || b.sparse() != nil {
		t.Errorf("reset left n %d, max %d, sparse %v", b.n, b.max, b.sparse())
	}
}
