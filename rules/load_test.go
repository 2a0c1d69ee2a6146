package rules

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func lookupFrom(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDesignExampleLoadsAsIs(t *testing.T) {
	s, err := Load("testdata/golden/design.rules.yaml", Options{Lookup: lookupFrom(map[string]string{"APP_URL": "http://app.test"})})
	if err != nil {
		t.Fatalf("Load(design.yaml) = %v", err)
	}
	want := []string{"booking-created", "typing", "booking-update-from-client", "rooms-from-claims"}
	if got := s.Rules(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Rules() = %v, want %v", got, want)
	}
	if s.Source() != "testdata/golden/design.rules.yaml" || s.Len() != 4 {
		t.Errorf("Source(), Len() = %q, %d", s.Source(), s.Len())
	}
}

func TestDesignExampleNeedsAppURL(t *testing.T) {
	_, err := Load("testdata/golden/design.rules.yaml", Options{Lookup: lookupFrom(nil)})
	want := `testdata/golden/design.rules.yaml:14: rule "booking-update-from-client": forward.url: environment variable APP_URL is not set`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Load without APP_URL = %v, want %q", err, want)
	}
}

// TestAllowEmpty: an empty rules list loads only when asked for, so that a
// file emptied by mistake does not turn routing off in silence.
func TestAllowEmpty(t *testing.T) {
	for _, src := range []string{"rules: []\n", "rules: [] # nothing routed on purpose\n"} {
		s, err := Parse("f.yaml", []byte(src), Options{AllowEmpty: true})
		if err != nil || s.Len() != 0 {
			t.Errorf("Parse(%q, AllowEmpty) = %v, %v; want an empty set", src, s, err)
		}
		var list ErrorList
		if _, err := Parse("f.yaml", []byte(src), Options{}); !errors.As(err, &list) || len(list) != 1 || list[0].Line != 1 {
			t.Errorf("Parse(%q) = %v, want one positioned error", src, err)
		}
	}
	// A rules: that is no list is that error alone.
	var list ErrorList
	if _, err := Parse("f.yaml", []byte("rules:\n# - name: a\n"), Options{}); !errors.As(err, &list) || len(list) != 1 {
		t.Errorf("Parse(rules: null) = %v, want one error", err)
	}
	// AllowEmpty allows an empty list, not a broken one.
	if _, err := Parse("f.yaml", []byte("rules:\n- {name: a, on: x}\n"), Options{AllowEmpty: true}); err == nil {
		t.Errorf("Parse(a rule without action, AllowEmpty) = nil error")
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("testdata/no-such-file.yaml", Options{})
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load(missing) = %v, want os.ErrNotExist", err)
	}
}

