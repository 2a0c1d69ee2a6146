package rulestest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/sidecar/sidecar/rules"
)

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
					tm[k] = expectedIDs(v)
				}
			}
			m["to"] = tm
		}
		if v, ok := m["rooms"]; ok {
			m["rooms"] = expectedIDs(v)
		}
		if v, ok := m["user"]; ok {
			m["user"] = expectedID(v)
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

// expectedIDs applies expectedID to each item of a list.
func expectedIDs(v any) any {
	l, ok := v.([]any)
	if !ok {
		return v
	}
	out := make([]any, len(l))
	for i, e := range l {
		out[i] = expectedID(e)
	}
	return out
}

// expectedID writes an expected id as the rules would: rules.ID's string
// (42 and 42.0 are "42"). What is no id (nil, a bool, a map) stays as it
// is, so that the diff shows it.
func expectedID(v any) any {
	if id, err := rules.ID(v); err == nil {
		return id
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
