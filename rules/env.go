package rules

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"time"

	"github.com/expr-lang/expr"
)

// Env is what an expression sees. It is a struct, not a map, so every
// expression is type-checked once at load against these names:
//
//	data     the event's payload when it is a JSON object (nil map otherwise)
//	payload  the payload as it came, whatever its JSON type (an addition to
//	         the contract (docs/DESIGN.md): client events may carry a bare
//	         string or a list)
//	sender   the claims of the connection that sent a client event, or of
//	         the user a lifecycle event is about; sender.id is the user id.
//	         Empty for webhooks.
//	event    metadata: event.type, event.id, event.source, event.time
//
// Fields of data and sender are untyped: a missing one reads as nil, so
// `data.isTyping ?? true` works, and `data.a.b` with no `a` is a run-time
// error that skips the rule for that event.
type Env struct {
	Data    map[string]any `expr:"data"`
	Payload any            `expr:"payload"`
	Sender  map[string]any `expr:"sender"`
	Event   EventInfo      `expr:"event"`

	// The meter of the evaluation, which compiled programs call before work
	// that grows with the data (see patch.go). Expressions cannot name
	// them: a load refuses identifiers starting with $, other than $env.
	// They are fields, not registered functions, because the VM calls a
	// func-typed field without allocating.
	Cost func(x, weight any) any `expr:"$cost" json:"-"`
	Deep func(x any) any         `expr:"$deep" json:"-"`
	Call func(args ...any) any   `expr:"$call" json:"-"`
}

// EventInfo is the `event` variable of expressions.
type EventInfo struct {
	Type   string    `expr:"type"`
	ID     string    `expr:"id"`
	Source string    `expr:"source"`
	Time   time.Time `expr:"time"`
}

// functions returns the target helpers and now() as expr options. The
// declared types make the checker reject user(true) or users("a") at load,
// while untyped values (data.x) pass and are checked when the rule runs.
// The string overload comes last so that the checker's message for a bad
// argument names it ("cannot use bool as argument (type string)").
// Ids may be strings or numbers; they become strings (42 -> "42").
func functions(now func() time.Time) []expr.Option {
	return []expr.Option{
		expr.Function("user", fnUser,
			new(func(int) Target), new(func(float64) Target), new(func(string) Target)),
		expr.Function("users", fnUsers, new(func([]any) Target)),
		expr.Function("room", fnRoom,
			new(func(int) Target), new(func(float64) Target), new(func(string) Target)),
		expr.Function("all", fnAll, new(func() Target)),
		expr.Function("except", fnExcept,
			new(func(Target, []any) Target), new(func(Target, int) Target),
			new(func(Target, float64) Target), new(func(Target, string) Target)),
		expr.Function("now", func(...any) (any, error) { return now(), nil },
			new(func() time.Time)),
	}
}

func fnUser(args ...any) (any, error) {
	id, err := ID(args[0])
	if err != nil {
		return nil, fmt.Errorf("user(): %w", err)
	}
	return Target{Users: []string{id}}, nil
}

func fnUsers(args ...any) (any, error) {
	ids, err := idList(args[0], nil)
	if err != nil {
		return nil, fmt.Errorf("users(): %w", err)
	}
	return Target{Users: ids}, nil
}

func fnRoom(args ...any) (any, error) {
	name, err := ID(args[0])
	if err != nil {
		return nil, fmt.Errorf("room(): %w", err)
	}
	return Target{Rooms: []string{name}}, nil
}

func fnAll(...any) (any, error) { return Target{All: true}, nil }

// fnExcept returns a copy of the target with ids left out; ids is one id
// or a list of them.
func fnExcept(args ...any) (any, error) {
	t, ok := args[0].(Target)
	if !ok {
		return nil, typeErrorf("except(): first argument is %s, want a target", typeName(args[0]))
	}
	var ids []string
	var err error
	if isList(args[1]) {
		ids, err = idList(args[1], nil)
	} else {
		var id string
		id, err = ID(args[1])
		ids = []string{id}
	}
	if err != nil {
		return nil, fmt.Errorf("except(): %w", err)
	}
	out := Target{All: t.All, Users: t.Users, Rooms: t.Rooms}
	out.Except = appendUnique(append([]string(nil), t.Except...), ids...)
	return out, nil
}

var (
	errNilID   = errors.New("id is nil")
	errNilList = errors.New("list is nil")
)

