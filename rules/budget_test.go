package rules

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/expr-lang/expr/builtin"
)

// hostileData is an event payload the hostile rules below work on: a list
// of 30,000 items and some long strings, all well within a webhook body.
func hostileData() map[string]any {
	list := make([]any, 30_000)
	for i := range list {
		list[i] = i
	}
	return map[string]any{"list": list, "s": strings.Repeat("s", 1000), "big": strings.Repeat("b", 100_000)}
}

// allocated runs f and returns the bytes it allocated.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// ruleKind returns the Kind of the one RuleError in err, or "".
func ruleKind(err error) string {
	var re *RuleError
	if errors.As(err, &re) {
		return re.Kind()
	}
	return ""
}

// TestHostileExpressionsFailOnBudget: rules that pass a load but would
// take the process's memory or stall it fail, for that event, on the cost
// budget, having allocated little. Without the meter, each of them ran out
// of memory, allocated half a gigabyte or more, or took seconds to minutes.
func TestHostileExpressionsFailOnBudget(t *testing.T) {
	for _, tc := range []struct {
		name, expr string
	}{
		{"repeat of repeat", `len(repeat(repeat("x", 999999), 999999)) > 0`},
		{"repeat to a gigabyte", `len(repeat(repeat("x", 1000), 1000000)) > 0`},
		{"repeat of data", `len(repeat(data.big, 100000)) > 0`},
		{"quadratic reduce", `len(reduce(1..30000, #acc + "xxxxxxxxxx", "")) > 0`},
		{"longer quadratic reduce", `len(reduce(1..100000, #acc + "xxxxxxxxxx", "")) > 0`},
		{"nested loops over data", `any(data.list, any(data.list, false))`},
		{"let doubling", "let a = data.s + data.s; " + doubling(24) + " len(a24) > 0"},
		{"long + chain over data", strings.Repeat("data.big + ", 300) + `"" != ""`},
		{"replace inserting", `len(replace(data.big, "", data.s)) > 0`},
		{"replace growing", `len(replace(data.big, "b", data.s)) > 0`},
		{"join of one string many times", `len(join(map(1..1000, data.big), data.big)) > 0`},
		{"toJSON of a shared list", `len(toJSON(reduce(1..40, [#acc, #acc], 1))) > 0`},
		{"toJSON of deep nesting", `len(toJSON(reduce(1..50000, [#acc], 0))) > 0`},
		{"string of a shared list", `len(string(reduce(1..40, [#acc, #acc], 1))) > 0`},
		{"flatten of a shared list", `len(flatten(reduce(1..40, [#acc, #acc], 1))) > 0`},
		{"uniq is quadratic", `len(uniq(1..100000)) > 0`},
		{"upper of data, many times", `len([` + strings.Repeat("upper(data.big), ", 2000) + `]) > 0`},
		{"split into bytes, many times", `len([` + strings.Repeat(`split(data.big, ""), `, 100) + `]) > 0`},
		{"regexp on data, many times", strings.Repeat(`data.big matches "^(a|b)*c" || `, 1500) + `false`},
		{"in over data, many times", strings.Repeat(`-1 in data.list || `, 1000) + `false`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// No timeout: these must fail on the budget, however slow the
			// machine (-race is ten times slower); TestTimeout covers it.
			s := mustParse(t, fmt.Sprintf("rules:\n- name: r\n  on: x\n  if: %q\n  join: '[\"r\"]'\n", tc.expr), Options{Timeout: time.Hour})
			ev := &Event{Type: "x", Data: hostileData()}
			var out []Output
			var err error
			n := allocated(func() { out, err = s.Match(context.Background(), ev, nil) })
			if ruleKind(err) != KindBudget || len(out) != 0 {
				t.Errorf("Match() = %v, %v, want a %q error", out, err, KindBudget)
			}
			if want := "cost budget of 1000000 exceeded (loops and string building); raise rules.max_cost or simplify"; err != nil && !strings.Contains(err.Error(), want) {
				t.Errorf("Match() error = %v, want %q", err, want)
			}
			if n > 64<<20 {
				t.Errorf("Match() allocated %d MB, want less than 64", n>>20)
			}
		})
	}
}

// doubling is "let a1 = a0 + a0; ... let an = ...;", a0 being a.
func doubling(n int) string {
	var b strings.Builder
	b.WriteString("let a0 = a;")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, " let a%d = a%d + a%d;", i, i-1, i-1)
	}
	return b.String()
}

