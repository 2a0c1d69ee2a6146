package rules

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse: it must return a Set or an
// error, never panic, and a Set it returns must match without panicking.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*/*.yaml")
	for _, path := range seeds {
		src, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src)
	}
	f.Add([]byte("rules:\n- &a {name: x, on: '*', join: '[\"r\"]'}\n- *a\n"))
	f.Add([]byte("rules: [{name: a, on: [x, '*'], emit: [{event: e, to: 'users([1, \"2\"])'}]}]"))
	opt := Options{Lookup: lookupFrom(goldenEnv), MaxNodes: 500}
	f.Fuzz(func(t *testing.T, src []byte) {
		s, err := Parse("fuzz.yaml", src, opt)
		if err != nil {
			if s != nil {
				t.Fatalf("Parse() = %v and a non-nil Set", err)
			}
			if _, ok := err.(ErrorList); !ok {
				t.Fatalf("Parse() error %T, want ErrorList", err)
			}
			return
		}
		for _, typ := range []string{"x", "booking.created", "client.typing", "connection.open"} {
			ev := &Event{Type: typ, Sender: map[string]any{"id": "u1"}, Data: map[string]any{"id": 1, "to": "u2"}}
			_, _ = s.Match(context.Background(), ev, nil)
		}
	})
}
