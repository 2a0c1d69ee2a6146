package rules

import (
	"context"
	"fmt"
	"math"
	"reflect"
	"time"
)

// Defaults of the limits on one rule evaluation (Options.MaxCost,
// Options.Timeout, Options.MaxMemory).
const (
	DefaultMaxCost   = 1_000_000
	DefaultTimeout   = 100 * time.Millisecond
	DefaultMaxMemory = 1_000_000
)

// The meter reads the clock every clockEveryCalls charges, or sooner when
// clockEveryUnits units were charged since it last did: often enough to stop
// a slow evaluation within a fraction of a millisecond of its deadline, rarely
// enough that time.Now does not show in a profile.
const (
	clockEveryCalls = 256
	clockEveryUnits = 1 << 14
)

// meter counts the work of one rule evaluation: its `if` and its actions'
// expressions together. The metered programs (patch.go) call it through the
// $cost, $deep and $call fields of Env before each step whose work grows
// with the data: a loop iteration, a string built by +, a builtin reading a
// long string or list. A unit is one node of a loop's body run once, or one
// byte of a string built or scanned, or one item or byte of a value
// measured.
//
// The clock is read lazily: the deadline is set the first time the meter
// looks at the clock, so that a rule which does little never calls
// time.Now. The time before that first look is at most a few hundred
// charged steps.
type meter struct {
	used     int
	max      int
	calls    int // charges since the clock was last read
	next     int // used at which the clock is read next
	timeout  time.Duration
	deadline time.Time // zero until the clock is first read
	ctx      context.Context
}

func (m *meter) reset(ctx context.Context) {
	m.used, m.calls, m.next = 0, 0, clockEveryUnits
	m.deadline = time.Time{}
	m.ctx = ctx
}

// add charges n units. It fails when the budget is spent, the evaluation's
// deadline has passed or its context is done.
func (m *meter) add(n int) error {
	if n > m.max-m.used {
		m.used = m.max
		return &limitError{kind: KindBudget, msg: fmt.Sprintf(
			"cost budget of %d exceeded (loops and string building); raise rules.max_cost or simplify", m.max)}
	}
	m.used += n
	if m.calls++; m.calls < clockEveryCalls && m.used < m.next {
		return nil
	}
	m.calls, m.next = 0, m.used+clockEveryUnits
	now := time.Now()
	if m.deadline.IsZero() {
		m.deadline = now.Add(m.timeout)
	}
	if m.ctx == nil {
		m.ctx = context.Background()
	}
	if err := m.ctx.Err(); err != nil {
		kind := KindTimeout
		if err == context.Canceled {
			kind = KindCanceled
		}
		return &limitError{kind: kind, msg: "evaluation stopped: " + err.Error(), err: err}
	}
	if now.After(m.deadline) {
		return &limitError{kind: KindTimeout, msg: fmt.Sprintf("evaluation took longer than %v (rules.timeout)", m.timeout)}
	}
	return nil
}

// charge is add for the functions expressions call. expr's VM recovers the
// panic and returns it as the error of Run (it does the same for its own
// memory budget), so the evaluation stops at once, wherever it is.
func (m *meter) charge(n int) {
	if err := m.add(n); err != nil {
		panic(err)
	}
}

// measure charges the size of v as an encoder would write it (see sizer).
func (m *meter) measure(v any, indent bool) error {
	s := sizer{limit: m.max - m.used, indent: indent}
	s.value(v, 0)
	return m.add(s.n)
}

// cost is $cost(x, w): it charges w units, and w more per byte of x if x is
// a string or per item if it is a list or a map, and returns x. Each loop
// iteration calls $cost(nil, w), w the size of the body; + and let call it
// on what they built, builtins on what they are about to read.
func (m *meter) cost(x, w any) any {
	m.charge(mul(1+shallowLen(x), w.(int)))
	return x
}

