package sio

import (
	"bytes"
	"encoding/json"
	"testing"
)

// jsonStrings are the awkward strings: quotes, backslashes, every control
// character, the HTML characters, U+2028/U+2029, multi-byte UTF-8 and
// surrogate-free astral runes, invalid UTF-8.
var jsonStrings = func() []string {
	s := []string{
		"", "typing", `a"b`, `a\b`, `\"`, "<script>&</script>", "line\u2028sep\u2029", "é€😀",
		"\x7f", "\xff", "a\xc3", "\xed\xa0\x80", "\xf4\x90\x80\x80", "ok\xe2\x82", "\x1e",
		"tab\tnl\nret\rbs\bff\f",
	}
	for c := range 0x20 {
		s = append(s, string(rune(c)), "x"+string(rune(c))+"y")
	}
	return s
}()

func TestAppendJSONStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range jsonStrings {
		checkJSONString(t, s)
	}
}

// checkJSONString checks that appendJSONString writes s as json.Marshal
// does, and that unquote reads it back as json.Unmarshal does.
func checkJSONString(t *testing.T, s string) {
	t.Helper()
	got := appendJSONString([]byte("x"), s)[1:]
	want, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("appendJSONString(%q) = %s, want %s", s, got, want)
	}
	back, ok := unquote(got)
	var ref string
	if err := json.Unmarshal(got, &ref); err != nil || !ok || string(back) != ref {
		t.Fatalf("unquote(%s) = %q, %v; encoding/json reads %q, %v", got, back, ok, ref, err)
	}
}

func TestUnquoteMatchesEncodingJSON(t *testing.T) {
	for _, q := range []string{
		`""`, `"typing"`, `"a\"b"`, `"\\"`, `"\/"`, `"\b\f\n\r\t"`, `"\u0041\u00e9\u20ac"`,
		`"\ud83d\ude00"`, `"\ud83d"`, `"\ude00"`, `"\ud83dx"`, `"\ud83d\u0041"`, `"\ud83d\ud83d\ude00"`,
		`"\uDBFF\uDFFF"`, "\"\xff\"", "\"a\xc3\"", "\"\xed\xa0\x80\"", `"\u0000"`, "\"\x7f\"",
	} {
		checkUnquote(t, []byte(q))
	}
	for _, q := range []string{`"`, `x`, `"a`, `a"`, `"\"`, `"\x"`, `"\u12"`, `"\u12g4"`, "\"\n\"", `"a"b"`} {
		if v, ok := unquote([]byte(q)); ok {
			t.Errorf("unquote(%s) = %q, want not ok", q, v)
		}
	}
}

// checkUnquote checks unquote against json.Unmarshal on the literal q: the
// same string when encoding/json takes q, not ok when it refuses it. The
// JSON whitespace around q, which json.Unmarshal skips, is not unquote's.
func checkUnquote(t *testing.T, q []byte) {
	t.Helper()
	var ref string
	refErr := json.Unmarshal(q, &ref)
	q = bytes.Trim(q, " \t\r\n")
	v, ok := unquote(q)
	if refErr == nil && (!ok || string(v) != ref) {
		t.Fatalf("unquote(%q) = %q, %v; encoding/json reads %q", q, v, ok, ref)
	}
	if refErr != nil && ok && len(q) > 0 && q[0] == '"' {
		t.Fatalf("unquote(%q) = %q, ok; encoding/json refuses it: %v", q, v, refErr)
	}
}

func TestUnquoteAliasesPlainStrings(t *testing.T) {
	q := []byte(`"typing"`)
	v, ok := unquote(q)
	if !ok || &v[0] != &q[1] {
		t.Fatal("a string without escapes is copied")
	}
}

func FuzzJSONString(f *testing.F) {
	for _, s := range jsonStrings {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkJSONString(t, s)
		checkUnquote(t, []byte(s))
	})
}
