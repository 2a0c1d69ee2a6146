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

// TestHelpListsTheCommands: -h, --help and help all list every command,
// one line each, on stdout, and succeed.
func TestHelpListsTheCommands(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"-help"}, {"--help"}, {"help"}} {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), args, &stdout, &stderr); err != nil {
			t.Errorf("sidecar %s = %v", args[0], err)
		}
		for _, c := range commands {
			if line := "  " + c.name + " "; !strings.Contains(stdout.String(), line) || !strings.Contains(stdout.String(), c.what+"\n") {
				t.Errorf("sidecar %s does not list %s with its line:\n%s", args[0], c.name, stdout.String())
			}
		}
	}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"nope"}, &stdout, &stderr); err == nil ||
		!strings.Contains(stderr.String(), `unknown command "nope"`) || !strings.Contains(stderr.String(), "  token ") {
		t.Errorf("sidecar nope = %v, stderr %q", err, stderr.String())
	}
}

// TestCommandHelpShowsItsFlags: `sidecar CMD -h` and `sidecar help CMD`
// show the command's usage and flags on stdout and succeed; a bad flag
// fails with the problem and the usage on stderr.
func TestCommandHelpShowsItsFlags(t *testing.T) {
	flags := map[string][]string{
		"serve":   {"-config"},
		"token":   {"-config", "-sub", "-role", "-ttl"},
		"check":   {"-config", "-strict"},
		"test":    nil,
		"webhook": {"-config", "-type", "-data", "-id", "-url", "-print-secret"},
	}
	for name, want := range flags {
		for _, args := range [][]string{{name, "-h"}, {name, "--help"}, {"help", name}} {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), args, &stdout, &stderr)
			out := stdout.String()
			if err != nil || !strings.HasPrefix(out, "usage: sidecar "+name+" ") || !strings.Contains(out, lookupCommand(name).what) {
				t.Errorf("sidecar %s = %v, stdout %q, stderr %q", strings.Join(args, " "), err, out, stderr.String())
			}
			for _, f := range want {
				if !strings.Contains(out, "  "+f+" ") && !strings.Contains(out, "  "+f+"\n") {
					t.Errorf("sidecar %s does not show %s:\n%s", strings.Join(args, " "), f, out)
				}
			}
		}
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), []string{name, "--no-such-flag"}, &stdout, &stderr)
		if !errors.Is(err, errReported) || !strings.Contains(stderr.String(), "flag provided but not defined: -no-such-flag") ||
			!strings.Contains(stderr.String(), "usage: sidecar "+name) || stdout.Len() != 0 {
			t.Errorf("sidecar %s --no-such-flag = %v, stdout %q, stderr %q", name, err, stdout.String(), stderr.String())
		}
	}
}

// TestWebhookPrintSecret: --print-secret prints webhooks.secrets[0] alone
// on stdout (for WEBHOOK_SECRET=$(...)), posts nothing, needs no --type.
func TestWebhookPrintSecret(t *testing.T) {
	t.Setenv("WEBHOOK_SECRET", "")
	os.Unsetenv("WEBHOOK_SECRET")
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"webhook", "--config", "../../config.example.yaml", "--print-secret"}, &stdout, &stderr)
	if want := "whsec_fVAXsbyPsUMoThNjlKTAnZ8Wir0pRw7lAb4Z0hedzoo=\n"; err != nil || stdout.String() != want {
		t.Errorf("webhook --print-secret = %v, %q (stderr %q), want %q", err, stdout.String(), stderr.String(), want)
	}
	t.Setenv("WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	stdout.Reset()
	err = run(context.Background(), []string{"webhook", "--config", "../../config.example.yaml", "--print-secret"}, &stdout, &stderr)
	if err != nil || stdout.String() != "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n" {
		t.Errorf("webhook --print-secret with WEBHOOK_SECRET set = %v, %q, want the variable's value", err, stdout.String())
	}
}
