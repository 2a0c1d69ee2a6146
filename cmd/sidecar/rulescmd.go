package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sidecar/sidecar/config"
	"github.com/sidecar/sidecar/rules"
)

// runCheck is `sidecar check [--config F]`: it loads the config and the
// rules file as serve would, prints "ok: N rules in FILE", or every problem
// as "file:line: ..." on stderr and fails.
func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file (YAML); SIDECAR_* environment variables override it")
	if err := fs.Parse(args); err != nil {
		return errReported
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "check: unexpected argument %q\n", fs.Arg(0))
		return errReported
	}
	environ := os.Environ()
	cfg, warnings, err := config.Load(*path, environ)
	for _, w := range warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	set, err := rules.Load(cfg.Rules.File, rules.Options{Registry: rules.Builtin(), Lookup: lookupIn(environ)})
	if err != nil {
		var list rules.ErrorList
		if !errors.As(err, &list) {
			return err
		}
		for _, e := range list {
			fmt.Fprintln(stderr, e.Error())
		}
		return fmt.Errorf("%s: %d %s", cfg.Rules.File, len(list), plural(len(list), "error", "errors"))
	}
	fmt.Fprintf(stdout, "ok: %d rules in %s\n", set.Len(), cfg.Rules.File)
	return nil
}

// lookupIn is os.LookupEnv over environ ("K=V" strings).
func lookupIn(environ []string) func(string) (string, bool) {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// A rule test file, for `sidecar test`, in the spirit of promtool's:
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

// runTest is `sidecar test FILE...`: it runs every case of every test file
// and prints PASS or FAIL for each, with a diff of expected and actual
// outputs on failure. It fails if any case or file does.
func runTest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return errReported
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "usage: sidecar test FILE...")
		return errReported
	}
	var passed, failed int
	for _, path := range fs.Args() {
		if err := ctx.Err(); err != nil {
			return err
		}
		p, f, err := runTestFile(ctx, path, stdout)
		passed, failed = passed+p, failed+f
		if err != nil {
			fmt.Fprintf(stdout, "%s\n  ERROR %v\n", path, indent(err.Error(), "        "))
			failed++
		}
	}
	fmt.Fprintf(stdout, "%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		return fmt.Errorf("%d of %d rule tests failed", failed, passed+failed)
	}
	return nil
}

// runTestFile runs one test file. An error means the file could not run
// at all (unreadable, malformed, or its rules do not load).
func runTestFile(ctx context.Context, path string, stdout io.Writer) (passed, failed int, err error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	var tf testFile
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return 0, 0, fmt.Errorf("%s: %w", path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(src))
	dec.KnownFields(true) // a misspelt key is an error, not a silently empty field
	if err := dec.Decode(&tf); err != nil {
		if looksLikeRules(&doc) {
			return 0, 0, fmt.Errorf("%s: a rules file, not a test file (its rules: names the rules file to test)", path)
		}
		return 0, 0, fmt.Errorf("%s: %w", path, err)
	}
	caseLines(&doc, tf.Tests)
	if tf.Rules == "" {
		return 0, 0, fmt.Errorf("%s: missing rules: (the rules file, relative to this file)", path)
	}
	if len(tf.Tests) == 0 {
		return 0, 0, fmt.Errorf("%s: no tests", path)
	}
	rulesPath := tf.Rules
	if !filepath.IsAbs(rulesPath) {
		rulesPath = filepath.Join(filepath.Dir(path), rulesPath)
	}
	clock := defaultTestTime
	set, err := rules.Load(rulesPath, rules.Options{
		Registry: rules.Builtin(),
		Lookup:   func(k string) (string, bool) { v, ok := tf.Env[k]; return v, ok },
		Now:      func() time.Time { return clock },
	})
	if err != nil {
		return 0, 0, err
	}
	fmt.Fprintf(stdout, "%s (rules: %s)\n", path, rulesPath)
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
			passed++
			fmt.Fprintf(stdout, "  PASS  %s\n", name)
			continue
		}
		failed++
		fmt.Fprintf(stdout, "  FAIL  %s (%s:%d)\n", name, path, tc.line)
		for _, p := range problems {
			fmt.Fprintf(stdout, "        %s\n", indent(p, "        "))
		}
	}
	return passed, failed, nil
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

// runCase matches ev and compares with the case's expectations. It returns
// what differs, nothing if the case passes.
func runCase(ctx context.Context, set *rules.Set, ev *rules.Event, tc *testCase) []string {
	outs, matchErr := set.Match(ctx, ev, nil)
	var problems []string

	want, err := canonExpected(*tc.Expect)
	if err != nil {
		return []string{"expect: " + err.Error()}
	}
	gotAny, err := viaJSON(outs)
	if err != nil {
		return []string{"outputs: " + err.Error()}
	}
	got, _ := gotAny.([]any)
	for i, g := range got {
		gm := canonOutput(g.(map[string]any))
		if i < len(want) {
			if _, ok := want[i].(map[string]any)["rule"]; !ok {
				delete(gm, "rule") // the case does not care which rule
			}
		}
		got[i] = gm
	}
	if !reflect.DeepEqual(normalizeNil(want), normalizeNil(got)) {
		problems = append(problems, "outputs differ:\n"+diff(renderOutputs(want), renderOutputs(got)))
	}

	failedRules := map[string]string{}
	var walk func(error)
	walk = func(err error) {
		var re *rules.RuleError
		if u, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range u.Unwrap() {
				walk(e)
			}
		} else if errors.As(err, &re) {
			failedRules[re.Rule] = re.Error()
		} else if err != nil {
			failedRules[""] = err.Error()
		}
	}
	walk(matchErr)
	for _, name := range tc.Errors {
		if _, ok := failedRules[name]; !ok {
			problems = append(problems, fmt.Sprintf("expected rule %q to fail at run time; it did not", name))
		}
	}
	var unexpected []string
	for name, msg := range failedRules {
		if !slices.Contains(tc.Errors, name) {
			unexpected = append(unexpected, "unexpected run-time error: "+msg)
		}
	}
	slices.Sort(unexpected)
	return append(problems, unexpected...)
}

