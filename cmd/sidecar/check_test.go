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

// TestTestCommand: `sidecar test` is rulestest.Run; the runner's own
// tests are in rules/rulestest.
func TestTestCommand(t *testing.T) {
	out, _, err := runCmd(t, testCmd, "../../rules/rulestest/testdata/passing.yaml")
	if err != nil || !strings.HasSuffix(out, "2 passed, 0 failed\n") {
		t.Errorf("sidecar test passing.yaml = %v\n%s", err, out)
	}
	out, _, err = runCmd(t, testCmd, "../../rules/rulestest/testdata/failing.yaml")
	if err == nil || err.Error() != "3 of 4 rule tests failed" || !strings.Contains(out, "  FAIL  ") {
		t.Errorf("sidecar test failing.yaml = %v\n%s", err, out)
	}
	if _, errOut, err := runCmd(t, testCmd); !errors.Is(err, errReported) || !strings.Contains(errOut, "usage: sidecar test FILE...") {
		t.Errorf("sidecar test without files = %v, %q", err, errOut)
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

	write("my-rules.yaml", "rules:\n  - {name: r0, on: x, emit: {event: e, to: all()}}\n"+
		"  - {name: r1, on: x, emit: {event: e, to: all()}}\n  - {name: r2, on: x, join: '[\"r\"]'}\n")
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

	// An empty rules list fails the check, unless rules.allow_empty.
	write("my-rules.yaml", "rules: []\n")
	_, errOut, err = runCmd(t, checkCmd, "--config", cfg)
	if want := rulesPath + ":1: no rules: an empty list turns off all routing (set rules.allow_empty: true in the config to allow it)\n"; err == nil || !strings.HasSuffix(errOut, want) {
		t.Errorf("check (empty rules) = %v, stderr %q, want it to end %q", err, errOut, want)
	}
	t.Setenv("SIDECAR_RULES__ALLOW_EMPTY", "true")
	out, _, err = runCmd(t, checkCmd, "--config", cfg)
	if want := "ok: 0 rules in " + rulesPath + "\n"; err != nil || out != want {
		t.Errorf("check (empty rules, allowed) = %v, %q, want %q", err, out, want)
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

// TestCheckTypeErrors: where the typed environment knows the types (event's
// fields, what len() returns), check refuses a comparison of a number with
// a string at load. data's fields come from JSON and have no type until an
// event arrives: check --strict runs the rules on the test files' events
// and reports the type error at the rules file's line.
func TestCheckTypeErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg := write("sidecar.yaml", "auth:\n  jwt_secret: a-long-enough-development-secret-0123456789\nstore: {path: ':memory:'}\n")
	rulesPath := filepath.Join(dir, "rules.yaml")

	write("rules.yaml", "rules:\n  - name: typed\n    on: review.created\n    if: len(data.comment) > \"high\"\n    emit: {event: x, to: all()}\n"+
		"  - name: when\n    on: review.created\n    if: event.time > 3\n    emit: {event: x, to: all()}\n")
	_, errOut, err := runCmd(t, checkCmd, "--config", cfg)
	for _, want := range []string{
		rulesPath + `:4: rule "typed": if: invalid operation: > (mismatched types int and string)`,
		rulesPath + `:8: rule "when": if: invalid operation: > (mismatched types time.Time and int)`,
	} {
		if err == nil || !strings.Contains(errOut, want+"\n") {
			t.Errorf("check (typed comparisons) = %v, stderr %q, want %q", err, errOut, want)
		}
	}

	write("rules.yaml", "rules:\n  - name: high-rating\n    on: review.created\n    if: data.rating > \"high\"\n    emit: {event: x, to: all()}\n")
	tests := write("rules_test.yaml", "rules: rules.yaml\ntests:\n  - name: a review\n"+
		"    event: {type: review.created, data: {rating: 4}}\n    expect: []\n")
	if out, _, err := runCmd(t, checkCmd, "--config", cfg); err != nil || !strings.HasPrefix(out, "ok: 1 rules") {
		t.Fatalf("check without --strict = %v, %q; want ok: the load-time checker cannot know data.rating's type", err, out)
	}
	out, errOut, err := runCmd(t, checkCmd, "--config", cfg, "--strict", tests)
	want := rulesPath + `:4: rule "high-rating": if: invalid operation: float64 > string (on the event of "a review", ` + tests + ":3)\n"
	if err == nil || out != "" || !strings.HasSuffix(errOut, want) || err.Error() != rulesPath+": 1 problem on 1 example event" {
		t.Errorf("check --strict = %v, stdout %q, stderr %q, want it to end %q", err, out, errOut, want)
	}

	write("rules.yaml", "rules:\n  - name: high-rating\n    on: review.created\n    if: data.rating > 3\n    emit: {event: x, to: all()}\n")
	if out, errOut, err := runCmd(t, checkCmd, "--config", cfg, "--strict", tests); err != nil || out != "ok: 1 rules in "+rulesPath+", run on 1 example event\n" {
		t.Errorf("check --strict (fixed) = %v, %q, %q", err, out, errOut)
	}
	if _, errOut, err := runCmd(t, checkCmd, "--config", cfg, "--strict"); !errors.Is(err, errReported) || !strings.Contains(errOut, "name them, e.g. testdata/rules/*.yaml") {
		t.Errorf("check --strict without test files = %v, %q", err, errOut)
	}
	if _, errOut, err := runCmd(t, checkCmd, "--config", cfg, tests); !errors.Is(err, errReported) || !strings.Contains(errOut, "test files go with --strict") {
		t.Errorf("check with a test file but no --strict = %v, %q", err, errOut)
	}

	// The shipped rules pass --strict on their shipped tests, as the README shows.
	t.Setenv("JWT_SECRET", "a-long-enough-development-secret-0123456789")
	files, _ := filepath.Glob("../../testdata/rules/*.yaml")
	out, errOut, err = runCmd(t, checkCmd, append([]string{"--config", "../../config.example.yaml", "--strict"}, files...)...)
	if err != nil || !strings.HasPrefix(out, "ok: ") || !strings.Contains(out, "run on ") {
		t.Errorf("check --strict of the shipped rules = %v, %q, %q", err, out, errOut)
	}
}
