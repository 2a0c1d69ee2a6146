package rules

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/expr-lang/expr/ast"
)

// An expression compiles twice. The first compile checks it as written,
// with expr's own builtins and types: every load error, and the static type
// the actions vet, comes from it, exactly as before metering existed. The
// second compile runs the patcher below over the same source and builds the
// program that runs. The patcher inserts calls to the meter (Env's $cost,
// $deep and $call fields) before each step whose work grows with the data:
//
//   - each iteration of a loop builtin (any, map, filter, reduce, ...)
//     charges the size of the loop's body;
//   - a string + charges the length of what it built, a let the length of
//     its value;
//   - a builtin or operator that reads a long string or list (upper,
//     split, contains, in, ...) charges its length first;
//   - string(), flatten() and == between two computed values charge the
//     whole size of what they walk, counting a list referenced twice twice;
//   - repeat, replace, join, toJSON and uniq are replaced by versions that
//     compute the size of their result, or count their comparisons, before
//     doing the work (expr's repeat checks its count but builds the string
//     before its memory budget sees it).
//
// The calls go through func-typed fields of Env rather than registered
// functions: the VM calls a field of type func(any, any) any directly
// (OpCallTyped), where a registered function would cost each evaluation an
// allocation (the VM's per-run argument buffer). The price is that the
// meter calls yield `any` to the checker; the second compile's types are
// coarser, which changes nothing at run time (expr picks generic opcodes)
// and nothing at load, since the first compile did the checking.
type patcher struct {
	refused string // the first construct refused, if any

	loops, lets, envRefs int
	// chains counts the + operators under each $cost call of a + chain;
	// up to maxChain of them share one call.
	chains map[*ast.CallNode]int
}

// maxChain is the number of string + operators one $cost call may cover.
// a + b + c + d copies at most 4 times the length of its result before the
// call charges that length, so the bytes copied unseen stay within a small
// factor of the bytes charged.
const maxChain = 4

// flatEnvRefs is the number of references to the event (data, payload,
// sender, $env) beyond which an expression's result is measured before an
// action hands it on; see flat.
const flatEnvRefs = 8

func (p *patcher) refuse(format string, args ...any) {
	if p.refused == "" {
		p.refused = fmt.Sprintf(format, args...)
	}
}

// flat reports whether the result of the expression is small without being
// measured: no loop, no let (so no value referenced twice but through the
// event), and few references to the event. Such a result is at most
// flatEnvRefs times the event, plus strings the meter has charged. Any
// other result may hold the same list many times over (reduce(1..40,
// [#acc, #acc], 1) is a trillion items), and is measured before an action
// hands it to the engine to encode.
func (p *patcher) flat() bool {
	return p.loops == 0 && p.lets == 0 && p.envRefs <= flatEnvRefs
}

func (p *patcher) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		switch {
		case n.Value == "$env", n.Value == "data", n.Value == "payload", n.Value == "sender":
			p.envRefs++
		case strings.HasPrefix(n.Value, "$"):
			p.refuse("%s: names starting with $ are reserved (only $env is defined)", n.Value)
		}
	case *ast.VariableDeclaratorNode:
		p.lets++
		if sized(n.Value) {
			n.Value = costCall(n.Value, 1)
		}
	case *ast.BinaryNode:
		p.binary(node, n)
	case *ast.BuiltinNode:
		p.builtin(node, n)
	case *ast.CallNode:
		// users() and except() convert a list of ids, item by item.
		if id, ok := n.Callee.(*ast.IdentifierNode); ok && (id.Value == "users" || id.Value == "except") {
			p.costArgs(n.Arguments)
		}
	case *ast.MemberNode:
		// data[k] hashes k: a long computed key costs its length.
		if sized(n.Property) {
			n.Property = costCall(n.Property, 1)
		}
	}
}

func (p *patcher) binary(node *ast.Node, n *ast.BinaryNode) {
	switch n.Operator {
	case "+":
		if t := n.Type(); t != nil && t.Kind() != reflect.String && t.Kind() != reflect.Interface {
			return // numbers, durations, times: no allocation that grows
		}
		k := 1
		n.Left, k = p.unchain(n.Left, k)
		n.Right, k = p.unchain(n.Right, k)
		c := costCall(n, 1)
		if p.chains == nil {
			p.chains = make(map[*ast.CallNode]int)
		}
		p.chains[c] = k
		*node = c
	case "contains", "in":
		n.Left, n.Right = costIfSized(n.Left), costIfSized(n.Right)
	case "startsWith", "endsWith":
		n.Right = costIfSized(n.Right) // compares len(Right) bytes of Left
	case "matches":
		pat, ok := n.Right.(*ast.StringNode)
		if !ok {
			p.refuse("matches: the pattern must be a string literal: one computed for each event would be " +
				"compiled for each event, and matching takes time that grows with its length times the text's")
			return
		}
		// Go's regexp matches in time linear in the text, with a factor
		// that grows with the pattern.
		if sized(n.Left) {
			n.Left = costCall(n.Left, 1+len(pat.Value)/16)
		}
	case "==", "!=":
		if literal(n.Left) || literal(n.Right) {
			return // the comparison stops within the literal's length
		}
		if deepSized(n.Left) {
			n.Left = deepCall(n.Left)
		}
		if deepSized(n.Right) {
			n.Right = deepCall(n.Right)
		}
	case "<", ">", "<=", ">=":
		if literal(n.Left) || literal(n.Right) {
			return
		}
		n.Left, n.Right = costIfSized(n.Left), costIfSized(n.Right)
	}
}

