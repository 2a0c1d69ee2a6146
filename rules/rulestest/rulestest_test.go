package rulestest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// run is Run on paths; it returns the report and the error.
func run(t *testing.T, paths ...string) (out string, res Result, err error) {
	t.Helper()
	var b bytes.Buffer
	res, err = Run(context.Background(), paths, &b)
	return b.String(), res, err
}

// TestShippedRulesPass runs the test files of the shipped rules.yaml, as
// CI would with `sidecar test testdata/rules/*.yaml`.
func TestShippedRulesPass(t *testing.T) {
	files, _ := filepath.Glob("../../testdata/rules/*.yaml")
	if len(files) == 0 {
		t.Fatal("no testdata/rules/*.yaml")
	}
	out, _, err := run(t, files...)
	if err != nil || strings.Contains(out, "FAIL") || !strings.Contains(out, " 0 failed") {
		t.Fatalf("sidecar test testdata/rules/*.yaml = %v\n%s", err, out)
	}
}

func TestRunPasses(t *testing.T) {
	out, _, err := run(t, "testdata/passing.yaml")
	if err != nil {
		t.Fatalf("Run(passing.yaml) = %v\n%s", err, out)
	}
	for _, want := range []string{"  PASS  hello is answered and audited\n", "  PASS  other client events are only audited\n", "2 passed, 0 failed\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestRunFails runs the deliberately failing example: each kind of
// failure is reported, with a diff, and Run fails.
func TestRunFails(t *testing.T) {
	out, res, err := run(t, "testdata/failing.yaml")
	if err == nil || err.Error() != "3 of 4 rule tests failed" {
		t.Errorf("Run(failing.yaml) error = %v, want 3 of 4 failed", err)
	}
	if res != (Result{Passed: 1, Failed: 3}) {
		t.Errorf("Run(failing.yaml) = %+v, want 1 passed, 3 failed", res)
	}
	for _, want := range []string{
		"  PASS  this one passes\n",
		"  FAIL  wrong greeting text (testdata/failing.yaml:10)\n",
		"        --- expected\n        +++ got\n",
		"        -     text: hi Ann\n        +     text: hello Ann\n",
		"        - (no outputs)\n        + - rule: audit\n        +   action: forward\n",
		`unexpected run-time error: rule "greet": emit.data (line 5): invalid operation: string + <nil>`,
		"1 passed, 3 failed\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestRunFileErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("rules.yaml", "rules:\n  - {name: a, on: x, join: '[\"r\"]'}\n")
	write("empty.yaml", "rules: []\n")
	for _, tc := range []struct {
		name, content, want string
	}{
		{"misspelt key", "rules: rules.yaml\ntests:\n  - name: t\n    evnt: {type: x}\n    expect: []\n", "field evnt not found"},
		{"missing expect", "rules: rules.yaml\ntests:\n  - {name: t, event: {type: x}}\n", "missing expect (write expect: [] when the event should cause nothing)"},
		{"missing type", "rules: rules.yaml\ntests:\n  - {name: t, event: {data: {}}, expect: []}\n", "event: missing type"},
		{"bad expected key", "rules: rules.yaml\ntests:\n  - {name: t, event: {type: x}, expect: [{action: join, room: [r]}]}\n", `unknown key "room"`},
		{"rules do not load", "rules: nope.yaml\ntests:\n  - {name: t, event: {type: x}, expect: []}\n", "load rules: open"},
		{"empty rules", "rules: empty.yaml\ntests:\n  - {name: t, event: {type: x}, expect: []}\n", "empty.yaml:1: no rules: an empty list turns off all routing (set rules.allow_empty: true"},
		{"a rules file", "rules:\n  - {name: a, on: x, join: '[\"r\"]'}\n", "a rules file, not a test file"},
		{"expected error that did not happen", "rules: rules.yaml\ntests:\n  - {name: t, event: {type: x}, expect: [{action: join, rooms: [r]}], errors: [a]}\n", `expected rule "a" to fail at run time; it did not`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := write("t.yaml", tc.content)
			out, _, err := run(t, p)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("Run() = %v\n%s\nwant output containing %q", err, out, tc.want)
			}
		})
	}
}

// TestRunIdsAndOrder: expected ids may be numbers, rule is
// optional, and output order matters.
func TestRunIdsAndOrder(t *testing.T) {
	dir := t.TempDir()
	rulesSrc := "rules:\n  - {name: a, on: x, emit: {event: e, to: 'users([data.n, \"u\"])'}}\n  - {name: b, on: x, join: {rooms: '[data.n]', user: data.n}}\n"
	if err := os.WriteFile(filepath.Join(dir, "r.yaml"), []byte(rulesSrc), 0o644); err != nil {
		t.Fatal(err)
	}
	test := "rules: r.yaml\ntests:\n" +
		"  - name: numbers\n    event: {type: x, data: {n: 42}}\n    expect:\n" +
		"      - {event: e, to: {users: [42, u]}, data: {n: 42}}\n      - {rule: b, action: join, rooms: [42], user: 42}\n" +
		"  - name: swapped\n    event: {type: x, data: {n: 1}}\n    expect:\n" +
		"      - {rule: b, action: join, rooms: [1], user: 1}\n      - {event: e, to: {users: [1, u]}, data: {n: 1}}\n"
	p := filepath.Join(dir, "t.yaml")
	if err := os.WriteFile(p, []byte(test), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err := run(t, p)
	if !strings.Contains(out, "  PASS  numbers\n") || !strings.Contains(out, "  FAIL  swapped") || err == nil {
		t.Errorf("Run() = %v\n%s", err, out)
	}
}

// TestRunFile: a file that cannot run is RunFile's error, and Run's failure;
// failed cases are counted, not returned.
func TestRunFile(t *testing.T) {
	var b bytes.Buffer
	res, err := RunFile(context.Background(), "testdata/failing.yaml", &b)
	if err != nil || res != (Result{Passed: 1, Failed: 3}) {
		t.Errorf("RunFile(failing.yaml) = %+v, %v, want 1 passed, 3 failed and no error", res, err)
	}
	if res.Err() == nil {
		t.Errorf("Result%+v.Err() = nil", res)
	}
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	if res, err := RunFile(context.Background(), missing, &b); err == nil || res != (Result{}) {
		t.Errorf("RunFile(missing) = %+v, %v, want an error", res, err)
	}
	out, res, err := run(t, "testdata/passing.yaml", missing)
	if err == nil || res != (Result{Passed: 2, Failed: 1}) || !strings.Contains(out, missing+"\n  ERROR ") {
		t.Errorf("Run(passing, missing) = %+v, %v\n%s", res, err, out)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var b bytes.Buffer
	if _, err := Run(ctx, []string{"testdata/passing.yaml"}, &b); !errors.Is(err, context.Canceled) {
		t.Errorf("Run(cancelled) = %v, want context.Canceled", err)
	}
}

// TestExpectedIDs: an id written in a test's expectations compares as
// rules.ID makes it, whatever YAML form it takes.
func TestExpectedIDs(t *testing.T) {
	dir := t.TempDir()
	rulesSrc := "rules:\n  - {name: a, on: x, emit: {event: e, to: 'user(data.n)', data: '{\"k\": 1}'}}\n  - {name: b, on: x, join: {rooms: '[data.n]', user: data.n}}\n"
	if err := os.WriteFile(filepath.Join(dir, "r.yaml"), []byte(rulesSrc), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, data, expected string }{
		{"integer", "42", "42"},
		{"float written whole", "42", "42.0"},
		{"quoted", "42", `"42"`},
		{"hexadecimal", "42", "0x2A"},
		{"exponent", "1000", "1e3"},
		{"fraction", "4.5", "4.50"},
		{"negative", "-7", "-7"},
		{"string", "u1", "u1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			test := "rules: r.yaml\ntests:\n  - name: ids\n    event: {type: x, data: {n: " + tc.data + "}}\n    expect:\n" +
				"      - {event: e, to: {users: [" + tc.expected + "]}, data: {k: 1}}\n" +
				"      - {action: join, rooms: [" + tc.expected + "], user: " + tc.expected + "}\n"
			p := filepath.Join(dir, "t.yaml")
			if err := os.WriteFile(p, []byte(test), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, _, err := run(t, p); err != nil {
				t.Errorf("data %s, expected %s: %v\n%s", tc.data, tc.expected, err, out)
			}
		})
	}
}
