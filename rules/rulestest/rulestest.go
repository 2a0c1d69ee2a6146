// Package rulestest runs rule test files: an input event and the outputs
// the rules should decide for it, or none, in the spirit of
// `promtool test rules`. `sidecar test FILE...` is Run; other programs may
// call it too. It imports rules and nothing else of the project.
//
// A test file:
//
//	rules: ../../rules.yaml          # the rules file, relative to this file
//	env: {APP_URL: http://app.test}  # ${VAR} values; the process environment is not used
//	tests:
//	  - name: a new booking notifies its provider
//	    event:                       # type is required; the rest is optional
//	      type: booking.created
//	      source: webhook            # default: client for client.*, lifecycle for
//	                                 # connection.* and presence.*, else webhook
//	      id: evt_1                  # default: test-N
//	      time: 2024-01-01T00:00:00Z # default: this; now() returns it too
//	      sender: {id: u1, role: customer}
//	      data: {id: b1, providerId: p1}
//	    expect:                      # the outputs, in order; expect: [] for none
//	      - rule: booking-created    # optional: not compared when left out
//	        action: emit             # default emit; or forward, join, leave
//	        event: newNotification
//	        to: {users: [p1]}        # all, users, rooms, except
//	        data: {title: New booking}
//	      - {action: forward, url: "http://app.test/x"}   # data: the body, if shaped
//	      - {action: join, rooms: ["role:customer"], user: u1}
//	    errors: [rule-name]          # rules expected to fail at run time; default none
//
// Sender and data go through JSON first, as they would in production, so
// numbers are float64 and 42 in a test means what 42 in a webhook means.
package rulestest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sidecar/sidecar/rules"
)

// Result counts the cases run. A file that could not run at all counts as
// one failed case.
type Result struct {
	Passed, Failed int
}

// Err is nil if nothing failed, else an error saying how many cases did.
func (r Result) Err() error {
	if r.Failed == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d rule tests failed", r.Failed, r.Passed+r.Failed)
}

// Run runs every case of every file in paths and writes, for each, PASS or
// FAIL with a diff of expected and actual outputs, then a "N passed, M
// failed" line. The error is Result.Err, or ctx's error if ctx ends first.
func Run(ctx context.Context, paths []string, w io.Writer) (Result, error) {
	var res Result
	for _, path := range paths {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		r, err := RunFile(ctx, path, w)
		res.Passed, res.Failed = res.Passed+r.Passed, res.Failed+r.Failed
		if err != nil {
			fmt.Fprintf(w, "%s\n  ERROR %v\n", path, indent(err.Error(), "        "))
			res.Failed++
		}
	}
	fmt.Fprintf(w, "%d passed, %d failed\n", res.Passed, res.Failed)
	return res, res.Err()
}

type testFile struct {
	Rules string            `yaml:"rules"`
	Env   map[string]string `yaml:"env"`
	Tests []testCase        `yaml:"tests"`
}

type testCase struct {
	Name   string    `yaml:"name"`
	Event  testEvent `yaml:"event"`
	Expect *[]any    `yaml:"expect"`
	Errors []string  `yaml:"errors"`
	line   int
}

type testEvent struct {
	Type   string `yaml:"type"`
	Source string `yaml:"source"`
	ID     string `yaml:"id"`
	Time   string `yaml:"time"`
	Sender any    `yaml:"sender"`
	Data   any    `yaml:"data"`
}

// defaultTestTime is the time of test events that name none.
var defaultTestTime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// RunFile runs the cases of one test file and writes PASS or FAIL for each
// to w. The error means the file could not run at all (unreadable,
// malformed, or its rules do not load); failed cases are counted in the
// Result, not returned as an error.
func RunFile(ctx context.Context, path string, w io.Writer) (Result, error) {
	var res Result
	tf, err := readTestFile(path)
	if err != nil {
		return Result{}, err
	}
	rulesPath := tf.rulesPath(path)
	clock := defaultTestTime
	set, err := rules.Load(rulesPath, rules.Options{
		Registry: rules.Builtin(),
		Lookup:   func(k string) (string, bool) { v, ok := tf.Env[k]; return v, ok },
		Now:      func() time.Time { return clock },
	})
	if err != nil {
		return Result{}, err
	}
	fmt.Fprintf(w, "%s (rules: %s)\n", path, rulesPath)
	for i, tc := range tf.Tests {
		name := tc.Name
		if name == "" {
			name = fmt.Sprintf("test #%d", i+1)
		}
		ev, err := tc.event(i)
		if err == nil && tc.Expect == nil {
			err = errors.New("missing expect (write expect: [] when the event should cause nothing)")
		}
		var problems []string
		if err != nil {
			problems = []string{err.Error()}
		} else {
			clock = ev.Time
			problems = runCase(ctx, set, ev, &tc)
		}
		if len(problems) == 0 {
			res.Passed++
			fmt.Fprintf(w, "  PASS  %s\n", name)
			continue
		}
		res.Failed++
		fmt.Fprintf(w, "  FAIL  %s (%s:%d)\n", name, path, tc.line)
		for _, p := range problems {
			fmt.Fprintf(w, "        %s\n", indent(p, "        "))
		}
	}
	return res, nil
}

