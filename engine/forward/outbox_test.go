package forward

import (
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sidecar/sidecar/engine/store"
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

func TestDueKey(t *testing.T) {
	tests := []struct {
		nanos  int64
		id     string
		wantAt int64
	}{
		{0, "a", 0},
		{1, "fwd:with:colons", 1},
		{1_700_000_000_123_456_789, "x", 1_700_000_000_123_456_789},
		{math.MaxInt64, "max", math.MaxInt64},
		{-5, "negative", 0},
	}
	for _, tc := range tests {
		key := dueKey(tc.nanos, tc.id)
		if !strings.HasPrefix(key, store.PrefixOutboxDue) || len(key) != dueIDAt+len(tc.id) {
			t.Errorf("dueKey(%d, %q) = %q: wrong layout", tc.nanos, tc.id, key)
		}
		at, id, ok := parseDueKey(key)
		if !ok || at != tc.wantAt || id != tc.id {
			t.Errorf("parseDueKey(dueKey(%d, %q)) = %d, %q, %v; want %d, %q, true", tc.nanos, tc.id, at, id, ok, tc.wantAt, tc.id)
		}
	}
	// Lexical order of keys is time order, whatever the ids.
	times := []int64{9, 10, 100, 1_000_000_000, 1_700_000_000_000_000_000, math.MaxInt64}
	var keys []string
	for i := len(times) - 1; i >= 0; i-- {
		keys = append(keys, dueKey(times[i], "z"+strings.Repeat("z", i)))
	}
	slices.Sort(keys)
	for i, k := range keys {
		if at, _, _ := parseDueKey(k); at != times[i] {
			t.Errorf("sorted key %d is due at %d, want %d", i, at, times[i])
		}
	}
	for _, bad := range []string{"", "ob_due:", "ob_due:123:x", "ob:0000000000000000001:x", "ob_due:000000000000000000x:id", "ob_due:0000000000000000001-id"} {
		if _, _, ok := parseDueKey(bad); ok {
			t.Errorf("parseDueKey(%q) ok, want rejected", bad)
		}
	}
}

func FuzzDueKey(f *testing.F) {
	f.Add(int64(0), "a", "ob_due:0000000000000000001:x")
	f.Add(int64(math.MaxInt64), "fwd:1", "ob_due:")
	f.Add(int64(-1), "", "ob_due:-000000000000000001:x")
	f.Fuzz(func(t *testing.T, nanos int64, id, raw string) {
		parseDueKey(raw) // must not panic
		if id == "" {
			return
		}
		at, got, ok := parseDueKey(dueKey(nanos, id))
		if !ok || got != id || at != max(nanos, 0) {
			t.Fatalf("round trip of (%d, %q) = %d, %q, %v", nanos, id, at, got, ok)
		}
	})
}

func TestPrefixEnd(t *testing.T) {
	for _, p := range []string{store.PrefixOutbox, store.PrefixOutboxDue} {
		end := prefixEnd(p)
		if !(p < end) || strings.HasPrefix(end, p) || !(p+"\xff\xff" < end) {
			t.Errorf("prefixEnd(%q) = %q does not bound the prefix", p, end)
		}
	}
	// The two outbox prefixes do not overlap.
	if strings.HasPrefix(store.PrefixOutboxDue, store.PrefixOutbox) {
		t.Errorf("%q is inside %q: count() would include index keys", store.PrefixOutboxDue, store.PrefixOutbox)
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
