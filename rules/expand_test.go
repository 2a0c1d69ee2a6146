package rules

import (
	"strings"
	"testing"
)

func TestExpandEnv(t *testing.T) {
	lookup := lookupFrom(map[string]string{"A": "1", "EMPTY": "", "URL": "http://x", "_x9": "y"})
	for _, tc := range []struct{ in, want, err string }{
		{in: "plain", want: "plain"},
		{in: "plain $A text", want: "plain $A text"},
		{in: "${A}", want: "1"},
		{in: "${_x9}${A}", want: "y1"},
		{in: "${URL}/api/${A}", want: "http://x/api/1"},
		{in: "${A:-d}", want: "1"},
		{in: "${B:-two}", want: "two"},
		{in: "${NOPE:-d e f}", want: "d e f"},
		{in: "${NOPE:-}", want: ""},
		{in: "${EMPTY:-d}", want: "d"},
		{in: "${EMPTY}", want: ""},
		{in: "$${A}", want: "${A}"},
		{in: "x$${A}${A}", want: "x${A}1"},
		{in: "$$A", want: "$$A"},
		{in: "$env.x", want: "$env.x"},
		{in: "${B}", err: "environment variable B is not set (use ${B:-default} for a default)"},
		{in: "${NOPE}x", err: "environment variable NOPE is not set"},
		{in: "${A", err: "unclosed ${"},
		{in: "${1A}", err: "bad variable name in ${1A}"},
		{in: "${}", err: "bad variable name in ${}"},
		{in: "${A B}", err: "bad variable name in ${A B}"},
		{in: "${A-d}", err: "bad variable name in ${A-d}"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ExpandEnv(tc.in, lookup)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("ExpandEnv(%q) = %q, %v, want error %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("ExpandEnv(%q) = %q, %v, want %q", tc.in, got, err, tc.want)
			}
		})
	}
	if got, err := ExpandEnv("${A:-d}", nil); got != "d" || err != nil {
		t.Errorf("ExpandEnv with a nil lookup = %q, %v, want the default", got, err)
	}
}

// FuzzExpandEnv checks the ${VAR} expander on arbitrary strings.
func FuzzExpandEnv(f *testing.F) {
	for _, s := range []string{"${A}", "${A:-b}", "$${A}", "${", "${A", "x${B:-}y", "$A ${A}$"} {
		f.Add(s)
	}
	lookup := lookupFrom(map[string]string{"A": "1", "B": ""})
	f.Fuzz(func(t *testing.T, s string) {
		out, err := ExpandEnv(s, lookup)
		if err != nil {
			return
		}
		if !strings.Contains(s, "${") && out != s {
			t.Fatalf("ExpandEnv(%q) = %q, want it unchanged: it has no ${", s, out)
		}
	})
}