// TestHostileOutputsFailOnBudget: what an action yields is measured before
// the engine gets it, when the expression could have built it by sharing
// (reduce, let): a value of a trillion items would take the engine's JSON
// encoder with it.
func TestHostileOutputsFailOnBudget(t *testing.T) {
	for _, tc := range []struct{ name, action string }{
		{"emit.data", `emit: {event: e, to: all(), data: 'reduce(1..40, [#acc, #acc], 1)'}`},
		{"emit.data with let", `emit: {event: e, to: all(), data: 'let a = [data.big, data.big]; let b = [a, a, a, a, a, a]; [b, b, b, b, b, b]'}`},
		{"forward.data", `forward: {url: "http://app/x", data: 'map(1..1000, data)'}`},
		{"emit.to", `emit: {event: e, to: 'let t = users(data.list); [` + strings.Repeat("t, ", 300) + `]'}`},
		{"emit.to, except of except", `emit: {event: e, to: '` + strings.Repeat("except(", 100) + "except(all(), data.list)" + strings.Repeat(`, "x")`, 100) + `'}`},
		{"emit.data nested deep", `emit: {event: e, to: all(), data: 'reduce(1..20000, [#acc], 0)'}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustParse(t, "rules:\n- name: r\n  on: x\n  "+tc.action+"\n", Options{Timeout: time.Hour})
			out, err := match(t, s, &Event{Type: "x", Data: hostileData()})
			if ruleKind(err) != KindBudget || len(out) != 0 {
				t.Errorf("Match() = %d outputs, %v, want a %q error", len(out), err, KindBudget)
			}
		})
	}
}

// TestBudgetLeavesOrdinaryRulesAlone: the rules of a working deployment,
// over data of ordinary size and a bit more, run as before.
func TestBudgetLeavesOrdinaryRulesAlone(t *testing.T) {
	items := make([]any, 1000)
	ids := make([]any, 1000)
	for i := range items {
		items[i] = map[string]any{"id": fmt.Sprint(i), "price": float64(i), "tags": []any{"a", "b"}}
		ids[i] = fmt.Sprint("u", i)
	}
	data := map[string]any{"items": items, "ids": ids, "s": strings.Repeat("s", 10_000), "status": "pending"}
	for _, tc := range []struct {
		expr string
		want any
	}{
		{`len(map(data.items, #.id))`, 1000},
		{`sum(data.items, #.price)`, 499500.0},
		{`len(filter(data.items, #.price > 500 && "a" in #.tags))`, 499},
		{`len(groupBy(data.items, int(#.price) % 10))`, 10},
		{`sortBy(data.items, -#.price)[0].id`, "999"},
		{`reduce(data.items, #acc + #.price, 0)`, 499500.0},
		{`len(reduce(1..1000, #acc + "x", ""))`, 1000},
		{`len(join(map(data.items, #.id), ","))`, 3889},
		{`len(toJSON(data.items[:100]))`, 8282},
		{`len(string(data.items[:10]))`, 291},
		{`len(uniq(map(data.items, #.price > 10)))`, 2},
		{`len(repeat("ab", 1000))`, 2000},
		{`replace(data.status, "end", "ENDING")`, "pENDINGing"},
		{`len(split(data.s, ""))`, 10_000},
		{`upper(data.status) + "/" + lower("X") + data.s[:2]`, "PENDING/xss"},
		{`let n = len(data.ids); let id = data.ids[0]; id + "/" + string(n)`, "u0/1000"},
		{`data.items[1] == data.items[1] && data.status matches "^pend"`, true},
		{`any(1..900000, # == 1)`, true},
	} {
		s := mustParse(t, fmt.Sprintf("rules:\n- name: r\n  on: x\n  emit: {event: e, to: all(), data: %q}\n", tc.expr), Options{})
		out, err := match(t, s, &Event{Type: "x", Data: data})
		if err != nil || len(out) != 1 {
			t.Errorf("%s: Match() = %v, %v", tc.expr, out, err)
			continue
		}
		if got := out[0].Data; fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s = %v, want %v", tc.expr, got, tc.want)
		}
	}
	s := mustParse(t, "rules:\n- name: r\n  on: x\n  emit: {event: e, to: 'except(all(), data.ids)', data: '{\"n\": len(data.ids)}'}\n", Options{})
	if out, err := match(t, s, &Event{Type: "x", Data: data}); err != nil || len(out) != 1 || len(out[0].To.Except) != 1000 {
		t.Errorf("except(all(), 1000 ids): Match() = %v, %v", out, err)
	}
}

// TestBudgetIsPerRule: a rule over its budget fails alone, and the next
// rule, which needs most of a budget too, gets a whole one.
func TestBudgetIsPerRule(t *testing.T) {
	s := mustParse(t, `rules:
  - {name: greedy, on: x, if: 'len(reduce(1..100000, #acc + "x", "")) > 0', join: '["greedy"]'}
  - {name: heavy, on: x, if: 'len(reduce(1..1000, #acc + "x", "")) > 0', join: '["heavy"]'}
  - {name: light, on: x, join: '["light"]'}
`, Options{MaxCost: 600_000, Timeout: time.Hour})
	for range 3 {
		out, err := match(t, s, &Event{Type: "x"})
		if got := ruleNames(out); fmt.Sprint(got) != "[heavy light]" {
			t.Errorf("Match() rules = %v, want [heavy light]", got)
		}
		var re *RuleError
		if !errors.As(err, &re) || re.RuleName() != "greedy" || re.Kind() != KindBudget {
			t.Errorf("Match() error = %v, want greedy over its budget", err)
		}
		if want := "cost budget of 600000 exceeded"; err != nil && !strings.Contains(err.Error(), want) {
			t.Errorf("Match() error = %v, want %q", err, want)
		}
	}
	if got := s.Errors()["greedy"]; got != 3 {
		t.Errorf("Errors()[greedy] = %d, want 3", got)
	}
}

// TestTimeout: a rule past Options.Timeout, or past its context's end,
// fails with the kind that says so. The timeout is a nanosecond so that
// the test needs no clock of its own; the budget is out of the way.
func TestTimeout(t *testing.T) {
	const src = `rules:
  - {name: slow, on: x, if: 'any(1..900000, # < 0)', join: '["slow"]'}
  - {name: quick, on: x, join: '["quick"]'}
`
	s := mustParse(t, src, Options{Timeout: time.Nanosecond, MaxCost: 1 << 40})
	out, err := match(t, s, &Event{Type: "x"})
	if ruleKind(err) != KindTimeout || fmt.Sprint(ruleNames(out)) != "[quick]" {
		t.Errorf("Match() = %v, %v, want quick and a %q error", ruleNames(out), err, KindTimeout)
	}
	if want := `rule "slow": if (line 2): evaluation took longer than 1ns (rules.timeout)`; err == nil || err.Error() != want {
		t.Errorf("Match() error = %v, want %q", err, want)
	}

	s = mustParse(t, src, Options{MaxCost: 1 << 40})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out, err = s.Match(ctx, &Event{Type: "x"}, nil)
	if ruleKind(err) != KindCanceled || fmt.Sprint(ruleNames(out)) != "[quick]" {
		t.Errorf("Match(canceled) = %v, %v, want quick and a %q error", ruleNames(out), err, KindCanceled)
	}
	ctx, cancel = context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if _, err := s.Match(ctx, &Event{Type: "x"}, nil); ruleKind(err) != KindTimeout || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Match(past deadline) error = %v, want %q and context.DeadlineExceeded", err, KindTimeout)
	}
}

// TestMaxMemory sets expr's memory budget.
func TestMaxMemory(t *testing.T) {
	src := "rules:\n- {name: r, on: x, if: 'len(1..5000) > 0', join: '[\"r\"]'}\n"
	if _, err := match(t, mustParse(t, src, Options{}), &Event{Type: "x"}); err != nil {
		t.Errorf("Match(default MaxMemory) = %v", err)
	}
	_, err := match(t, mustParse(t, src, Options{MaxMemory: 1000}), &Event{Type: "x"})
	if ruleKind(err) != KindBudget {
		t.Errorf("Match(MaxMemory 1000) = %v, want a %q error", err, KindBudget)
	}
	want := `rule "r": if (line 2): memory budget of 1000 items exceeded (ranges, lists and maps built); raise rules.max_memory or simplify`
	if err == nil || err.Error() != want {
		t.Errorf("Match(MaxMemory 1000) = %v, want %q", err, want)
	}
}

// TestMeteringKeepsLoadErrors: the metered compile does not hide what the
// checked one finds, nor let what it refuses through.
func TestMeteringKeepsLoadErrors(t *testing.T) {
	for _, tc := range []struct{ name, rule, want string }{
		{"bad id type", `emit: {event: e, to: 'user(true)'}`,
			`t.yaml:4: rule "r": emit.to: cannot use bool as argument (type string) to call user`},
		{"bad id type in a +", `emit: {event: e, to: 'user("a" + "b" == "c")'}`,
			`t.yaml:4: rule "r": emit.to: cannot use bool as argument (type string) to call user`},
		{"if yields a string", `if: '"a" + "b"'` + "\n  join: '[\"r\"]'",
			`t.yaml:4: rule "r": if: expected bool, but got string`},
		{"if yields a string from a let", `if: 'let s = "a" + "b"; s'` + "\n  join: '[\"r\"]'",
			`t.yaml:4: rule "r": if: expected bool, but got string`},
		{"if yields a list from a loop", `if: 'map(data.list, # + "x")'` + "\n  join: '[\"r\"]'",
			`t.yaml:4: rule "r": if: expected bool, but got []interface {}`},
		{"emit.to yields a string", `emit: {event: e, to: '"u" + string(1)'}`,
			`t.yaml:4: rule "r": emit.to: yields string, want a target such as user(id), or a list of them`},
		{"join yields a map", `join: 'let m = {"a": data.x}; m'`,
			`t.yaml:4: rule "r": join: yields map[string]interface {}, want a room name or a list of them`},
		{"predicate not bool", `if: 'any(1..3, "x" + string(#))'` + "\n  join: '[\"r\"]'",
			`t.yaml:4: rule "r": if: predicate should return boolean (got string)`},
		{"reserved name", `if: '$cost(1, 2) == 1'` + "\n  join: '[\"r\"]'",
			`t.yaml:4: rule "r": if: $cost: names starting with $ are reserved (only $env is defined)`},
		{"reserved let name", `if: 'let $x = 1; $x == 1'` + "\n  join: '[\"r\"]'",
			`t.yaml:4: rule "r": if: $x: names starting with $ are reserved (only $env is defined)`},
		{"computed regexp", `if: 'data.s matches data.re'` + "\n  join: '[\"r\"]'",
			`t.yaml:4: rule "r": if: matches: the pattern must be a string literal...`},
		{"computed regexp, not matches", `if: 'not (data.s matches ("^" + data.re))'` + "\n  join: '[\"r\"]'",
			`t.yaml:4: rule "r": if: matches: the pattern must be a string literal...`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte("rules:\n- name: r\n  on: x\n  "+tc.rule+"\n"), Options{})
			var list ErrorList
			if !errors.As(err, &list) || len(list) != 1 {
				t.Fatalf("Parse() = %v, want one error", err)
			}
			got := list[0].Error()
			if prefix, ok := strings.CutSuffix(tc.want, "..."); ok {
				if !strings.HasPrefix(got, prefix) {
					t.Errorf("Parse() error = %q, want prefix %q", got, prefix)
				}
			} else if got != tc.want {
				t.Errorf("Parse() error = %q, want %q", got, tc.want)
			}
		})
	}
	// $env stays available, and a constant pattern too.
	mustParse(t, "rules:\n- {name: r, on: x, if: '$env.data.s matches \"^a\"', join: '[\"r\"]'}\n", Options{})
}

