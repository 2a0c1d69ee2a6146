package wsframe

import (
	"testing"
	"unicode/utf8"
)

var utf8Samples = []string{
	"",
	"hello",
	"κόσμε",
	"\u00a9\u2603\U0001F600 mixed ascii",
	"\xed\x9f\xbf",     // U+D7FF, last before the surrogates
	"\xee\x80\x80",     // U+E000, first after them
	"\xf4\x8f\xbf\xbf", // U+10FFFF
	"\xef\xbf\xbf",     // U+FFFF
	"\xf0\x90\x80\x80", // U+10000
	// invalid
	"\x80",
	"\xbf",
	"\xc0\xaf",         // overlong '/'
	"\xc1\xbf",         // overlong
	"\xe0\x80\xaf",     // overlong
	"\xe0\x9f\xbf",     // overlong
	"\xed\xa0\x80",     // surrogate U+D800
	"\xed\xbf\xbf",     // surrogate U+DFFF
	"\xf0\x80\x80\xaf", // overlong
	"\xf0\x8f\xbf\xbf", // overlong
	"\xf4\x90\x80\x80", // above U+10FFFF
	"\xf5\x80\x80\x80",
	"\xf8\x88\x80\x80\x80",
	"\xfe",
	"\xff",
	"abc\xce",      // truncated at the end
	"\xce\xba\xe1", // truncated
	"\xe1\x80",
	"\xf0\x9f\x98",
	"a\xe1\x80b",
	"κόσμε\xed\xa0\x80edited",
}

// TestUTF8MatchesStdlib checks the incremental validator against utf8.Valid
// for every way of cutting each sample in two and in single bytes.
func TestUTF8MatchesStdlib(t *testing.T) {
	for _, s := range utf8Samples {
		want := utf8.ValidString(s)
		for cut := 0; cut <= len(s); cut++ {
			var st utf8State
			st, ok1 := st.validate([]byte(s[:cut]))
			ok2 := true
			if ok1 {
				st, ok2 = st.validate([]byte(s[cut:]))
			}
			got := ok1 && ok2 && st == 0
			if got != want {
				t.Errorf("validate(%q | %q) = %v, want %v", s[:cut], s[cut:], got, want)
			}
		}
		var st utf8State
		ok := true
		for i := 0; i < len(s) && ok; i++ {
			st, ok = st.validate([]byte{s[i]})
		}
		if got := ok && st == 0; got != want {
			t.Errorf("validate(%q) byte by byte = %v, want %v", s, got, want)
		}
	}
}

// TestUTF8FailsAtFirstBadByte checks that a bad byte is reported in the chunk
// that carries it, before the character or message could end.
func TestUTF8FailsAtFirstBadByte(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		bad    int // index of the chunk that must fail
	}{
		{
			name:   "bad continuation after split lead",
			chunks: []string{"ok\xe0", "\x80", "\x80"},
			bad:    1,
		},
		{
			name:   "surrogate second byte",
			chunks: []string{"\xed", "\xa0"},
			bad:    1,
		},
		{
			name:   "above max in second byte",
			chunks: []string{"\xf4", "\x90"},
			bad:    1,
		},
		{
			name:   "invalid lead at tail",
			chunks: []string{"abc\xff"},
			bad:    0,
		},
		{
			name:   "invalid lead C0 at tail",
			chunks: []string{"abc\xc0"},
			bad:    0,
		},
		{
			name:   "orphan continuation in the middle",
			chunks: []string{"abc", "d\x80e"},
			bad:    1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var st utf8State
			for i, c := range tc.chunks {
				var ok bool
				st, ok = st.validate([]byte(c))
				if ok != (i != tc.bad) {
					t.Fatalf("validate(chunk %d %q) ok = %v, want %v", i, c, ok, i != tc.bad)
				}
				if !ok {
					return
				}
			}
		})
	}
}

func FuzzUTF8(f *testing.F) {
	for _, s := range utf8Samples {
		f.Add([]byte(s), uint8(len(s)/2))
	}
	f.Fuzz(func(t *testing.T, p []byte, cut uint8) {
		c := int(cut) % (len(p) + 1)
		var st utf8State
		st, ok := st.validate(p[:c])
		if ok {
			st, ok = st.validate(p[c:])
		}
		if got, want := ok && st == 0, utf8.Valid(p); got != want {
			t.Fatalf("validate(%q | %q) = %v, want %v", p[:c], p[c:], got, want)
		}
	})
}
