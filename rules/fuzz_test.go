package rules

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
	"go.yaml.in/yaml/v3"
)

// FuzzParse feeds arbitrary bytes to Parse: it must return a Set or an
// error, never panic, and a Set it returns must match without panicking.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*/*.yaml")
	for _, path := range seeds {
		src, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src)
	}
	f.Add([]byte("rules:\n- &a {name: x, on: '*', join: '[\"r\"]'}\n- *a\n"))
	f.Add([]byte("rules: [{name: a, on: [x, '*'], emit: [{event: e, to: 'users([1, \"2\"])'}]}]"))
	opt := Options{Lookup: lookupFrom(goldenEnv), MaxNodes: 500}
	f.Fuzz(func(t *testing.T, src []byte) {
		s, err := Parse("fuzz.yaml", src, opt)
		if err != nil {
			if s != nil {
				t.Fatalf("Parse() = %v and a non-nil Set", err)
			}
			if _, ok := err.(ErrorList); !ok {
				t.Fatalf("Parse() error %T, want ErrorList", err)
			}
			return
		}
		for _, typ := range []string{"x", "booking.created", "client.typing", "connection.open"} {
			ev := &Event{Type: typ, Sender: map[string]any{"id": "u1"}, Data: map[string]any{"id": 1, "to": "u2"}}
			_, _ = s.Match(context.Background(), ev, nil)
		}
	})
}

// FuzzMetering compiles an expression the way a load does and without the
// meter, as the package did before it, and runs both on one event: the
// metered program must compile whenever the plain one does, and yield the
// same value or fail the same way, unless it stops on a limit.
func FuzzMetering(f *testing.F) {
	for _, src := range meteringSeeds {
		f.Add(src)
	}
	at := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	opt := Options{MaxNodes: 500, Now: func() time.Time { return at }, MaxCost: 100_000}
	s := &Set{maxCost: opt.MaxCost, timeout: time.Hour, maxMemory: DefaultMaxMemory}
	plainOpts := newCompilerOptions(opt)
	f.Fuzz(func(t *testing.T, src string) {
		if strings.Contains(src, "${") || strings.TrimSpace(src) == "" || nestingDepth(src) > maxNesting {
			return // refused before either compile: ${VAR} expansion, empty, too deep
		}
		c := &Compiler{file: "f.yaml", rule: "r", opts: newCompilerOptions(opt)}
		e, err := c.compile("emit.data", &yaml.Node{Kind: yaml.ScalarNode, Value: src, Line: 1}, nil, "")
		plain, plainErr := expr.Compile(src, plainOpts...)
		if err != nil {
			if plainErr == nil && !strings.Contains(err.Error(), "names starting with $") &&
				!strings.Contains(err.Error(), "matches: the pattern must be") {
				t.Fatalf("compile(%q) = %v; without the meter it compiles", src, err)
			}
			return
		}
		if plainErr != nil {
			t.Fatalf("compile(%q) without the meter = %v; with it, no error", src, plainErr)
		}
		ev := &Event{ID: "e1", Type: "x", Source: "webhook", Time: at, Sender: map[string]any{"id": "u1", "role": "admin"},
			Data: map[string]any{"a": 1, "f": 2.5, "s": "str", "l": []any{1, "two", 3.0, nil}, "m": map[string]any{"k": "v"}, "t": true}}
		in := s.input(ev)
		defer s.release(in)
		in.meter.reset(context.Background())
		got, err := in.Eval(e)
		var vm vm.VM
		want, wantErr := vm.Run(plain, &in.env)
		switch kind := errorKind(err); {
		case err != nil && (kind == KindBudget || kind == KindTimeout):
			// stopped by a limit: fine, whatever the plain program did
		case (err != nil) != (wantErr != nil):
			t.Fatalf("%q: metered = %v, %v; plain = %v, %v", src, got, err, want, wantErr)
		case err != nil:
			if a, b := exprMessage(err), exprMessage(wantErr); a != b {
				t.Fatalf("%q: metered error %q, plain error %q", src, a, b)
			}
		case !sameValue(got, want):
			t.Fatalf("%q: metered = %#v, plain = %#v", src, got, want)
		}
	})
}

