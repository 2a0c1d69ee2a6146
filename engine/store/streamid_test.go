package store

import (
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

func TestParseStreamID(t *testing.T) {
	tests := []struct {
		in     string
		want   StreamID
		wantOK bool
	}{
		{"1764590000000-42", StreamID{1764590000000, 42}, true},
		{"0-0", StreamID{0, 0}, true},
		{"1-1", StreamID{1, 1}, true},
		{"007-01", StreamID{7, 1}, true}, // leading zeros: accepted, String drops them
		{"18446744073709551615-18446744073709551615", StreamID{math.MaxUint64, math.MaxUint64}, true},
		{"18446744073709551616-1", StreamID{}, false}, // overflows
		{"1-18446744073709551616", StreamID{}, false},
		{"99999999999999999999-1", StreamID{}, false},
		{"018446744073709551615-18446744073709551615", StreamID{}, false}, // fits, but 42 bytes
		{"", StreamID{}, false},
		{"-", StreamID{}, false},
		{"1-", StreamID{}, false},
		{"-1", StreamID{}, false},
		{"1", StreamID{}, false},
		{"1--1", StreamID{}, false},
		{"1-1-1", StreamID{}, false},
		{"+1-1", StreamID{}, false},
		{"1-+1", StreamID{}, false},
		{"-1-1", StreamID{}, false},
		{" 1-1", StreamID{}, false},
		{"1-1 ", StreamID{}, false},
		{"1 -1", StreamID{}, false},
		{"1_000-1", StreamID{}, false},
		{"0x10-1", StreamID{}, false},
		{"1-1\x00", StreamID{}, false},
		{"١-١", StreamID{}, false}, // Arabic-Indic digits
		{"1.5-1", StreamID{}, false},
	}
	for _, tc := range tests {
		t.Run(strconv.Quote(tc.in), func(t *testing.T) {
			got, ok := ParseStreamID(tc.in)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("ParseStreamID(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestStreamIDOrder(t *testing.T) {
	tests := []struct {
		a, b StreamID
		less bool
	}{
		{StreamID{1, 2}, StreamID{1, 3}, true},
		{StreamID{1, 3}, StreamID{1, 2}, false},
		{StreamID{1, 9}, StreamID{2, 1}, true},
		{StreamID{2, 1}, StreamID{1, 9}, false},
		{StreamID{5, 5}, StreamID{5, 5}, false},
		{StreamID{0, math.MaxUint64}, StreamID{1, 0}, true},
	}
	for _, tc := range tests {
		if got := tc.a.Less(tc.b); got != tc.less {
			t.Errorf("%v.Less(%v) = %v, want %v", tc.a, tc.b, got, tc.less)
		}
	}
	// The hex key form sorts as the ids do, and reads back.
	r := rand.New(rand.NewPCG(1, 2))
	pick := func() uint64 {
		switch r.IntN(3) {
		case 0:
			return r.Uint64N(4)
		case 1:
			return r.Uint64()
		}
		return 1764590000000 + r.Uint64N(3)
	}
	for range 10000 {
		a, b := StreamID{pick(), pick()}, StreamID{pick(), pick()}
		ka, kb := string(a.appendHex(nil)), string(b.appendHex(nil))
		if (ka < kb) != a.Less(b) {
			t.Fatalf("keys %q < %q = %v, but %v.Less(%v) = %v", ka, kb, ka < kb, a, b, a.Less(b))
		}
		if back, ok := parseHexID(ka); !ok || back != a || len(ka) != hexIDLen {
			t.Fatalf("parseHexID(%q) = %v, %v; want %v", ka, back, ok, a)
		}
	}
	if _, ok := parseHexID(strings.Repeat("A", hexIDLen)); ok {
		t.Error("parseHexID accepted upper-case hex, which appendHex never writes")
	}
}

// FuzzParseStreamID checks ParseStreamID against strconv.ParseUint and
// that String reads back as the same id.
func FuzzParseStreamID(f *testing.F) {
	for _, s := range []string{"1764590000000-42", "0-0", "007-01", "+1-1", "1-", "18446744073709551615-18446744073709551615", "1--1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, ok := ParseStreamID(s)

		// The oracle: two base-10 ParseUints (which take no sign) around
		// the first dash.
		msPart, seqPart, found := strings.Cut(s, "-")
		ms, err1 := strconv.ParseUint(msPart, 10, 64)
		seq, err2 := strconv.ParseUint(seqPart, 10, 64)
		wantOK := found && err1 == nil && err2 == nil && len(s) <= maxStreamIDLen
		if ok != wantOK || ok && id != (StreamID{ms, seq}) {
			t.Fatalf("ParseStreamID(%q) = %v, %v; the oracle says %v, %v", s, id, ok, StreamID{ms, seq}, wantOK)
		}
		if !ok {
			return
		}
		str := id.String()
		back, ok := ParseStreamID(str)
		if !ok || back != id {
			t.Fatalf("ParseStreamID(%q.String() = %q) = %v, %v", s, str, back, ok)
		}
		if len(str) > len(s) {
			t.Fatalf("String() = %q, longer than the input %q", str, s)
		}
	})
}