// outputKeys are the keys of an output, in the order they are shown.
var outputKeys = []string{"rule", "action", "event", "to", "url", "rooms", "user", "data"}

var targetKeys = []string{"all", "users", "rooms", "except"}

// canonExpected checks the expected outputs and puts them in the form
// actual outputs take after JSON: ids as strings, action defaulting to
// emit, empty fields dropped.
func canonExpected(items []any) ([]any, error) {
	out := make([]any, 0, len(items))
	for i, it := range items {
		m, ok := it.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("item %d: want a mapping with keys %s", i+1, strings.Join(outputKeys, ", "))
		}
		for k := range m {
			if !slices.Contains(outputKeys, k) {
				return nil, fmt.Errorf("item %d: unknown key %q (want %s)", i+1, k, strings.Join(outputKeys, ", "))
			}
		}
		m = maps.Clone(m)
		if _, ok := m["action"]; !ok {
			m["action"] = "emit"
		}
		if to, ok := m["to"]; ok {
			tm, ok := to.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("item %d: to: want a mapping with keys %s", i+1, strings.Join(targetKeys, ", "))
			}
			tm = maps.Clone(tm)
			for k, v := range tm {
				switch {
				case !slices.Contains(targetKeys, k):
					return nil, fmt.Errorf("item %d: to: unknown key %q (want %s)", i+1, k, strings.Join(targetKeys, ", "))
				case k != "all":
					tm[k] = idStrings(v)
				}
			}
			m["to"] = tm
		}
		if v, ok := m["rooms"]; ok {
			m["rooms"] = idStrings(v)
		}
		if v, ok := m["user"]; ok {
			m["user"] = idString(v)
		}
		j, err := viaJSON(m)
		if err != nil {
			return nil, fmt.Errorf("item %d: %w", i+1, err)
		}
		out = append(out, canonOutput(j.(map[string]any)))
	}
	return out, nil
}

// canonOutput drops the fields that say nothing (empty lists, all: false,
// empty strings, null data), so that expected and actual outputs compare
// on what they mean.
func canonOutput(m map[string]any) map[string]any {
	if to, ok := m["to"].(map[string]any); ok {
		for k, v := range to {
			if isEmpty(v) || v == false {
				delete(to, k)
			}
		}
	}
	for k, v := range m {
		if k != "data" && isEmpty(v) || v == nil {
			delete(m, k)
		}
	}
	return m
}

func isEmpty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return x == ""
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	}
	return false
}

// normalizeNil makes an empty list and no list compare equal.
func normalizeNil(l []any) []any {
	if len(l) == 0 {
		return nil
	}
	return l
}

func idStrings(v any) any {
	l, ok := v.([]any)
	if !ok {
		return v
	}
	out := make([]any, len(l))
	for i, e := range l {
		out[i] = idString(e)
	}
	return out
}

// idString writes a scalar id as rules compare it: 42 -> "42".
func idString(v any) any {
	switch x := v.(type) {
	case int:
		return strconv.Itoa(x)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case uint64:
		return strconv.FormatUint(x, 10)
	}
	return v
}

// renderOutputs shows outputs as YAML, one list item each, keys in a fixed
// order, for diffs people can read.
func renderOutputs(items []any) []string {
	if len(items) == 0 {
		return []string{"(no outputs)"}
	}
	var lines []string
	for _, it := range items {
		m := it.(map[string]any)
		first := true
		for _, k := range outputKeys {
			v, ok := m[k]
			if !ok {
				continue
			}
			var b bytes.Buffer
			enc := yaml.NewEncoder(&b)
			enc.SetIndent(2)
			if err := enc.Encode(map[string]any{k: v}); err != nil {
				b.Reset()
				fmt.Fprintf(&b, "%s: %v\n", k, v)
			}
			for _, l := range strings.Split(strings.TrimRight(b.String(), "\n"), "\n") {
				prefix := "  "
				if first {
					prefix, first = "- ", false
				}
				lines = append(lines, prefix+l)
			}
		}
	}
	return lines
}

// diff is a line diff of want and got (longest common subsequence):
// "-" lines are expected only, "+" lines actual only.
func diff(want, got []string) string {
	n, m := len(want), len(got)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if want[i] == got[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var b strings.Builder
	b.WriteString("--- expected\n+++ got\n")
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && want[i] == got[j]:
			fmt.Fprintf(&b, "  %s\n", want[i])
			i, j = i+1, j+1
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			fmt.Fprintf(&b, "- %s\n", want[i])
			i++
		default:
			fmt.Fprintf(&b, "+ %s\n", got[j])
			j++
		}
	}
	return strings.TrimRight(b.String(), "\n")
}

func indent(s, prefix string) string {
	return strings.ReplaceAll(s, "\n", "\n"+prefix)
}
