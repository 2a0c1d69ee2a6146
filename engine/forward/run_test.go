package forward

import (
	"math"
	"net/http"
	"testing"
	"time"
)

func TestBackoffCeiling(t *testing.T) {
	tests := []struct {
		initial, ceiling time.Duration
		failures         int
		want             time.Duration
	}{
		{time.Second, 10 * time.Second, 1, time.Second},
		{time.Second, 10 * time.Second, 2, 2 * time.Second},
		{time.Second, 10 * time.Second, 3, 4 * time.Second},
		{time.Second, 10 * time.Second, 4, 8 * time.Second},
		{time.Second, 10 * time.Second, 5, 10 * time.Second},
		{time.Second, 10 * time.Second, 1000, 10 * time.Second},
		{time.Second, time.Second, 3, time.Second},
		{time.Nanosecond, time.Duration(math.MaxInt64), math.MaxInt32, time.Duration(math.MaxInt64)},
	}
	for _, tc := range tests {
		if got := backoffCeiling(tc.initial, tc.ceiling, tc.failures); got != tc.want {
			t.Errorf("backoffCeiling(%v, %v, %d) = %v, want %v", tc.initial, tc.ceiling, tc.failures, got, tc.want)
		}
	}
}

func TestFullJitter(t *testing.T) {
	const ceiling = 10 * time.Millisecond
	var low, high bool
	for range 2000 {
		d := fullJitter(ceiling)
		if d < 0 || d >= ceiling {
			t.Fatalf("fullJitter(%v) = %v, want in [0, %v)", ceiling, d, ceiling)
		}
		low = low || d < ceiling/4
		high = high || d > ceiling*3/4
	}
	if !low || !high {
		t.Errorf("fullJitter never went below a quarter (%v) or above three quarters (%v) of the ceiling in 2000 draws", low, high)
	}
	if d := fullJitter(0); d != 0 {
		t.Errorf("fullJitter(0) = %v, want 0", d)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"30", 30 * time.Second},
		{"0", 0},
		{"-5", 0},
		{"soon", 0},
		{"99999999999999", 0},
		{now.Add(2 * time.Minute).Format(http.TimeFormat), 2 * time.Minute},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	}
	for _, tc := range tests {
		if got := parseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
