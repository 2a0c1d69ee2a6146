package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// readmeBlock returns the first fenced block of README.md in lang that
// contains marker.
func readmeBlock(t *testing.T, lang, marker string) string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)```" + lang + "\n(.*?)```")
	for _, m := range re.FindAllStringSubmatch(string(readme), -1) {
		if strings.Contains(m[1], marker) {
			return m[1]
		}
	}
	t.Fatalf("README.md has no ```%s block with %q", lang, marker)
	return ""
}

// TestREADMENodeSnippet runs the tour's Node signing snippet as README.md
// prints it, with WEBHOOK_SECRET from `sidecar webhook --print-secret`
// and only the address changed: the shipped rule matches.
func TestREADMENodeSnippet(t *testing.T) {
	needNode(t)
	n := startExample(t)
	snippet := readmeBlock(t, "js", "standardwebhooks")
	if !strings.Contains(snippet, "http://localhost:8080/webhooks") {
		t.Fatalf("the snippet posts elsewhere than the tour's server:\n%s", snippet)
	}
	snippet = strings.ReplaceAll(snippet, "http://localhost:8080", "http://"+n.addr)
	var secret, errOut bytes.Buffer
	if err := run(context.Background(), []string{"webhook", "--config", "../../config.example.yaml", "--print-secret"}, &secret, &errOut); err != nil {
		t.Fatalf("webhook --print-secret: %v %s", err, errOut.String())
	}
	// The snippet imports standardwebhooks: it runs in a directory whose
	// node_modules is testdata/e2e's.
	dir := t.TempDir()
	modules, err := filepath.Abs(filepath.Join(e2eDir, "node_modules"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(modules, filepath.Join(dir, "node_modules")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "snippet.mjs"), []byte(snippet), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", "snippet.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "WEBHOOK_SECRET="+strings.TrimSpace(secret.String()))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "202 ") || !strings.Contains(string(out), `"matched":["booking-created"]`) {
		t.Fatalf("README's Node snippet: %v\n%s", err, out)
	}
}

// TestREADMEAnchorsOfRulesYAML: the sections rules.yaml's header cites
// are in README.md.
func TestREADMEAnchorsOfRulesYAML(t *testing.T) {
	rulesYAML, err := os.ReadFile("../../rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := regexp.MustCompile(`README\.md#([a-z0-9-]+)`).FindAllStringSubmatch(string(rulesYAML), -1)
	if len(anchors) == 0 {
		t.Fatal("rules.yaml cites no README.md section")
	}
	headings := map[string]bool{}
	for _, h := range regexp.MustCompile(`(?m)^#+ (.+)$`).FindAllStringSubmatch(string(readme), -1) {
		a := strings.ToLower(h[1])
		a = regexp.MustCompile("[^a-z0-9 -]").ReplaceAllString(a, "")
		headings[strings.ReplaceAll(a, " ", "-")] = true
	}
	for _, a := range anchors {
		if !headings[a[1]] {
			t.Errorf("rules.yaml cites README.md#%s; README.md has no such heading", a[1])
		}
	}
}