// bigSum is an expression of about 2n AST nodes.
func bigSum(n int) string { return "1" + strings.Repeat(" + 1", n) }

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  string
		opt  Options
		want string // the whole message, or a prefix of it ending in "..."
	}{
		{"yaml syntax", "rules:\n  - name: a\n    on: x\n   emit: {\n", Options{},
			`f.yaml:2: yaml: did not find expected '-' indicator (in the block or flow collection that starts on this line)`},
		{"expr compile error", "rules:\n- name: a\n  on: x\n  emit:\n    event: e\n    to: usr(data.id)\n", Options{},
			`f.yaml:6: rule "a": emit.to: unknown name usr`},
		{"expr type error", "rules:\n- name: a\n  on: x\n  emit: {event: e, to: 'user(data.id)', data: 'data.a + (1 > 2)'}\n", Options{},
			`f.yaml:4: rule "a": emit.data: invalid operation: + ...`},
		{"non-boolean if", "rules:\n- name: a\n  on: x\n  if: data.n + 1\n  emit: {event: e, to: all()}\n", Options{},
			``},
		{"non-boolean if literal", "rules:\n- name: a\n  on: x\n  if: '\"yes\"'\n  emit: {event: e, to: all()}\n", Options{},
			`f.yaml:4: rule "a": if: expected bool, but got string`},
		{"unknown action", "rules:\n- name: a\n  on: x\n  notify: {event: e}\n", Options{},
			`f.yaml:4: rule "a": unknown key "notify": not a rule field (name, on, if, description) nor an action (emit, forward, join, leave)`},
		{"unknown key", "rules:\n- name: a\n  on: x\n  iff: data.ok\n  emit: {event: e, to: all()}\n", Options{},
			`f.yaml:4: rule "a": unknown key "iff"...`},
		{"no action", "rules:\n- name: a\n  on: x\n  if: true\n", Options{},
			`f.yaml:2: rule "a": no action: want one of emit, forward, join, leave`},
		{"missing name", "rules:\n- on: x\n  emit: {event: e, to: all()}\n", Options{},
			`f.yaml:2: rule #1: missing name`},
		{"empty name", "rules:\n- name: ''\n  on: x\n  emit: {event: e, to: all()}\n", Options{},
			`f.yaml:2: rule #1: name "": empty`},
		{"duplicate name", "rules:\n- name: a\n  on: x\n  join: '[\"r\"]'\n- name: a\n  on: y\n  join: '[\"r\"]'\n", Options{},
			`f.yaml:5: rule "a": duplicate name (first defined at line 2)`},
		{"bad glob", "rules:\n- name: a\n  on: 'booking.['\n  emit: {event: e, to: all()}\n", Options{},
			`f.yaml:3: rule "a": on: bad glob "booking.[": syntax error in pattern`},
		{"missing on", "rules:\n- name: a\n  emit: {event: e, to: all()}\n", Options{},
			`f.yaml:2: rule "a": missing on...`},
		{"duplicate key", "rules:\n- name: a\n  on: x\n  on: y\n  emit: {event: e, to: all()}\n", Options{},
			`f.yaml:4: rule "a": duplicate key "on"`},
		{"unknown key in emit", "rules:\n- name: a\n  on: x\n  emit: {event: e, to: all(), date: data}\n", Options{},
			`f.yaml:4: rule "a": emit: unknown key "date" (want event, to, data)`},
		{"emit without to", "rules:\n- name: a\n  on: x\n  emit: {event: e}\n", Options{},
			`f.yaml:4: rule "a": emit: missing to...`},
		{"emit without event", "rules:\n- name: a\n  on: x\n  emit: {to: all()}\n", Options{},
			`f.yaml:4: rule "a": emit: missing event...`},
		{"to is not a target", "rules:\n- name: a\n  on: x\n  emit: {event: e, to: '\"u1\"'}\n", Options{},
			`f.yaml:4: rule "a": emit.to: yields string, want a target such as user(id), or a list of them`},
		{"bad id type", "rules:\n- name: a\n  on: x\n  emit: {event: e, to: 'user(true)'}\n", Options{},
			`f.yaml:4: rule "a": emit.to: cannot use bool as argument (type string) to call user`},
		{"users of a string", "rules:\n- name: a\n  on: x\n  emit: {event: e, to: 'users(\"u1\")'}\n", Options{},
			`f.yaml:4: rule "a": emit.to: cannot use string as argument...`},
		{"join of a map", "rules:\n- name: a\n  on: x\n  join: '{\"a\": 1}'\n", Options{},
			`f.yaml:4: rule "a": join: yields map[string]interface {}, want a room name or a list of them`},
		{"forward without url", "rules:\n- name: a\n  on: x\n  forward: {data: data}\n", Options{},
			`f.yaml:4: rule "a": forward: missing url`},
		{"forward relative url", "rules:\n- name: a\n  on: x\n  forward: {url: /api/x}\n", Options{},
			`f.yaml:4: rule "a": forward.url: "/api/x" is not an absolute http(s) URL`},
		{"unset variable", "rules:\n- name: a\n  on: x\n  forward:\n    url: ${APP_URL}/x\n", Options{},
			`f.yaml:5: rule "a": forward.url: environment variable APP_URL is not set (use ${APP_URL:-default} for a default)`},
		{"pathological expression", "rules:\n- name: a\n  on: x\n  if: " + bigSum(6000) + " > 0\n  join: '[\"r\"]'\n", Options{},
			`f.yaml:4: rule "a": if: compilation failed: expression exceeds maximum allowed nodes`},
		{"MaxNodes option", "rules:\n- name: a\n  on: x\n  if: " + bigSum(20) + " > 0\n  join: '[\"r\"]'\n", Options{MaxNodes: 10},
			`f.yaml:4: rule "a": if: compilation failed: expression exceeds maximum allowed nodes`},
		{"deep nesting", "rules:\n- name: a\n  on: x\n  if: '" + strings.Repeat("(", 300) + "true" + strings.Repeat(")", 300) + "'\n  join: '[\"r\"]'\n", Options{},
			`f.yaml:4: rule "a": if: expression nested more than 200 levels deep`},
		{"multi-line expression", "rules:\n- name: a\n  on: x\n  emit:\n    event: e\n    to: all()\n    data: |\n      {\n        \"a\": data.x,\n        \"b\": nope(1)\n      }\n", Options{},
			`f.yaml:10: rule "a": emit.data: unknown name nope`},
		{"empty file", "", Options{}, `f.yaml: empty file: want a top-level "rules:" list`},
		{"unknown top-level key", "rule:\n- name: a\n", Options{},
			`f.yaml:1: unknown top-level key "rule" (want rules)`},
		{"rules not a list", "rules: {name: a}\n", Options{}, `f.yaml:1: rules: want a list of rules`},
		{"two documents", "rules: []\n---\nrules: []\n", Options{}, `f.yaml:2: more than one YAML document...`},
		{"empty list", "# all commented out\nrules: []\n", Options{},
			`f.yaml:2: no rules: an empty list turns off all routing (set rules.allow_empty: true in the config to allow it)`},
		{"empty block list", "rules:\n# - name: a\n", Options{}, `f.yaml:1: rules: want a list of rules`},
		{"rule not a mapping", "rules:\n- just a string\n", Options{}, `f.yaml:2: rule #1: want a mapping...`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tc.src), tc.opt)
			if err == nil {
				if tc.want == "" {
					return // accepted: the type is only known when the rule runs
				}
				t.Fatalf("Parse() = nil error, want %q", tc.want)
			}
			if tc.want == "" {
				t.Fatalf("Parse() = %v, want no error", err)
			}
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("Parse() error %T is not an ErrorList: %v", err, err)
			}
			got := list[0].Error()
			if prefix, ok := strings.CutSuffix(tc.want, "..."); ok {
				if !strings.HasPrefix(got, prefix) {
					t.Errorf("Parse() error = %q, want prefix %q", got, prefix)
				}
			} else if got != tc.want {
				t.Errorf("Parse() error = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestLoadCollectsEveryError checks that one load reports all problems, in
// line order, not just the first.
func TestLoadCollectsEveryError(t *testing.T) {
	src := `rules:
  - name: a
    on: x
    emit: {event: e, to: usr(1)}
  - name: b
    on: "y.["
    join: '["r"]'
  - name: a
    on: z
    join: '["r"]'
  - name: c
    on: w
    emit: {event: e, to: all(), data: 'data.x +'}
    forward: {url: "${NOPE}"}
`
	_, err := Parse("many.yaml", []byte(src), Options{})
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("Parse() = %v, want an ErrorList", err)
	}
	want := []string{
		`many.yaml:4: rule "a": emit.to`,
		`many.yaml:6: rule "b": on: bad glob`,
		`many.yaml:8: rule "a": duplicate name`,
		`many.yaml:13: rule "c": emit.data`,
		`many.yaml:14: rule "c": forward.url: environment variable NOPE is not set`,
	}
	if len(list) != len(want) {
		t.Fatalf("Parse() = %d errors, want %d:\n%v", len(list), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(list[i].Error(), w) {
			t.Errorf("error %d = %q, want prefix %q", i, list[i].Error(), w)
		}
	}
}

func TestRegistryRegisterPanics(t *testing.T) {
	f := func(*yaml.Node, *Compiler) (Action, error) { return nil, nil }
	for _, tc := range []struct {
		name string
		reg  func(r *Registry)
	}{
		{"empty name", func(r *Registry) { r.Register("", f) }},
		{"duplicate", func(r *Registry) { r.Register("emit", f) }},
		{"rule field", func(r *Registry) { r.Register("if", f) }},
		{"nil factory", func(r *Registry) { r.Register("x", nil) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("Register did not panic")
				}
			}()
			tc.reg(Builtin())
		})
	}
	if got := fmt.Sprint(Builtin().Names()); got != "[emit forward join leave]" {
		t.Errorf("Builtin().Names() = %s", got)
	}
}

