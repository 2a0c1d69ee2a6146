// Package rules turns a YAML rules file into compiled expr programs and
// decides, for each event, what it causes: events emitted to users and
// rooms, requests forwarded to the app, rooms joined or left.
//
// A Set is immutable once loaded and safe for concurrent use. Reloading
// means loading a new Set aside and swapping a pointer; an event that
// started on the old Set finishes on it.
//
// The package imports no other project package and reads no file other
// than the one Load is asked to read; the environment comes in through
// Options.Lookup.
package rules

import (
	"context"
	"errors"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Event is one input: a webhook, a client event or a lifecycle change.
type Event struct {
	ID     string
	Type   string // "booking.created", "client.typing", "connection.open", ...
	Source string // "webhook", "client", "lifecycle", "api"
	Time   time.Time
	// Sender is the claims of the sending connection, or of the user a
	// lifecycle event is about, with "id" set to the user id. Nil for
	// webhooks. Read-only: expressions and actions never change it.
	Sender map[string]any
	// Data is the decoded JSON payload. Read-only.
	Data any
}

// Target names the recipients of an emitted event. Ids are strings; the
// zero Target reaches nobody.
type Target struct {
	All    bool     `json:"all,omitempty"`
	Users  []string `json:"users,omitempty"`
	Rooms  []string `json:"rooms,omitempty"`
	Except []string `json:"except,omitempty"` // user ids left out, whatever else matched
}

// Output is one decision of a rule. Which fields are set depends on
// Action: emit sets Event, To and Data; forward sets URL and Data (nil: the
// input event is the body); join and leave set Rooms and, optionally, User
// (empty: the connection or sender the event is about). Plugin actions use
// their own name and any of the fields.
type Output struct {
	Rule   string   `json:"rule"`
	Action string   `json:"action"`
	Event  string   `json:"event,omitempty"`
	To     Target   `json:"to,omitzero"`
	Data   any      `json:"data,omitempty"`
	URL    string   `json:"url,omitempty"`
	Rooms  []string `json:"rooms,omitempty"`
	User   string   `json:"user,omitempty"`
}

// Set is a loaded, compiled rules file.
type Set struct {
	source string
	rules  []*rule            // file order
	exact  map[string][]*rule // by event type, file order
	globs  []*rule            // rules with a glob in `on`, file order
	inputs sync.Pool          // *Input, scratch space reused across Match calls

	maxCost   int           // Options.MaxCost, defaulted
	timeout   time.Duration // Options.Timeout, defaulted
	maxMemory uint          // Options.MaxMemory, defaulted
}

type rule struct {
	name    string
	idx     int    // position in the file: the order rules run in
	globs   []glob // the glob patterns of `on`; exact ones are keys of Set.exact
	cond    *Expr  // nil: always
	actions []Action
	errors  atomic.Uint64 // run-time failures
	// claims: the rule reads the sender's claims (beyond sender.id).
	claims bool
}

// Source is the file name the Set was loaded from.
func (s *Set) Source() string { return s.source }

// Len is the number of rules.
func (s *Set) Len() int { return len(s.rules) }

// Rules returns the rule names in file order.
func (s *Set) Rules() []string {
	names := make([]string, len(s.rules))
	for i, r := range s.rules {
		names[i] = r.name
	}
	return names
}

// Errors returns, for every rule, how many events it failed on at run time
// since the Set was loaded.
func (s *Set) Errors() map[string]uint64 {
	m := make(map[string]uint64, len(s.rules))
	for _, r := range s.rules {
		m[r.name] = r.errors.Load()
	}
	return m
}

// Handles reports whether any rule listens to events of type typ (its
// `on` matches it), whatever its condition: the engine answers a client
// event that no rule listens to with an error, so a typo shows.
func (s *Set) Handles(typ string) bool {
	if len(s.exact[typ]) > 0 {
		return true
	}
	for _, r := range s.globs {
		if r.matches(typ) {
			return true
		}
	}
	return false
}

// NeedsClaims reports whether a rule that listens to events of type typ
// reads the sender's claims beyond sender.id: an expression does, or an
// action that sees the whole event (forward, plugins). When none does, the
// caller may pass a Sender holding the id alone, and spare decoding the
// token's claims.
func (s *Set) NeedsClaims(typ string) bool {
	for _, r := range s.exact[typ] {
		if r.claims {
			return true
		}
	}
	for _, r := range s.globs {
		if r.claims && r.matches(typ) {
			return true
		}
	}
	return false
}

// Match runs the rules whose `on` matches ev.Type, in file order, and
// appends their outputs to out. A rule that fails at run time (nil index,
// division by zero, an id that is not an id, a loop over its budget, even a
// panic in a plugin) is skipped for this event: its outputs are dropped,
// its error counter grows, and a *RuleError is joined into the returned
// error. The other rules still run, so a non-nil error comes with valid
// outputs.
//
// Each rule's evaluation is bounded by Options.MaxCost, Options.Timeout and
// Options.MaxMemory, separately: one slow rule does not eat the next one's
// time. It also stops when ctx is done, if it gets that far.
//
// Match allocates nothing for an event no rule matches. For a matching rule
// it allocates what expr needs to evaluate and what the outputs hold.
func (s *Set) Match(ctx context.Context, ev *Event, out []Output) ([]Output, error) {
	exact, globs := s.exact[ev.Type], s.globs
	if len(exact) == 0 && len(globs) == 0 {
		return out, nil
	}
	var in *Input
	var errs []error
	i, j := 0, 0
	for {
		var r *rule
		switch {
		case i < len(exact) && (j >= len(globs) || exact[i].idx <= globs[j].idx):
			r = exact[i]
			i++
			if j < len(globs) && globs[j] == r {
				j++ // an exact pattern of this rule matched; run it once
			}
		case j < len(globs):
			r = globs[j]
			j++
			if !r.matches(ev.Type) {
				continue
			}
		default:
			if in != nil {
				s.release(in)
			}
			return out, errors.Join(errs...)
		}
		if in == nil {
			in = s.input(ev)
		}
		n := len(out)
		res, err := r.run(ctx, in, out)
		if err != nil {
			r.errors.Add(1)
			errs = append(errs, &RuleError{Rule: r.name, Err: err})
			if len(res) > n {
				clear(res[n:]) // drop what the failed rule appended
			}
			out = out[:n]
			continue
		}
		out = res
	}
}

// run evaluates one rule. A panic (a plugin bug, or an expr corner case)
// becomes an error of this rule alone: the last line of defence behind the
// recover inside expr's VM.
func (r *rule) run(ctx context.Context, in *Input, out []Output) (res []Output, err error) {
	n := len(out)
	res = out
	in.meter.reset(ctx) // each rule has the whole budget and timeout
	defer func() {
		if p := recover(); p != nil {
			res, err = out[:n], &panicError{v: p}
		}
	}()
	if r.cond != nil {
		v, err := in.Eval(r.cond)
		if err != nil {
			return out, err
		}
		if ok, _ := v.(bool); !ok {
			return out, nil
		}
	}
	for _, a := range r.actions {
		if res, err = a.Do(ctx, in, res); err != nil {
			return res, err
		}
	}
	for k := n; k < len(res); k++ {
		if res[k].Rule == "" {
			res[k].Rule = r.name
		}
	}
	return res, nil
}

// matches reports whether a glob pattern of r matches typ.
func (r *rule) matches(typ string) bool {
	for i := range r.globs {
		if r.globs[i].match(typ) {
			return true
		}
	}
	return false
}

// glob is a pattern of `on` in path.Match syntax, with a fast path for the
// common shapes "prefix.*" and "*", which path.Match handles five to ten
// times slower.
type glob struct {
	pat    string
	prefix string // pat without its trailing '*', if that is its only meta character
	simple bool
}

func newGlob(pat string) glob {
	prefix, ok := strings.CutSuffix(pat, "*")
	return glob{pat: pat, prefix: prefix, simple: ok && !strings.ContainsAny(prefix, `*?[\`)}
}

func (g *glob) match(typ string) bool {
	if g.simple {
		// path.Match's '*' does not cross '/'; keep its meaning exactly.
		return strings.HasPrefix(typ, g.prefix) && !strings.Contains(typ[len(g.prefix):], "/")
	}
	ok, _ := path.Match(g.pat, typ)
	return ok
}

func (s *Set) input(ev *Event) *Input {
	in, _ := s.inputs.Get().(*Input)
	if in == nil {
		in = s.newInput()
	}
	in.Event = ev
	in.env.Data, _ = ev.Data.(map[string]any)
	in.env.Payload = ev.Data
	in.env.Sender = ev.Sender
	in.env.Event = EventInfo{Type: ev.Type, ID: ev.ID, Source: ev.Source, Time: ev.Time}
	return in
}

// release returns in to the pool without references to the event, so the
// pool keeps no payload alive.
func (s *Set) release(in *Input) {
	in.Event = nil
	in.env.Data, in.env.Payload, in.env.Sender, in.env.Event = nil, nil, nil, EventInfo{}
	in.meter.ctx = nil
	s.inputs.Put(in)
}
