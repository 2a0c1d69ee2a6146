package rules

import (
	"context"

	"go.yaml.in/yaml/v3"
)

// emit sends events to clients. Its YAML is one {event, to, data} mapping
// or a list of them: event is a name, to and data are expressions; without
// data the input event's payload passes through.
type emit []emitOne

type emitOne struct {
	event string
	to    *Expr
	data  *Expr // nil: the input payload
}

var _ Action = emit(nil)

func newEmit(node *yaml.Node, c *Compiler) (Action, error) {
	node = resolve(node)
	items := []*yaml.Node{node}
	if node != nil && node.Kind == yaml.SequenceNode {
		items = node.Content
		if len(items) == 0 {
			return nil, c.Errorf(node, "emit: empty list")
		}
	}
	var errs ErrorList
	e := make(emit, 0, len(items))
	for _, item := range items {
		one, err := newEmitOne(item, c)
		if err != nil {
			errs = append(errs, c.errorsOf(err, "emit", item)...)
			continue
		}
		e = append(e, one)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return e, nil
}

func newEmitOne(node *yaml.Node, c *Compiler) (emitOne, error) {
	m, err := c.Mapping("emit", node, "event", "to", "data")
	if err != nil {
		return emitOne{}, err
	}
	var one emitOne
	var errs ErrorList
	add := func(err error) {
		if err != nil {
			errs = append(errs, c.errorsOf(err, "emit", node)...)
		}
	}
	switch {
	case m["event"] == nil:
		add(c.Errorf(node, "emit: missing event (the name clients receive)"))
	default:
		one.event, err = c.String("emit.event", m["event"])
		if err == nil && one.event == "" {
			err = c.Errorf(m["event"], "emit.event: empty name")
		}
		add(err)
	}
	if m["to"] == nil {
		add(c.Errorf(node, "emit: missing to (user(), users(), room(), all(), except())"))
	} else {
		one.to, err = c.Target("emit.to", m["to"])
		add(err)
	}
	if m["data"] != nil {
		one.data, err = c.Expr("emit.data", m["data"])
		add(err)
	}
	if len(errs) > 0 {
		return emitOne{}, errs
	}
	return one, nil
}

func (e emit) Do(_ context.Context, in *Input, out []Output) ([]Output, error) {
	for i := range e {
		to, err := in.Target(e[i].to)
		if err != nil {
			return out, err
		}
		data := in.Event.Data
		if e[i].data != nil {
			if data, err = in.Eval(e[i].data); err != nil {
				return out, err
			}
		}
		out = append(out, Output{Action: "emit", Event: e[i].event, To: to, Data: data})
	}
	return out, nil
}
