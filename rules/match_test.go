package rules

import (
	"context"
	"errors"
	"fmt"
	"path"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func mustParse(t testing.TB, src string, opt Options) *Set {
	t.Helper()
	s, err := Parse("t.yaml", []byte(src), opt)
	if err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	return s
}

func match(t testing.TB, s *Set, ev *Event) ([]Output, error) {
	t.Helper()
	return s.Match(context.Background(), ev, nil)
}

func ruleNames(out []Output) []string {
	names := []string{}
	for _, o := range out {
		names = append(names, o.Rule)
	}
	return names
}

func TestGlobs(t *testing.T) {
	s := mustParse(t, `rules:
  - {name: exact, on: booking.created, join: '["r"]'}
  - {name: booking-any, on: "booking.*", join: '["r"]'}
  - {name: client-any, on: "client.*", join: '["r"]'}
  - {name: everything, on: "*", join: '["r"]'}
  - {name: one-char, on: "presence.onlin?", join: '["r"]'}
  - {name: list, on: [booking.created, "booking.*", review.created], join: '["r"]'}
  - {name: class, on: "connection.[oc]*", join: '["r"]'}
`, Options{})
	for _, tc := range []struct {
		typ  string
		want []string
	}{
		{"booking.created", []string{"exact", "booking-any", "everything", "list"}},
		{"booking.status_changed", []string{"booking-any", "everything", "list"}},
		{"client.typing", []string{"client-any", "everything"}},
		{"review.created", []string{"everything", "list"}},
		{"presence.online", []string{"everything", "one-char"}},
		{"connection.open", []string{"everything", "class"}},
		{"connection.close", []string{"everything", "class"}},
		{"bookings.created", []string{"everything"}},
		{"booking", []string{"everything"}},
	} {
		out, err := match(t, s, &Event{Type: tc.typ})
		if err != nil {
			t.Fatalf("Match(%q) error = %v", tc.typ, err)
		}
		if got := ruleNames(out); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Match(%q) rules = %v, want %v", tc.typ, got, tc.want)
		}
	}
}

func TestNoMatchAllocatesNothing(t *testing.T) {
	s := mustParse(t, "rules:\n- {name: a, on: x, join: '[\"r\"]'}\n", Options{})
	ev := &Event{Type: "y"}
	out := make([]Output, 0, 4)
	if n := testing.AllocsPerRun(100, func() { out, _ = s.Match(context.Background(), ev, out[:0]) }); n != 0 {
		t.Errorf("Match of an unmatched type: %v allocs, want 0", n)
	}
}

// TestTargets covers each target helper, except, lists of targets, and ids
// of mixed types compared as strings.
func TestTargets(t *testing.T) {
	data := map[string]any{
		"providerId": "p1", "customerId": 42.0, "intId": 7, "ids": []any{"a", 2.5, int64(3)},
		"strs": []string{"x", "y"}, "room": "role:provider", "big": 1e15,
	}
	sender := map[string]any{"id": "u1", "role": "customer"}
	for _, tc := range []struct {
		to   string
		want Target
	}{
		{`user(data.providerId)`, Target{Users: []string{"p1"}}},
		{`user(data.customerId)`, Target{Users: []string{"42"}}},
		{`user(data.intId)`, Target{Users: []string{"7"}}},
		{`user(42)`, Target{Users: []string{"42"}}},
		{`user(data.big)`, Target{Users: []string{"1000000000000000"}}},
		{`users([data.customerId, data.providerId])`, Target{Users: []string{"42", "p1"}}},
		{`users(data.ids)`, Target{Users: []string{"a", "2.5", "3"}}},
		{`users(data.strs)`, Target{Users: []string{"x", "y"}}},
		{`users([])`, Target{}},
		{`room(data.room)`, Target{Rooms: []string{"role:provider"}}},
		{`room("presence:" + sender.id)`, Target{Rooms: []string{"presence:u1"}}},
		{`all()`, Target{All: true}},
		{`except(all(), sender.id)`, Target{All: true, Except: []string{"u1"}}},
		{`except(all(), [sender.id, 42])`, Target{All: true, Except: []string{"u1", "42"}}},
		{`except(room("r"), data.ids)`, Target{Rooms: []string{"r"}, Except: []string{"a", "2.5", "3"}}},
		{`except(except(all(), "a"), "b")`, Target{All: true, Except: []string{"a", "b"}}},
		{`[user(data.providerId), user(data.customerId), room("r")]`, Target{Users: []string{"p1", "42"}, Rooms: []string{"r"}}},
		{`[user("a"), users(["a", "b"])]`, Target{Users: []string{"a", "b"}}},
		{`[all(), except(user("x"), "u1")]`, Target{All: true, Users: []string{"x"}, Except: []string{"u1"}}},
		{`data.providerId == "p1" ? user("yes") : all()`, Target{Users: []string{"yes"}}},
	} {
		src := fmt.Sprintf("rules:\n- name: r\n  on: x\n  emit: {event: e, to: %q}\n", tc.to)
		s := mustParse(t, src, Options{})
		out, err := match(t, s, &Event{Type: "x", Sender: sender, Data: data})
		if err != nil || len(out) != 1 {
			t.Errorf("to: %s: Match() = %v, %v", tc.to, out, err)
			continue
		}
		got := out[0].To
		if !reflect.DeepEqual(normTarget(got), normTarget(tc.want)) {
			t.Errorf("to: %s = %+v, want %+v", tc.to, got, tc.want)
		}
	}
}

