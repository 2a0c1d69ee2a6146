package rules

import (
	"math"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/vm/runtime"
)

// guard is how the patcher meters a builtin of expr.
type guard int

const (
	guardNone guard = iota // constant work: len, abs, first, ...
	guardLoop              // a loop: each iteration, the size of its body
	guardArgs              // linear in its arguments, and its result no larger than a small multiple of them
	guardDeep              // walks its argument whole: the argument's full size
	guardCall              // its result can dwarf its arguments: replaced by a version that checks first
)

// builtinGuards classifies every builtin of expr v1.17 (a test checks that
// none is missing). The reasons, for the ones that are not obvious:
//
//	repeat    expr bounds the count (1e6) but not len(s)*count, and charges its
//	          memory budget after building the string: repeat(repeat("x", 1e6),
//	          1e6) is a terabyte. Replaced: the size is charged first.
//	replace   replace(s, "", big) inserts big between every two runes of s.
//	          Replaced: the result's length is computed and charged first.
//	join      a list holding one long string many times joins into a longer
//	          one. Replaced: the result's length is charged first.
//	toJSON    writes its argument whole, and indents each line by its depth:
//	          a list nested 50,000 deep (cheap to build with reduce) indents to
//	          gigabytes. Replaced: the indented size is charged first.
//	uniq      compares each item with every item kept: quadratic. Replaced by
//	          the same algorithm, charging each comparison.
//	string    formats its argument whole: charged its full size.
//	flatten   copies every leaf of its argument, shared ones again each time:
//	          charged its argument's full size first.
//	split     a result of len(s) one-byte strings is 16 times s in headers;
//	          charging len(s) bounds that to a small multiple of the budget.
//	int float parse a string, in time linear in its length.
//	date duration timezone
//	          parse a string; timezone reads a file of the zone database.
//	get first last take
//	          constant work; take returns a slice of its argument.
var builtinGuards = map[string]guard{
	"all": guardLoop, "none": guardLoop, "any": guardLoop, "one": guardLoop,
	"filter": guardLoop, "map": guardLoop, "count": guardLoop, "sum": guardLoop,
	"find": guardLoop, "findIndex": guardLoop, "findLast": guardLoop, "findLastIndex": guardLoop,
	"groupBy": guardLoop, "sortBy": guardLoop, "reduce": guardLoop,

	"len": guardNone, "type": guardNone, "abs": guardNone, "ceil": guardNone, "floor": guardNone,
	"round": guardNone, "now": guardNone, "get": guardNone, "first": guardNone, "last": guardNone,
	"take": guardNone, "bitand": guardNone, "bitor": guardNone, "bitxor": guardNone,
	"bitnand": guardNone, "bitnot": guardNone, "bitshl": guardNone, "bitshr": guardNone,
	"bitushr": guardNone,

	"int": guardArgs, "float": guardArgs, "trim": guardArgs, "trimPrefix": guardArgs,
	"trimSuffix": guardArgs, "upper": guardArgs, "lower": guardArgs, "split": guardArgs,
	"splitAfter": guardArgs, "indexOf": guardArgs, "lastIndexOf": guardArgs, "hasPrefix": guardArgs,
	"hasSuffix": guardArgs, "max": guardArgs, "min": guardArgs, "mean": guardArgs, "median": guardArgs,
	"fromJSON": guardArgs, "toBase64": guardArgs, "fromBase64": guardArgs, "duration": guardArgs,
	"date": guardArgs, "timezone": guardArgs, "keys": guardArgs, "values": guardArgs,
	"toPairs": guardArgs, "fromPairs": guardArgs, "reverse": guardArgs, "sort": guardArgs,
	"concat": guardArgs,

	"string": guardDeep, "flatten": guardDeep,

	"repeat": guardCall, "replace": guardCall, "join": guardCall, "toJSON": guardCall, "uniq": guardCall,
}