// readTestFile reads and checks a test file, with each case's line.
func readTestFile(path string) (*testFile, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var tf testFile
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(src))
	dec.KnownFields(true) // a misspelt key is an error, not a silently empty field
	if err := dec.Decode(&tf); err != nil {
		if looksLikeRules(&doc) {
			return nil, fmt.Errorf("%s: a rules file, not a test file (its rules: names the rules file to test)", path)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	caseLines(&doc, tf.Tests)
	if tf.Rules == "" {
		return nil, fmt.Errorf("%s: missing rules: (the rules file, relative to this file)", path)
	}
	if len(tf.Tests) == 0 {
		return nil, fmt.Errorf("%s: no tests", path)
	}
	return &tf, nil
}

// rulesPath is the rules file a test file at path names.
func (tf *testFile) rulesPath(path string) string {
	if filepath.IsAbs(tf.Rules) {
		return tf.Rules
	}
	return filepath.Join(filepath.Dir(path), tf.Rules)
}

// looksLikeRules reports whether doc has a top-level rules: list, as a
// rules file has, where a test file has rules: FILE.
func looksLikeRules(doc *yaml.Node) bool {
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return false
	}
	root := doc.Content[0]
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "rules" {
			return root.Content[i+1].Kind == yaml.SequenceNode
		}
	}
	return false
}

// caseLines records each case's line, for FAIL messages.
func caseLines(doc *yaml.Node, cases []testCase) {
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return
	}
	root := doc.Content[0]
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "tests" && root.Content[i+1].Kind == yaml.SequenceNode {
			for j, n := range root.Content[i+1].Content {
				if j < len(cases) {
					cases[j].line = n.Line
				}
			}
		}
	}
}

func (tc *testCase) event(i int) (*rules.Event, error) {
	e := tc.Event
	if e.Type == "" {
		return nil, errors.New("event: missing type")
	}
	ev := &rules.Event{ID: e.ID, Type: e.Type, Source: e.Source, Time: defaultTestTime}
	if ev.ID == "" {
		ev.ID = fmt.Sprintf("test-%d", i+1)
	}
	if ev.Source == "" {
		switch {
		case strings.HasPrefix(e.Type, "client."):
			ev.Source = "client"
		case strings.HasPrefix(e.Type, "connection."), strings.HasPrefix(e.Type, "presence."):
			ev.Source = "lifecycle"
		default:
			ev.Source = "webhook"
		}
	}
	if e.Time != "" {
		t, err := time.Parse(time.RFC3339, e.Time)
		if err != nil {
			return nil, fmt.Errorf("event.time: %w", err)
		}
		ev.Time = t
	}
	var err error
	if ev.Data, err = viaJSON(e.Data); err != nil {
		return nil, fmt.Errorf("event.data: %w", err)
	}
	sender, err := viaJSON(e.Sender)
	if err != nil {
		return nil, fmt.Errorf("event.sender: %w", err)
	}
	switch s := sender.(type) {
	case nil:
	case map[string]any:
		ev.Sender = s
	default:
		return nil, errors.New("event.sender: want a mapping of claims")
	}
	if ev.Sender == nil {
		ev.Sender = map[string]any{} // as the router passes a webhook's
	}
	return ev, nil
}

// viaJSON returns v as encoding/json would decode its JSON: numbers become
// float64, maps map[string]any.
func viaJSON(v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	err = json.Unmarshal(b, &out)
	return out, err
}