// normTarget treats nil and empty lists alike.
func normTarget(t Target) Target {
	for _, l := range []*[]string{&t.Users, &t.Rooms, &t.Except} {
		if len(*l) == 0 {
			*l = nil
		}
	}
	return t
}

func TestActions(t *testing.T) {
	s := mustParse(t, `rules:
  - name: passthrough
    on: a
    emit: {event: ev1, to: all()}
  - name: two-emits
    on: a
    emit:
      - {event: ev2, to: 'user(sender.id)', data: '{"n": data.n + 1}'}
      - {event: ev3, to: 'room("r")', data: data.n}
  - name: forward-as-is
    on: a
    forward: {url: "${APP:-http://app}/hook"}
  - name: forward-shaped
    on: a
    forward: {url: "https://app/x", data: '{"by": sender.id}'}
  - name: join-short
    on: a
    join: '"user:" + sender.id'
  - name: join-long
    on: a
    join: {rooms: '["r1", "r2"]', user: data.n}
  - name: leave
    on: a
    leave: '["r1"]'
  - name: join-nothing
    on: a
    join: '[]'
  - name: join-and-emit
    on: a
    join: '["both"]'
    emit: {event: ev4, to: 'user("u")'}
`, Options{})
	data := map[string]any{"n": 1}
	out, err := match(t, s, &Event{Type: "a", Sender: map[string]any{"id": "u1"}, Data: data})
	if err != nil {
		t.Fatalf("Match() error = %v", err)
	}
	want := []Output{
		{Rule: "passthrough", Action: "emit", Event: "ev1", To: Target{All: true}, Data: data},
		{Rule: "two-emits", Action: "emit", Event: "ev2", To: Target{Users: []string{"u1"}}, Data: map[string]any{"n": 2}},
		{Rule: "two-emits", Action: "emit", Event: "ev3", To: Target{Rooms: []string{"r"}}, Data: 1},
		{Rule: "forward-as-is", Action: "forward", URL: "http://app/hook"},
		{Rule: "forward-shaped", Action: "forward", URL: "https://app/x", Data: map[string]any{"by": "u1"}},
		{Rule: "join-short", Action: "join", Rooms: []string{"user:u1"}},
		{Rule: "join-long", Action: "join", Rooms: []string{"r1", "r2"}, User: "1"},
		{Rule: "leave", Action: "leave", Rooms: []string{"r1"}},
		{Rule: "join-and-emit", Action: "join", Rooms: []string{"both"}},
		{Rule: "join-and-emit", Action: "emit", Event: "ev4", To: Target{Users: []string{"u"}}, Data: data},
	}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("Match() =\n%s\nwant\n%s", dump(out), dump(want))
	}
}

func dump(out []Output) string {
	var b strings.Builder
	for _, o := range out {
		fmt.Fprintf(&b, "  %+v\n", o)
	}
	return b.String()
}