// TestEveryBuiltinIsGuarded: a builtin of a newer expr must be classified
// before it can be used in rules (an unknown one is charged as guardArgs,
// which may be wrong for it).
func TestEveryBuiltinIsGuarded(t *testing.T) {
	for _, name := range builtin.Names {
		if _, ok := builtinGuards[name]; !ok {
			t.Errorf("builtin %s has no entry in builtinGuards", name)
		}
	}
	for name, g := range builtinGuards {
		if _, ok := builtin.Index[name]; !ok {
			t.Errorf("builtinGuards[%s]: not a builtin of expr", name)
		}
		if g == guardCall {
			if _, ok := builtin.Index[name]; !ok {
				t.Errorf("builtinGuards[%s] = guardCall, but expr has no such builtin for $call to run", name)
			}
		}
	}
}

// TestMeterKeepsNoMatchFree: the pooled Input keeps its meter functions
// across events, and an event no rule matches still allocates nothing.
func TestMeterKeepsNoMatchFree(t *testing.T) {
	s := mustParse(t, "rules:\n- {name: a, on: x, join: '[\"r\" + data.x]'}\n", Options{})
	for range 3 {
		if out, err := match(t, s, &Event{Type: "x", Data: map[string]any{"x": "1"}}); err != nil || len(out) != 1 {
			t.Fatalf("Match() = %v, %v", out, err)
		}
	}
	ev := &Event{Type: "y"}
	out := make([]Output, 0, 4)
	if n := testing.AllocsPerRun(100, func() { out, _ = s.Match(context.Background(), ev, out[:0]) }); n != 0 {
		t.Errorf("Match of an unmatched type: %v allocs, want 0", n)
	}
}

// TestLoadDoesNotFoldLongStringChains: expr's optimizer folds "a" + "b"
// at compile time, each step copying the whole prefix: a chain of 2,000
// literals of 1 KB (2 MB of source) made a load allocate 2 GB. The checked
// compile no longer optimizes, and the metered one folds only within the
// chains one $cost call covers.
func TestLoadDoesNotFoldLongStringChains(t *testing.T) {
	lit := `"` + strings.Repeat("x", 1000) + `"`
	src := "rules:\n- name: r\n  on: x\n  if: '" + strings.Repeat(lit+" + ", 1999) + lit + ` != ""'` + "\n  join: '[\"r\"]'\n"
	var err error
	if n := allocated(func() { _, err = Parse("t.yaml", []byte(src), Options{}) }); n > 256<<20 {
		t.Errorf("Parse(%d KB) allocated %d MB, want less than 256", len(src)>>10, n>>20)
	}
	if err != nil {
		t.Errorf("Parse() = %v", err)
	}
}
