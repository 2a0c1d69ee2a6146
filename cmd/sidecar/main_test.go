package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeReportsRulesErrorsOnce: a rules file that does not load stops
// serve, and its file:line errors reach the user once, in the error main
// prints, not also in the log.
func TestServeReportsRulesErrorsOnce(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("rules.yaml", "rules:\n  - name: r0\n    on: x\n    emit: {event: e, to: usr(1)}\n")
	cfg := write("sidecar.yaml", "listen: 127.0.0.1:0\nauth: {jwt_secret: a-long-enough-development-secret-0123456789}\n"+
		"store: {path: ':memory:'}\n")
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"serve", "--config", cfg}, &stdout, &stderr)
	if err == nil {
		t.Fatal("serve with a broken rules file started")
	}
	want := filepath.Join(dir, "rules.yaml") + `:4: rule "r0": emit.to: unknown name usr`
	if !strings.Contains(err.Error(), want) {
		t.Errorf("serve error = %v, want it to contain %q", err, want)
	}
	if n := strings.Count(stderr.String()+err.Error(), "unknown name usr"); n != 1 {
		t.Errorf("the rules error reaches the user %d times, want once; log:\n%s", n, stderr.String())
	}
}

// TestServeRefusesEmptyRules: serve does not start on an empty rules list
// unless rules.allow_empty is set.
func TestServeRefusesEmptyRules(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte("rules: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "sidecar.yaml")
	conf := "listen: 127.0.0.1:0\nauth: {jwt_secret: a-long-enough-development-secret-0123456789}\nstore: {path: ':memory:'}\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"serve", "--config", cfg}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "set rules.allow_empty: true") {
		t.Errorf("serve with an empty rules list = %v, want the allow_empty error", err)
	}
}