func TestConditionsAndEnv(t *testing.T) {
	at := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	s := mustParse(t, `rules:
  - name: pending
    on: booking.created
    if: data.status == "pending"
    join: '["pending"]'
  - name: meta
    on: booking.created
    if: event.type == "booking.created" && event.source == "webhook" && event.id == "w1" && event.time.Year() == 2024
    join: '["meta"]'
  - name: no-sender
    on: booking.created
    if: sender.id == nil && len(sender) == 0
    join: '["anonymous"]'
  - name: clock
    on: booking.created
    if: now() == event.time
    join: '["clock"]'
  - name: payload
    on: client.register
    if: payload == "u9" && data == nil
    join: '["payload"]'
`, Options{Now: func() time.Time { return at }})
	out, err := match(t, s, &Event{ID: "w1", Type: "booking.created", Source: "webhook", Time: at, Data: map[string]any{"status": "pending"}})
	if got := ruleNames(out); err != nil || fmt.Sprint(got) != "[pending meta no-sender clock]" {
		t.Errorf("Match(booking.created) = %v, %v", got, err)
	}
	out, err = match(t, s, &Event{Type: "booking.created", Data: map[string]any{"status": "done"}})
	if got := ruleNames(out); err != nil || fmt.Sprint(got) != "[no-sender]" {
		t.Errorf("Match(booking.created, done) = %v, %v", got, err)
	}
	out, err = match(t, s, &Event{Type: "client.register", Data: "u9"})
	if got := ruleNames(out); err != nil || fmt.Sprint(got) != "[payload]" {
		t.Errorf("Match(client.register) = %v, %v", got, err)
	}
}

// TestRuntimeErrorsSkipTheRule: a failing rule loses its outputs for that
// event and is counted; the rules around it still run.
func TestRuntimeErrorsSkipTheRule(t *testing.T) {
	s := mustParse(t, `rules:
  - name: before
    on: x
    join: '["before"]'
  - name: modulo-zero
    on: x
    if: data.a % data.b == 0
    join: '["never"]'
  - name: nil-index
    on: x
    join: '["r" + data.missing.deeper]'
  - name: nil-id
    on: x
    emit: {event: e, to: user(data.missing)}
  - name: not-a-target
    on: x
    emit: {event: e, to: data.a}
  - name: partial
    on: x
    join: '["kept-only-if-the-rule-succeeds"]'
    emit: {event: e, to: 'users(data.a)'}
  - name: bad-data
    on: x
    emit: {event: e, to: all(), data: 'data.list[5]'}
  - name: nil-condition   # a nil condition is false, not an error
    on: x
    if: data.flag
    join: '["flag"]'
  - name: after
    on: x
    join: '["after"]'
`, Options{})
	ev := &Event{Type: "x", Data: map[string]any{"a": 1, "b": 0, "list": []any{1}}}
	for range 2 {
		out, err := match(t, s, ev)
		if got := ruleNames(out); fmt.Sprint(got) != "[before after]" {
			t.Errorf("Match() outputs from %v, want [before after]", got)
		}
		var failed []string
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			var re *RuleError
			if !errors.As(e, &re) {
				t.Fatalf("Match() error %v is not a *RuleError", e)
			}
			failed = append(failed, re.Rule)
		}
		if want := "[modulo-zero nil-index nil-id not-a-target partial bad-data]"; fmt.Sprint(failed) != want {
			t.Errorf("failed rules = %v, want %s\n%v", failed, want, err)
		}
	}
	errs := s.Errors()
	for name, want := range map[string]uint64{"before": 0, "modulo-zero": 2, "nil-index": 2, "nil-id": 2, "not-a-target": 2, "partial": 2, "bad-data": 2, "nil-condition": 0, "after": 0} {
		if errs[name] != want {
			t.Errorf("Errors()[%q] = %d, want %d", name, errs[name], want)
		}
	}
	_, err := match(t, s, ev)
	kinds := map[string]string{}
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		// What an engine that does not import rules would do.
		var re interface {
			RuleName() string
			Kind() string
		}
		if errors.As(e, &re) {
			kinds[re.RuleName()] = re.Kind()
		}
	}
	wantKinds := map[string]string{"modulo-zero": KindOther, "nil-index": KindNil, "nil-id": KindNil,
		"not-a-target": KindType, "partial": KindType, "bad-data": KindOther}
	if !reflect.DeepEqual(kinds, wantKinds) {
		t.Errorf("kinds = %v, want %v", kinds, wantKinds)
	}
	for _, want := range []string{
		`rule "nil-id": emit.to (line 14): user(): id is nil`,
		`rule "not-a-target": emit.to (line 17): got int, want a target`,
		`rule "nil-index": join (line 11): `,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Match() error lacks %q:\n%v", want, err)
		}
	}
}

