package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCmd(t *testing.T, f func(context.Context, []string, *bytes.Buffer, *bytes.Buffer) error, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	err = f(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), err
}

func testCmd(ctx context.Context, args []string, out, errb *bytes.Buffer) error {
	return runTest(ctx, args, out, errb)
}

func checkCmd(ctx context.Context, args []string, out, errb *bytes.Buffer) error {
	return runCheck(ctx, args, out, errb)
}

// TestShippedRulesPass runs the test files of the shipped rules.yaml, as
// CI would with `sidecar test testdata/rules/*.yaml`.
func TestShippedRulesPass(t *testing.T) {
	files, _ := filepath.Glob("../../testdata/rules/*.yaml")
	if len(files) == 0 {
		t.Fatal("no testdata/rules/*.yaml")
	}
	out, _, err := runCmd(t, testCmd, files...)
	if err != nil || strings.Contains(out, "FAIL") || !strings.Contains(out, " 0 failed") {
		t.Fatalf("sidecar test testdata/rules/*.yaml = %v\n%s", err, out)
	}
}

func TestTestCommandPasses(t *testing.T) {
	out, _, err := runCmd(t, testCmd, "../../rules/testdata/sidecar-test/passing.yaml")
	if err != nil {
		t.Fatalf("runTest(passing.yaml) = %v\n%s", err, out)
	}
	for _, want := range []string{"  PASS  hello is answered and audited\n", "  PASS  other client events are only audited\n", "2 passed, 0 failed\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestTestCommandFails runs the deliberately failing example: each kind of
// failure is reported, with a diff, and the command fails.
func TestTestCommandFails(t *testing.T) {
	out, _, err := runCmd(t, testCmd, "../../rules/testdata/sidecar-test/failing.yaml")
	if err == nil || err.Error() != "3 of 4 rule tests failed" {
		t.Errorf("runTest(failing.yaml) error = %v, want 3 of 4 failed", err)
	}
	for _, want := range []string{
		"  PASS  this one passes\n",
		"  FAIL  wrong greeting text (../../rules/testdata/sidecar-test/failing.yaml:10)\n",
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

func TestTestCommandFileErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("rules.yaml", "rules:\n  - {name: a, on: x, join: '[\"r\"]'}\n")
	for _, tc := range []struct {
		name, content, want string
	}{
		{"misspelt key", "rules: rules.yaml\ntests:\n  - name: t\n    evnt: {type: x}\n    expect: []\n", "field evnt not found"},
		{"missing expect", "rules: rules.yaml\ntests:\n  - {name: t, event: {type: x}}\n", "missing expect (write expect: [] when the event should cause nothing)"},
		{"missing type", "rules: rules.yaml\ntests:\n  - {name: t, event: {data: {}}, expect: []}\n", "event: missing type"},
		{"bad expected key", "rules: rules.yaml\ntests:\n  - {name: t, event: {type: x}, expect: [{action: join, room: [r]}]}\n", `unknown key "room"`},
		{"rules do not load", "rules: nope.yaml\ntests:\n  - {name: t, event: {type: x}, expect: []}\n", "load rules: open"},
		{"a rules file", "rules:\n  - {name: a, on: x, join: '[\"r\"]'}\n", "a rules file, not a test file"},
		{"expected error that did not happen", "rules: rules.yaml\ntests:\n  - {name: t, event: {type: x}, expect: [{action: join, rooms: [r]}], errors: [a]}\n", `expected rule "a" to fail at run time; it did not`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := write("t.yaml", tc.content)
			out, _, err := runCmd(t, testCmd, p)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("runTest() = %v\n%s\nwant output containing %q", err, out, tc.want)
			}
		})
	}
	if _, errOut, err := runCmd(t, testCmd); !errors.Is(err, errReported) || !strings.Contains(errOut, "usage: sidecar test FILE...") {
		t.Errorf("runTest() without files = %v, %q", err, errOut)
	}
}

// TestTestCommandIdsAndOrder: expected ids may be numbers, rule is
// optional, and output order matters.
func TestTestCommandIdsAndOrder(t *testing.T) {
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
	out, _, err := runCmd(t, testCmd, p)
	if !strings.Contains(out, "  PASS  numbers\n") || !strings.Contains(out, "  FAIL  swapped") || err == nil {
		t.Errorf("runTest() = %v\n%s", err, out)
	}
}

func TestCheckCommand(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sidecar.yaml")
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("sidecar.yaml", "auth:\n  jwt_secret: a-long-enough-development-secret-0123456789\nrules:\n  file: my-rules.yaml\n")

	write("my-rules.yaml", rulesWith(3, "e"))
	out, _, err := runCmd(t, checkCmd, "--config", cfg)
	if want := "ok: 3 rules in " + filepath.Join(dir, "my-rules.yaml") + "\n"; err != nil || out != want {
		t.Errorf("check (good rules) = %v, %q, want %q", err, out, want)
	}

	write("my-rules.yaml", "rules:\n  - name: a\n    on: x\n    emit: {event: e, to: usr(1)}\n  - name: a\n    on: y\n    join: '[\"r\"]'\n")
	out, errOut, err := runCmd(t, checkCmd, "--config", cfg)
	rulesPath := filepath.Join(dir, "my-rules.yaml")
	want := rulesPath + ":4: rule \"a\": emit.to: unknown name usr\n" +
		rulesPath + ":5: rule \"a\": duplicate name (first defined at line 2)\n"
	if err == nil || out != "" || !strings.HasSuffix(errOut, want) {
		t.Errorf("check (bad rules) = %v, stdout %q, stderr %q, want stderr ending %q", err, out, errOut, want)
	}
	if err != nil && err.Error() != rulesPath+": 2 errors" {
		t.Errorf("check (bad rules) error = %q", err)
	}

	write("sidecar.yaml", "nope: 1\n")
	if _, _, err := runCmd(t, checkCmd, "--config", cfg); err == nil || !strings.Contains(err.Error(), "config:") {
		t.Errorf("check (bad config) = %v", err)
	}

	// The shipped example config and rules pass together.
	if _, err := os.Stat("../../config.example.yaml"); err == nil {
		t.Setenv("JWT_SECRET", "a-long-enough-development-secret-0123456789")
		out, errOut, err := runCmd(t, checkCmd, "--config", "../../config.example.yaml")
		if err != nil || !strings.HasPrefix(out, "ok: ") || !strings.HasSuffix(out, string(filepath.Separator)+"rules.yaml\n") {
			t.Errorf("check of config.example.yaml = %v, %q, %q", err, out, errOut)
		}
	}
}
