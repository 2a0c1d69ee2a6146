package rules

import (
	"context"
	"fmt"
	"slices"

	"github.com/expr-lang/expr/vm"
	"go.yaml.in/yaml/v3"
)

// Action is one compiled step of a rule: emit, forward, join, leave, or a
// plugin. Do appends its outputs to out and returns it. It runs for many
// events at once, so it must not change itself; everything it parses,
// validates or compiles is done by its Factory, at load.
type Action interface {
	Do(ctx context.Context, in *Input, out []Output) ([]Output, error)
}

// Input is what an Action sees of the event being matched. It is scratch
// space reused across events: an Action must not keep it after Do.
type Input struct {
	Event *Event
	env   Env
	vm    vm.VM
	meter meter
}

// newInput returns an Input whose meter and VM have the limits of s, and
// whose Env calls that meter.
func (s *Set) newInput() *Input {
	in := &Input{}
	in.meter.max, in.meter.timeout = s.maxCost, s.timeout
	in.vm.MemoryBudget = s.maxMemory
	in.env.Cost, in.env.Deep, in.env.Call = in.meter.cost, in.meter.deep, in.meter.call
	return in
}

// Factory builds an Action from the YAML value of its key in a rule. It
// reads values through c (c.Expr, c.Target, c.String, c.Mapping) so that
// expressions are type-checked and errors carry file, line and rule.
type Factory func(node *yaml.Node, c *Compiler) (Action, error)

// Registry maps action names (the keys of a rule) to their factories.
// Build one in main; there is no global registry.
type Registry struct {
	m map[string]Factory
}

// ruleFields are the keys of a rule that are not actions.
var ruleFields = []string{"name", "on", "if", "description"}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{m: make(map[string]Factory)} }

// Register adds an action. An empty name, a name already registered, or
// the name of a rule field (name, on, if, description) is a programming
// error and panics.
func (r *Registry) Register(name string, f Factory) {
	switch {
	case name == "":
		panic("rules: Register with an empty action name")
	case f == nil:
		panic(fmt.Sprintf("rules: Register(%q) with a nil factory", name))
	case slices.Contains(ruleFields, name):
		panic(fmt.Sprintf("rules: action name %q is a rule field", name))
	case r.m[name] != nil:
		panic(fmt.Sprintf("rules: action %q registered twice", name))
	}
	r.m[name] = f
}

// Names returns the registered action names, sorted.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.m))
	for n := range r.m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func (r *Registry) lookup(name string) Factory { return r.m[name] }

// Builtin returns a new registry holding the built-in actions.
func Builtin() *Registry {
	r := NewRegistry()
	r.Register("emit", newEmit)
	r.Register("forward", newForward)
	r.Register("join", newRooms("join"))
	r.Register("leave", newRooms("leave"))
	return r
}