type panicAction struct{}

func (panicAction) Do(context.Context, *Input, []Output) ([]Output, error) { panic("plugin bug") }

type tagAction struct{ tag string }

func (a tagAction) Do(_ context.Context, in *Input, out []Output) ([]Output, error) {
	return append(out, Output{Action: "tag", Event: a.tag + ":" + in.Event.Type}), nil
}

// TestPluginActions registers actions beside the built-in ones, as main
// would, and checks that a panicking one is contained.
func TestPluginActions(t *testing.T) {
	reg := Builtin()
	reg.Register("panic", func(*yaml.Node, *Compiler) (Action, error) { return panicAction{}, nil })
	reg.Register("tag", func(n *yaml.Node, c *Compiler) (Action, error) {
		s, err := c.String("tag", n)
		if err != nil {
			return nil, err
		}
		if s == "bad" {
			return nil, errors.New("bad tag")
		}
		return tagAction{tag: s}, nil
	})
	s := mustParse(t, `rules:
  - {name: p, on: x, join: '["j"]', panic: yes}
  - {name: t, on: x, tag: hello}
`, Options{Registry: reg})
	out, err := match(t, s, &Event{Type: "x"})
	want := []Output{{Rule: "t", Action: "tag", Event: "hello:x"}}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("Match() = %+v, want %+v", out, want)
	}
	if err == nil || !strings.Contains(err.Error(), `rule "p": panic: plugin bug`) {
		t.Errorf("Match() error = %v, want the recovered panic", err)
	}
	if re := (*RuleError)(nil); !errors.As(err, &re) || re.Kind() != KindPanic {
		t.Errorf("Match() error = %v, want a *RuleError of kind %q", err, KindPanic)
	}
	_, err = Parse("t.yaml", []byte("rules:\n- name: t\n  on: x\n  tag: bad\n"), Options{Registry: reg})
	if err == nil || err.Error() != `t.yaml:4: rule "t": tag: bad tag` {
		t.Errorf("Parse(bad tag) = %v", err)
	}
	_, err = Parse("t.yaml", []byte("rules:\n- name: t\n  on: x\n  tag: hello\n"), Options{})
	if err == nil || !strings.Contains(err.Error(), `unknown key "tag"`) {
		t.Errorf("Parse(tag) with the builtin registry = %v, want unknown key", err)
	}
}

// TestMatchKeepsCallerOutputs: Match appends to out and leaves what was
// there alone, even when a rule fails after appending.
func TestMatchKeepsCallerOutputs(t *testing.T) {
	s := mustParse(t, `rules:
  - {name: fails, on: x, join: '["a"]', emit: {event: e, to: 'user(data.nope)'}}
  - {name: ok, on: x, join: '["b"]'}
`, Options{})
	out := make([]Output, 1, 8)
	out[0] = Output{Rule: "earlier"}
	out, err := s.Match(context.Background(), &Event{Type: "x", Data: map[string]any{}}, out)
	if fmt.Sprint(ruleNames(out)) != "[earlier ok]" || err == nil {
		t.Errorf("Match() = %v, %v", ruleNames(out), err)
	}
	if full := out[:cap(out)]; full[2].Rule != "" {
		t.Errorf("the failed rule's output was left in the buffer: %+v", full[2])
	}
}