// sameValue is reflect.DeepEqual, but for the order of lists built from a
// map (keys(), toPairs()), which changes from run to run.
func sameValue(a, b any) bool {
	if reflect.DeepEqual(a, b) || fmt.Sprint(a) == fmt.Sprint(b) {
		return true
	}
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	if va.Kind() != reflect.Slice || vb.Kind() != reflect.Slice || va.Len() != vb.Len() {
		return false
	}
	sa, sb := make([]string, va.Len()), make([]string, vb.Len())
	for i := range sa {
		sa[i], sb[i] = fmt.Sprint(va.Index(i)), fmt.Sprint(vb.Index(i))
	}
	slices.Sort(sa)
	slices.Sort(sb)
	return slices.Equal(sa, sb)
}

var meteringSeeds = []string{
	`data.a + 1`, `data.s + "x" + data.s`, `"a" + "b" + "c" + "d" + "e" + "f"`, `data.s + data.a`,
	`map(data.l, # ?? 0)`, `filter(1..10, # % 2 == 0)`, `reduce(1..5, #acc + #, 0)`, `reduce(1..5, #acc + string(#), "")`,
	`sum(1..10)`, `sum(1..10, # * 2)`, `count(data.l)`, `count(data.l, # != nil)`, `any(data.l, # == 3)`,
	`all(data.l, # != nil)`, `none(data.l, # == "x")`, `one(data.l, # == 1)`, `find(data.l, # == 3.0)`,
	`findIndex(data.l, # == "two")`, `findLast(data.l, # != nil)`, `findLastIndex(1..5, # < 3)`,
	`groupBy(1..6, # % 3)`, `sortBy([3, 1, 2], #)`, `sortBy([3, 1, 2], #, "desc")`, `len(filter(data.l, # != nil))`,
	`filter(data.l, # != nil)[0]`, `map(filter(1..9, # > 3), # * 2)`, `count(1..9, # > 3) > 0`,
	`let x = data.s + "!"; x + x`, `let n = 3; repeat("ab", n)`, `repeat(data.s, data.a)`, `replace(data.s, "t", "TT")`,
	`replace(data.s, "", "-")`, `replace(data.s, "s", "", 1)`, `join(["a", data.s], "/")`, `join(["a", "b"])`,
	`toJSON(data)`, `toJSON(data.l)`, `fromJSON(toJSON(data.m))`, `uniq([1, 1.0, "1", data.a])`, `uniq(data.l)`,
	`string(data)`, `string(data.l)`, `flatten([data.l, [1, [2]]])`, `upper(data.s)`, `lower("ABC")`, `trim(" x ")`,
	`split("a,b,c", ",")`, `split(data.s, "", 2)`, `splitAfter("a,b", ",")`, `indexOf(data.s, "r")`, `hasPrefix(data.s, "s")`,
	`data.s contains "t"`, `data.s startsWith data.s`, `data.s endsWith "r"`, `data.s matches "^s.r$"`,
	`data.a in data.l`, `"k" in data.m`, `data.s in ["str", "x"]`, `data.l == data.l`, `data.m != {"k": "v"}`,
	`data.s < data.s + "a"`, `data.m[data.s]`, `data.m["k"]`, `max(data.l[0], data.a, 7)`, `min(1..4)`, `mean([1, 2])`,
	`median([3, 1, 2])`, `keys(data.m)`, `values(data.m)`, `toPairs(data.m)`, `fromPairs([["a", 1]])`, `reverse(data.l)`,
	`sort([3, 1, 2])`, `concat(data.l, [1])`, `take(data.l, 2)`, `first(data.l)`, `last(data.l)`, `get(data.m, "k")`,
	`int("12") + float("1.5")`, `duration("1h")`, `date("2024-01-02")`, `timezone("UTC")`, `now() == event.time`,
	`event.time.Year()`, `user(data.s)`, `users(data.l)`, `except(all(), [sender.id])`, `room("r" + data.s)`,
	`$env.data.a`, `$env["data"]`, `{"a": data.s + "x", "b": map(data.l, {"v": #})}`, `data.missing.x`,
	`data.a + data.s`, `1 / 0`, `data.l[9]`, `1..1000000`, `data ?? 1`, `data.s[1:]`, `-data.a`, `not data.t`,
	`data.t ? data.s + "y" : data.a`, `if data.t { data.s + "z" } else { "no" }`, `data.l | map(# ?? 0) | sum()`,
	`type(data.l)`, `abs(-1)`, `bitand(6, 3)`, `$cost(1, 1)`, `data.s matches data.s`,
	`reduce(data.l, #acc, 0)`, `sortBy(map(data.l, {"k": #}), string(#.k))`, `map(1..3, map(1..3, # + #index))`,
}