// unchain takes the + under a $cost call out of it when the chain is short
// enough for the caller's call to cover it too.
func (p *patcher) unchain(x ast.Node, k int) (ast.Node, int) {
	c, ok := x.(*ast.CallNode)
	if !ok {
		return x, k
	}
	if m := p.chains[c]; m > 0 && k+m <= maxChain {
		delete(p.chains, c)
		return c.Arguments[0], k + m
	}
	return x, k
}

func (p *patcher) builtin(node *ast.Node, n *ast.BuiltinNode) {
	g, ok := builtinGuards[n.Name]
	if !ok {
		g = guardArgs // a builtin of a newer expr: at least charge what it reads
	}
	switch g {
	case guardLoop:
		p.loops++
		// Each iteration charges the size of the body it runs: (tick; body)
		// has the body's type, and charges exactly what runs, so any() that
		// stops at the first item costs one. sum(list) and count(list), with
		// no body, charge the list's length on entry.
		if len(n.Arguments) > 1 {
			if pred, ok := n.Arguments[1].(*ast.PredicateNode); ok {
				tick := costCall(&ast.NilNode{}, 1+countNodes(pred.Node))
				pred.Node = &ast.SequenceNode{Nodes: []ast.Node{tick, pred.Node}}
				return
			}
		}
		n.Arguments[0] = costCall(n.Arguments[0], 1)
	case guardArgs:
		p.costArgs(n.Arguments)
	case guardDeep:
		for i, a := range n.Arguments {
			if deepSized(a) {
				n.Arguments[i] = deepCall(a)
			}
		}
	case guardCall:
		args := append([]ast.Node{&ast.StringNode{Value: n.Name}}, n.Arguments...)
		*node = meterCall("$call", n, args...)
	}
}

func (p *patcher) costArgs(args []ast.Node) {
	for i, a := range args {
		args[i] = costIfSized(a)
	}
}

// countNodes is the number of nodes of the tree under n.
func countNodes(n ast.Node) int {
	var c nodeCounter
	ast.Walk(&n, &c)
	return int(c)
}

type nodeCounter int

func (c *nodeCounter) Visit(*ast.Node) { *c++ }

func costCall(x ast.Node, w int) *ast.CallNode {
	return meterCall("$cost", x, x, &ast.IntegerNode{Value: w})
}

func deepCall(x ast.Node) *ast.CallNode { return meterCall("$deep", x, x) }

func costIfSized(x ast.Node) ast.Node {
	if sized(x) {
		return costCall(x, 1)
	}
	return x
}

// meterCall is a call of the meter field name of Env, placed where at is so
// that run-time errors point at the user's code.
func meterCall(name string, at ast.Node, args ...ast.Node) *ast.CallNode {
	id := &ast.IdentifierNode{Value: name}
	id.SetLocation(at.Location())
	c := &ast.CallNode{Callee: id, Arguments: args}
	c.SetLocation(at.Location())
	return c
}

func isMeterCall(n ast.Node) bool {
	c, ok := n.(*ast.CallNode)
	if !ok {
		return false
	}
	id, ok := c.Callee.(*ast.IdentifierNode)
	return ok && (id.Value == "$cost" || id.Value == "$deep" || id.Value == "$call")
}

// literal reports whether n is a literal scalar: its size is in the source.
func literal(n ast.Node) bool {
	switch n.(type) {
	case *ast.NilNode, *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.StringNode,
		*ast.BytesNode, *ast.ConstantNode:
		return true
	}
	return false
}

// sized reports whether the value of n may be long, as a string, list or
// map: it is computed or read from the event, and not of a scalar type.
// Literals, list and map literals among them, are as long as the source;
// values the meter already charged are not charged twice.
func sized(n ast.Node) bool {
	switch n.(type) {
	case *ast.ArrayNode, *ast.MapNode:
		return false
	}
	return deepSized(n)
}

// deepSized is sized for what walks a value whole: a list literal is short,
// but what it holds may not be.
func deepSized(n ast.Node) bool {
	if literal(n) || isMeterCall(n) {
		return false
	}
	t := n.Type()
	if t == nil {
		return true
	}
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return false
	case reflect.Struct:
		return t != reflect.TypeFor[time.Time]()
	}
	return true
}