func TestLoadFileSizeLimit(t *testing.T) {
	big := "rules: []\n" + strings.Repeat("#", MaxFileBytes)
	path := t.TempDir() + "/big.yaml"
	if err := os.WriteFile(path, []byte(big), 0o644); err != nil {
		t.Fatal(err)
	}
	want := path + ": larger than 4 MiB, the most a rules file may hold"
	if _, err := Load(path, Options{}); err == nil || err.Error() != want {
		t.Errorf("Load(%d bytes) = %v, want %q", len(big), err, want)
	}
	if _, err := Parse("big.yaml", []byte(big), Options{}); err == nil || !strings.Contains(err.Error(), "larger than 4 MiB") {
		t.Errorf("Parse(%d bytes) = %v, want the size limit", len(big), err)
	}
}

// TestLoadExpressionBytesLimit: YAML aliases (or ${VAR}) make a small file
// stand for a lot of expression source, each copy compiled; the total is
// capped, and the load stops compiling past it with one error.
func TestLoadExpressionBytesLimit(t *testing.T) {
	expr := `data.a == "` + strings.Repeat("x", 100_000) + `"`
	var b strings.Builder
	fmt.Fprintf(&b, "rules:\n- name: a\n  on: x\n  emit:\n  - &e {event: e, to: all(), data: '%s'}\n", expr)
	for range 100 { // 100 × 100 KB = 10 MB of source
		b.WriteString("  - *e\n")
	}
	fmt.Fprintf(&b, "- name: b\n  on: x\n  if: '%s'\n  join: '[\"r\"]'\n", expr)
	_, err := Parse("alias.yaml", []byte(b.String()), Options{})
	var list ErrorList
	if !errors.As(err, &list) || len(list) != 1 {
		t.Fatalf("Parse() = %v, want one error", err)
	}
	if want := `alias.yaml:5: rule "a": emit.data: the expressions total more than 4 MiB after ${VAR} and alias expansion`; !strings.HasPrefix(list[0].Error(), want) {
		t.Errorf("Parse() = %q, want prefix %q", list[0].Error(), want)
	}
}