func TestMatchConcurrent(t *testing.T) {
	s := mustParse(t, `rules:
  - {name: a, on: "client.*", emit: {event: e, to: 'user(data.to)', data: '{"from": sender.id}'}}
  - {name: b, on: client.typing, if: 'data.to == "u0"', emit: {event: e, to: 'user(data.missing)'}}
`, Options{})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() { // stopped by the loop's end
			defer wg.Done()
			var out []Output
			for i := range 200 {
				to := fmt.Sprintf("u%d", (g+i)%3)
				var err error
				out, err = s.Match(context.Background(), &Event{Type: "client.typing", Sender: map[string]any{"id": g}, Data: map[string]any{"to": to}}, out[:0])
				if len(out) != 1 || out[0].To.Users[0] != to || out[0].Data.(map[string]any)["from"] != g {
					t.Errorf("Match() = %+v", out)
					return
				}
				if (err != nil) != (to == "u0") {
					t.Errorf("Match(to=%s) error = %v", to, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestGlobFastPathAgreesWithPathMatch: the "prefix*" shortcut must mean
// exactly what path.Match means.
func TestGlobFastPathAgreesWithPathMatch(t *testing.T) {
	pats := []string{"*", "booking.*", "client.*", "a*", "booking.c*", "b?oking.*", "[bc]*", `x\*`, "*.created"}
	types := []string{"", "booking", "booking.", "booking.created", "client.typing", "a", "ab/c", "booking.x/y", "x*", "review.created"}
	for _, p := range pats {
		g := newGlob(p)
		for _, typ := range types {
			want, _ := path.Match(p, typ)
			if got := g.match(typ); got != want {
				t.Errorf("glob %q match %q = %v, path.Match says %v", p, typ, got, want)
			}
		}
	}
}

// TestErrorKinds: RuleError.Kind sorts failures into a few labels, from
// the typed errors of this package and from expr's messages.
func TestErrorKinds(t *testing.T) {
	for _, tc := range []struct {
		expr, kind string
	}{
		{`'["r" + data.missing.deeper]'`, KindNil},
		{`'["r" + data.missing]'`, KindNil},
		{`'[data.m.x.y]'`, KindNil},
		{`'[data.missing()]'`, KindNil},
		{`'[data.a.b]'`, KindType},
		{`'[1 + data.s]'`, KindType},
		{`'[data.s > 1]'`, KindType},
		{`'[upper(data.a)]'`, KindType},
		{`'[not data.s]'`, KindType},
		{`'[len(data.a)]'`, KindType},
		{`'[data.a in data.a]'`, KindType},
		{`'data.m'`, KindType},
		{`'[data.l[5]]'`, KindOther},
		{`'[data.a % data.b]'`, KindOther},
		{`'[1..data.big]'`, KindBudget},
	} {
		s := mustParse(t, "rules:\n- name: r\n  on: x\n  join: "+tc.expr+"\n", Options{})
		_, err := match(t, s, &Event{Type: "x", Data: map[string]any{
			"a": 1, "b": 0, "s": "str", "l": []any{1}, "m": map[string]any{"x": nil}, "big": 2_000_000}})
		var re *RuleError
		if !errors.As(err, &re) {
			t.Errorf("join: %s: Match() error = %v, want a *RuleError", tc.expr, err)
			continue
		}
		if re.Kind() != tc.kind || re.RuleName() != "r" {
			t.Errorf("join: %s: Kind(), RuleName() = %q, %q, want %q, \"r\" (%v)", tc.expr, re.Kind(), re.RuleName(), tc.kind, err)
		}
	}
}

// TestAppendUniqueLargeLists: the set used for long id lists keeps the
// linear scan's result exactly, and a long except list costs linear time
// (it was quadratic: 200k ids took tens of seconds).
func TestAppendUniqueLargeLists(t *testing.T) {
	for _, tc := range []struct{ dst, ids []string }{
		{[]string{"a", "a", "b"}, []string{"b", "c", "c", "a", "d"}},
		{nil, []string{"x", "x"}},
		{[]string{"q"}, nil},
	} {
		small := appendUnique(append([]string(nil), tc.dst...), tc.ids...)
		pad := make([]string, smallIDs) // forces the set: ids no test uses
		for i := range pad {
			pad[i] = fmt.Sprintf("pad%d", i)
		}
		large := appendUnique(append(append([]string(nil), pad...), tc.dst...), tc.ids...)
		if !reflect.DeepEqual(large[len(pad):], small) {
			t.Errorf("appendUnique(%q, %q): with a set %q, with a scan %q", tc.dst, tc.ids, large[len(pad):], small)
		}
	}
	ids := make([]any, 200_000)
	for i := range ids {
		ids[i] = fmt.Sprintf("u%d", i%150_000)
	}
	s := mustParse(t, "rules:\n- {name: r, on: x, emit: {event: e, to: 'except(all(), data.ids)'}}\n", Options{})
	out, err := match(t, s, &Event{Type: "x", Data: map[string]any{"ids": ids}})
	if err != nil || len(out) != 1 || len(out[0].To.Except) != 150_000 {
		t.Fatalf("Match(200k ids) = %d outputs, %v", len(out), err)
	}
}
