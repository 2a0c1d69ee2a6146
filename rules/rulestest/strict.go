package rulestest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/sidecar/sidecar/rules"
)

// Example is the event of one test case, with where the case is written
// and which rules it expects to fail at run time.
type Example struct {
	Event  *rules.Event
	Name   string // the case's name
	File   string // the test file
	Line   int    // the case's line in File
	Errors []string
}

// Examples reads the events of every case of the test files. The test
// files' expectations are not used; their events are examples of what the
// app and the clients send.
func Examples(paths []string) ([]Example, error) {
	var out []Example
	var errs []error
	for _, p := range paths {
		tf, err := readTestFile(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for i, tc := range tf.Tests {
			ev, err := tc.event(i)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s:%d: %w", p, tc.line, err))
				continue
			}
			name := tc.Name
			if name == "" {
				name = fmt.Sprintf("test #%d", i+1)
			}
			out = append(out, Example{Event: ev, Name: name, File: p, Line: tc.line, Errors: tc.Errors})
		}
	}
	return out, errors.Join(errs...)
}

// Strict runs every example through set and reports, as file:line errors
// of set's rules file:
//
//   - each run-time error of a rule that the example's case does not list
//     in its errors: a type error (a number compared with a string), a
//     field the rule needs that the example lacks, an id that is not one;
//   - each rule that no example reaches (no example's type matches its
//     on), so could not be checked.
//
// The type checker at load time knows the types of event, and of what
// functions return, but not those of data's and sender's fields, which
// come from JSON; Strict runs the rules on real-looking payloads to find
// what only running can. It reads set's rules file again for each rule's
// line and on.
func Strict(ctx context.Context, set *rules.Set, examples []Example) (rules.ErrorList, error) {
	file := set.Source()
	info, err := ruleInfo(file)
	if err != nil {
		return nil, err
	}
	reached := map[string]bool{}
	var list rules.ErrorList
	for _, ex := range examples {
		for _, r := range info {
			if r.matches(ex.Event.Type) {
				reached[r.name] = true
			}
		}
		_, matchErr := set.Match(ctx, ex.Event, nil)
		for _, re := range ruleErrors(matchErr) {
			if slices.Contains(ex.Errors, re.Rule) {
				continue
			}
			line, msg := errorLine(re, info)
			list = append(list, &rules.Error{File: file, Line: line, Rule: re.Rule,
				Msg: fmt.Sprintf("%s (on the event of %q, %s:%d)", msg, ex.Name, ex.File, ex.Line)})
		}
	}
	for _, r := range info {
		if !reached[r.name] {
			list = append(list, &rules.Error{File: file, Line: r.line, Rule: r.name,
				Msg: fmt.Sprintf("no example event reaches it (on: %s): add a test case, so that it is checked", strings.Join(r.on, ", "))})
		}
	}
	slices.SortStableFunc(list, func(a, b *rules.Error) int { return a.Line - b.Line })
	return list, nil
}

// ruleErrors flattens Match's joined error into its *rules.RuleError.
func ruleErrors(err error) []*rules.RuleError {
	var out []*rules.RuleError
	var walk func(error)
	walk = func(err error) {
		var re *rules.RuleError
		if u, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range u.Unwrap() {
				walk(e)
			}
		} else if errors.As(err, &re) {
			out = append(out, re)
		} else if err != nil {
			out = append(out, &rules.RuleError{Err: err})
		}
	}
	walk(err)
	return out
}

// exprLineRe finds the line that run-time messages name ("emit.to (line
// 29): ..."): the expression's own, more precise than the rule's.
var exprLineRe = regexp.MustCompile(` \(line (\d+)\)`)

// errorLine is the line re points at, and its message without the line
// when the line moved to the front.
func errorLine(re *rules.RuleError, info []ruleLine) (int, string) {
	msg := re.Err.Error()
	if m := exprLineRe.FindStringSubmatchIndex(msg); m != nil {
		if n, err := strconv.Atoi(msg[m[2]:m[3]]); err == nil {
			return n, msg[:m[0]] + msg[m[1]:]
		}
	}
	for _, r := range info {
		if r.name == re.Rule {
			return r.line, msg
		}
	}
	return 0, msg
}

// ruleLine is where a rule is written and what it listens to.
type ruleLine struct {
	name string
	line int
	on   []string
}

func (r *ruleLine) matches(typ string) bool {
	for _, pat := range r.on {
		if ok, _ := path.Match(pat, typ); ok || pat == typ {
			return true
		}
	}
	return false
}

// ruleInfo reads the name, line and on of each rule of a rules file that
// has loaded (so its shape is known to be right).
func ruleInfo(file string) ([]ruleLine, error) {
	src, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Rules []yaml.Node `yaml:"rules"`
	}
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	out := make([]ruleLine, 0, len(doc.Rules))
	for _, n := range doc.Rules {
		var r struct {
			Name string    `yaml:"name"`
			On   yaml.Node `yaml:"on"`
		}
		if err := n.Decode(&r); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", file, n.Line, err)
		}
		rl := ruleLine{name: r.Name, line: n.Line}
		var one string
		if r.On.Decode(&one) == nil {
			rl.on = []string{one}
		} else if err := r.On.Decode(&rl.on); err != nil {
			return nil, fmt.Errorf("%s:%d: on: %w", file, r.On.Line, err)
		}
		out = append(out, rl)
	}
	return out, nil
}
