package rules

import (
	"context"

	"go.yaml.in/yaml/v3"
)

// rooms is join or leave. Short form: an expression yielding room names
// (a list, or one name). Long form: {rooms: expr, user: expr}, where user
// names whose connections move; without it, the connection or the sender
// the event is about.
type rooms struct {
	action string // "join" or "leave"
	rooms  *Expr
	user   *Expr // nil: the event's own connection or sender
}

var _ Action = (*rooms)(nil)

func newRooms(action string) Factory {
	return func(node *yaml.Node, c *Compiler) (Action, error) {
		r := &rooms{action: action}
		var err error
		if n := resolve(node); n == nil || n.Kind != yaml.MappingNode {
			if r.rooms, err = c.Rooms(action, node); err != nil {
				return nil, err
			}
			return r, nil
		}
		m, err := c.Mapping(action, node, "rooms", "user")
		if err != nil {
			return nil, err
		}
		var errs ErrorList
		if m["rooms"] == nil {
			errs = append(errs, c.Errorf(node, "%s: missing rooms", action))
		} else if r.rooms, err = c.Rooms(action+".rooms", m["rooms"]); err != nil {
			errs = append(errs, c.errorsOf(err, action, m["rooms"])...)
		}
		if m["user"] != nil {
			if r.user, err = c.ID(action+".user", m["user"]); err != nil {
				errs = append(errs, c.errorsOf(err, action, m["user"])...)
			}
		}
		if len(errs) > 0 {
			return nil, errs
		}
		return r, nil
	}
}

// Do appends nothing when the expression yields no rooms.
func (r *rooms) Do(_ context.Context, in *Input, out []Output) ([]Output, error) {
	names, err := in.Rooms(r.rooms)
	if err != nil || len(names) == 0 {
		return out, err
	}
	var user string
	if r.user != nil {
		if user, err = in.ID(r.user); err != nil {
			return out, err
		}
	}
	return append(out, Output{Action: r.action, Rooms: names, User: user}), nil
}