// ID turns a scalar id into the string targets compare it as: a string
// stays itself, a number prints without exponent or trailing zeros, as JSON
// would (42, 42.0 and json.Number("42") are all "42"), and any other
// integer kind prints in base 10. nil, "", NaN, ±Inf and anything else (a
// bool, a map, a list) is an error. It is the one id conversion of the
// project, so that everything comparing ids agrees with the rules.
func ID(v any) (string, error) {
	switch x := v.(type) {
	case string:
		if x == "" {
			return "", errors.New("id is empty")
		}
		return x, nil
	case nil:
		return "", errNilID
	case float64:
		return floatID(x)
	case float32:
		return floatID(float64(x))
	case int:
		return strconv.Itoa(x), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case json.Number:
		return x.String(), nil
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(rv.Int(), 10), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return strconv.FormatUint(rv.Uint(), 10), nil
	case reflect.String:
		return ID(rv.String())
	}
	return "", typeErrorf("id is %s, want a string or a number", typeName(v))
}

func floatID(f float64) (string, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "", typeErrorf("id is %v, want a string or a finite number", f)
	}
	return strconv.FormatFloat(f, 'f', -1, 64), nil
}

func isList(v any) bool {
	switch v.(type) {
	case []any, []string:
		return true
	case nil, string:
		return false
	}
	k := reflect.ValueOf(v).Kind()
	return k == reflect.Slice || k == reflect.Array
}

// idList appends the ids of a list of any element type to dst.
func idList(v any, dst []string) ([]string, error) {
	switch x := v.(type) {
	case []any:
		for i, e := range x {
			id, err := ID(e)
			if err != nil {
				return nil, fmt.Errorf("item %d: %w", i, err)
			}
			dst = append(dst, id)
		}
		return dst, nil
	case []string:
		for i, e := range x {
			id, err := ID(e)
			if err != nil {
				return nil, fmt.Errorf("item %d: %w", i, err)
			}
			dst = append(dst, id)
		}
		return dst, nil
	case nil:
		return nil, errNilList
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Slice && rv.Kind() != reflect.Array {
		return nil, typeErrorf("got %s, want a list", typeName(v))
	}
	for i := range rv.Len() {
		id, err := ID(rv.Index(i).Interface())
		if err != nil {
			return nil, fmt.Errorf("item %d: %w", i, err)
		}
		dst = append(dst, id)
	}
	return dst, nil
}

// toTarget converts what a `to` expression yielded: a Target, or a list of
// them, merged into one.
func toTarget(v any) (Target, error) {
	switch x := v.(type) {
	case Target:
		return x, nil
	case []Target:
		var t Target
		for _, e := range x {
			t = mergeTarget(t, e)
		}
		return t, nil
	case []any:
		var t Target
		for i, e := range x {
			et, ok := e.(Target)
			if !ok {
				return Target{}, typeErrorf("item %d is %s, want a target such as user(id)", i, typeName(e))
			}
			t = mergeTarget(t, et)
		}
		return t, nil
	}
	return Target{}, typeErrorf("got %s, want a target such as user(id) or a list of them", typeName(v))
}

// mergeTarget is the union of two targets. Except lists are unioned too:
// an id excepted by either part is left out of the whole.
func mergeTarget(a, b Target) Target {
	if a.Users == nil && a.Rooms == nil && a.Except == nil && !a.All {
		return b // the common single-target case shares b's slices
	}
	return Target{
		All:    a.All || b.All,
		Users:  appendUnique(append([]string(nil), a.Users...), b.Users...),
		Rooms:  appendUnique(append([]string(nil), a.Rooms...), b.Rooms...),
		Except: appendUnique(append([]string(nil), a.Except...), b.Except...),
	}
}

// appendUnique appends the ids not already in dst (ids repeated within dst
// stay). Lists are usually short, a few recipients, and a linear scan beats
// a map; past smallIDs the scan would be quadratic in a list that came
// with the event (except(all(), data.ids)), so a set takes over.
func appendUnique(dst []string, ids ...string) []string {
	if len(dst)+len(ids) <= smallIDs {
	next:
		for _, id := range ids {
			for _, have := range dst {
				if have == id {
					continue next
				}
			}
			dst = append(dst, id)
		}
		return dst
	}
	seen := make(map[string]struct{}, len(dst)+len(ids))
	for _, id := range dst {
		seen[id] = struct{}{}
	}
	for _, id := range ids {
		if _, ok := seen[id]; !ok {
			seen[id] = struct{}{}
			dst = append(dst, id)
		}
	}
	return dst
}

const smallIDs = 32

// toRooms converts what a join or leave expression yielded: one room name
// or a list of them.
func toRooms(v any) ([]string, error) {
	if isList(v) {
		return idList(v, nil)
	}
	name, err := ID(v)
	if err != nil {
		return nil, err
	}
	return []string{name}, nil
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "nil"
	case Target:
		return "a target"
	case map[string]any:
		return "a map"
	case []any:
		return "a list"
	case bool:
		return "a bool"
	}
	return fmt.Sprintf("%T", v)
}