// call is $call(name, args...): a builtin of guardCall, checked before it
// runs. Arguments of unexpected types go to expr's builtin unchecked, to
// fail there with its usual message; so do the cases whose size is small.
func (m *meter) call(args ...any) any {
	name, args := args[0].(string), args[1:]
	switch name {
	case "repeat":
		if s, ok := args[0].(string); ok && len(args) == 2 {
			if n, ok := toCount(args[1]); ok && n > 0 {
				m.charge(1 + mul(len(s), n))
			}
		}
	case "replace":
		m.charge(replaceSize(args, m))
	case "join":
		m.charge(joinSize(args))
	case "toJSON":
		if len(args) == 1 {
			if err := m.measure(args[0], true); err != nil {
				panic(err)
			}
		}
	case "uniq":
		if len(args) == 1 {
			return m.uniq(args[0])
		}
	}
	return runBuiltin(name, args)
}

// runBuiltin runs expr's builtin name as its VM would, a failure becoming a
// panic the VM recovers.
func runBuiltin(name string, args []any) any {
	f := builtin.Builtins[builtin.Index[name]]
	var out any
	var err error
	if f.Safe != nil {
		out, _, err = f.Safe(args...) // the meter charged the size instead of the VM
	} else {
		out, err = f.Func(args...)
	}
	if err != nil {
		panic(err)
	}
	return out
}

// replaceSize is 1 + the bytes replace(s, old, new[, n]) scans and writes.
func replaceSize(args []any, m *meter) int {
	if len(args) != 3 && len(args) != 4 {
		return 1
	}
	s, ok1 := args[0].(string)
	old, ok2 := args[1].(string)
	repl, ok3 := args[2].(string)
	if !ok1 || !ok2 || !ok3 {
		return 1
	}
	m.charge(1 + len(s) + len(old)) // the count below reads s
	k := -1
	if len(args) == 4 {
		if n, ok := toCount(args[3]); ok {
			k = n
		}
	}
	var count int
	if old == "" {
		count = utf8.RuneCountInString(s) + 1 // an insertion before each rune and at the end
	} else {
		count = strings.Count(s, old)
	}
	if k >= 0 && count > k {
		count = k
	}
	if grow := len(repl) - len(old); grow > 0 {
		return 1 + len(s) + mul(count, grow)
	}
	return 1 + len(s)
}

// joinSize is 1 + the length of join(list[, glue]).
func joinSize(args []any) int {
	if len(args) != 1 && len(args) != 2 {
		return 1
	}
	glue := ""
	if len(args) == 2 {
		g, ok := args[1].(string)
		if !ok {
			return 1
		}
		glue = g
	}
	n, items := 1, 0
	switch list := args[0].(type) {
	case []string:
		for _, s := range list {
			n += len(s)
		}
		items = len(list)
	case []any:
		for _, e := range list {
			if s, ok := e.(string); ok {
				n += len(s)
			}
		}
		items = len(list)
	}
	if items > 1 {
		n += mul(items-1, len(glue))
	}
	if n < 0 {
		return math.MaxInt // overflowed: as good as infinite
	}
	return n
}

// toCount reads a count as expr's runtime.ToInt does (a JSON number is a
// float64), without its panic for what is not a number.
func toCount(v any) (int, bool) {
	switch rv := reflect.ValueOf(v); {
	case rv.CanInt():
		return int(rv.Int()), true
	case rv.CanUint():
		return int(min(rv.Uint(), math.MaxInt)), true
	case rv.CanFloat():
		f := rv.Float()
		if f != f {
			return 0, false
		}
		return int(max(min(f, 1e18), -1e18)), true
	}
	return 0, false
}

// uniq is expr's uniq (the same comparisons, in the same order, with the
// same result), charging a unit per comparison.
func (m *meter) uniq(x any) any {
	v := reflect.ValueOf(x)
	if v.Kind() != reflect.Array && v.Kind() != reflect.Slice {
		return runBuiltin("uniq", []any{x}) // its error
	}
	ret := []any{}
next:
	for i := range v.Len() {
		e := v.Index(i).Interface()
		m.charge(1 + len(ret))
		for _, r := range ret {
			if runtime.Equal(e, r) {
				continue next
			}
		}
		ret = append(ret, e)
	}
	return ret
}