// deep is $deep(x): it charges the size of x, counting a list or map
// referenced twice twice, and returns x. It guards what walks a value
// whole: string(), flatten(), == between two computed values. (Eval
// measures the same way what an action hands to the engine to encode.)
func (m *meter) deep(x any) any {
	if err := m.measure(x, false); err != nil {
		panic(err)
	}
	return x
}

// shallowLen is the length of a string, list or map, and 0 for anything else.
func shallowLen(x any) int {
	switch v := x.(type) {
	case nil, bool, int, float64:
		return 0
	case string:
		return len(v)
	case []any:
		return len(v)
	case map[string]any:
		return len(v)
	case []string:
		return len(v)
	case []int:
		return len(v)
	case Target:
		return len(v.Users) + len(v.Rooms) + len(v.Except)
	}
	switch rv := reflect.ValueOf(x); rv.Kind() {
	case reflect.String, reflect.Slice, reflect.Array, reflect.Map:
		return rv.Len()
	}
	return 0
}

// mul is a*b for counts, saturating at math.MaxInt instead of overflowing.
func mul(a, b int) int {
	if a <= 0 || b <= 0 {
		return 0
	}
	if a > math.MaxInt/b {
		return math.MaxInt
	}
	return a * b
}

// sizer measures a value as an encoder would write it: one unit per value,
// plus the bytes of each string and map key; with indent, also the newline
// and indentation toJSON writes before each value. A list or map referenced
// twice counts twice, as it is written twice. It stops as soon as the size
// passes limit, so measuring a value built to be huge (a list holding
// itself twice, forty levels deep) costs no more than limit. A value nested
// deeper than maxDepth counts as over the limit: JSON decoders refuse it
// (Go's at 10,000 levels), and walking it would take as deep a stack.
type sizer struct {
	n, limit int
	indent   bool
}

const maxDepth = 10_000

var timeType = reflect.TypeFor[time.Time]()

func (s *sizer) value(v any, depth int) {
	if s.n++; s.indent {
		s.n += 1 + 2*depth
	}
	if depth > maxDepth {
		s.n = s.limit + 1
	}
	if s.n > s.limit {
		return
	}
	switch x := v.(type) {
	case nil, bool, int, int64, float64, time.Time:
	case string:
		s.n += len(x)
	case []any:
		for _, e := range x {
			if s.value(e, depth+1); s.n > s.limit {
				return
			}
		}
	case map[string]any:
		for k, e := range x {
			if s.n += len(k); s.n > s.limit {
				return
			}
			s.value(e, depth+1)
		}
	case []string:
		for _, e := range x {
			if s.value(e, depth+1); s.n > s.limit {
				return
			}
		}
	case Target:
		s.value(x.Users, depth+1)
		s.value(x.Rooms, depth+1)
		s.value(x.Except, depth+1)
	default:
		s.reflect(reflect.ValueOf(v), depth)
	}
}

// reflect measures the types the fast cases of value do not know.
func (s *sizer) reflect(rv reflect.Value, depth int) {
	if depth > maxDepth {
		s.n = s.limit + 1
	}
	if s.n > s.limit {
		return
	}
	switch rv.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !rv.IsNil() {
			s.n++ // so that a cycle of pointers ends at limit too
			s.reflect(rv.Elem(), depth)
		}
	case reflect.String:
		s.n += rv.Len()
	case reflect.Slice, reflect.Array:
		for i := range rv.Len() {
			s.n++
			if s.reflect(rv.Index(i), depth+1); s.n > s.limit {
				return
			}
		}
	case reflect.Map:
		for it := rv.MapRange(); it.Next() && s.n <= s.limit; {
			s.n++
			s.reflect(it.Key(), depth+1)
			s.reflect(it.Value(), depth+1)
		}
	case reflect.Struct:
		if rv.Type() == timeType {
			return
		}
		for i := range rv.NumField() {
			s.n++
			s.reflect(rv.Field(i), depth+1)
		}
	}
}
