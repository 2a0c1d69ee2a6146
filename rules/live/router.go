// Package live holds the rules in use: Router, the engine's Router backed
// by a compiled rules.Set, and Reloader, which loads the rules file, swaps
// a new set in whole when it is valid, watches the file, and reports the
// rules' state as metrics and a readiness check.
//
// It is the one place where engine and rules meet: an engine.Event becomes
// a rules.Event, and each rules.Output an engine.Command. Package rules
// stays free of project imports; the engine only knows its Router
// interface.
package live

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/sidecar/sidecar/engine"
	"github.com/sidecar/sidecar/rules"
)

// Router is an engine.Router backed by the compiled rules. The set is
// swapped whole by a Reloader; Route loads the pointer once, so an
// event in flight during a reload finishes on the set it started with. The
// zero value routes nothing until a set is stored.
type Router struct {
	set     atomic.Pointer[rules.Set]
	scratch sync.Pool // *routeScratch
}

var _ engine.Router = (*Router)(nil)

// routeScratch is what one Route call needs besides the event itself,
// reused so that routing allocates only what the rules produce.
type routeScratch struct {
	ev   rules.Event
	outs []rules.Output
}

// Set returns the rules in use, or nil before the first successful load.
func (r *Router) Set() *rules.Set { return r.set.Load() }

func (r *Router) store(s *rules.Set) { r.set.Store(s) }

// Handles reports whether a rule in use listens to events of type typ.
func (r *Router) Handles(typ string) bool {
	s := r.set.Load()
	return s != nil && s.Handles(typ)
}

// NeedsClaims reports whether a rule in use that listens to typ reads the
// sender's claims beyond its id.
func (r *Router) NeedsClaims(typ string) bool {
	s := r.set.Load()
	return s != nil && s.NeedsClaims(typ)
}

// Route runs the rules on ev and appends the engine commands they decide.
func (r *Router) Route(ctx context.Context, ev *engine.Event, out []engine.Command) ([]engine.Command, error) {
	s := r.set.Load()
	if s == nil {
		return out, nil
	}
	sc, _ := r.scratch.Get().(*routeScratch)
	if sc == nil {
		sc = &routeScratch{outs: make([]rules.Output, 0, 4)}
	}
	defer func() {
		clear(sc.outs)
		sc.outs = sc.outs[:0]
		sc.ev = rules.Event{}
		r.scratch.Put(sc)
	}()
	sc.ev = rules.Event{
		ID:     ev.ID,
		Type:   ev.Type,
		Source: ev.Source,
		Time:   ev.Time,
		Sender: ev.Sender.Sender(),
		Data:   ev.Data,
	}
	var err error
	sc.outs, err = s.Match(ctx, &sc.ev, sc.outs[:0])
	for i := range sc.outs {
		o := &sc.outs[i]
		cmd := engine.Command{Rule: o.Rule}
		switch o.Action {
		case "emit":
			cmd.Op, cmd.Event, cmd.Data = engine.OpEmit, o.Event, o.Data
			cmd.To = engine.Target{All: o.To.All, Users: o.To.Users, Rooms: o.To.Rooms, Except: o.To.Except}
		case "forward":
			cmd.Op, cmd.URL, cmd.Data = engine.OpForward, o.URL, o.Data
		case "join", "leave":
			cmd.Op, cmd.Rooms, cmd.User = engine.OpJoin, o.Rooms, o.User
			if o.Action == "leave" {
				cmd.Op = engine.OpLeave
			}
		default:
			// A plugin action registered in rules but unknown to the
			// engine: a wiring mistake, reported like a rule failure.
			err = errors.Join(err, &rules.RuleError{Rule: o.Rule, Err: fmt.Errorf("action %q has no engine command", o.Action)})
			continue
		}
		out = append(out, cmd)
	}
	return out, err
}
