package rules

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"
	"go.yaml.in/yaml/v3"
)

// DefaultMaxNodes bounds the size of one expression (expr's AST node
// budget) when Options.MaxNodes is zero.
const DefaultMaxNodes = 10000

// maxNesting bounds bracket nesting in an expression. expr's parser
// recurses once per level before its node budget applies, so a line of
// 100k "(" would otherwise cost a deep stack at load.
const maxNesting = 200

// Compiler turns the YAML of one rule into compiled expressions. Action
// factories get one, and read every value through it: so errors carry the
// file, the line and the rule name, and ${VAR} expands the same way in
// every action.
type Compiler struct {
	file   string
	rule   string
	lookup func(string) (string, bool)
	opts   []expr.Option // shared by every expression of one load
	load   *loadState    // shared by every Compiler of one load
	// claims is set once an expression of the rule reads the sender's
	// claims: sender beyond sender.id (see usesClaims).
	claims bool
}

// loadState is what the Compilers of one load share.
type loadState struct {
	// exprBytes is the length of the expressions compiled so far, after
	// ${VAR} and alias expansion. Past MaxFileBytes, compiling stops: the
	// expression that went over gets over, and so do all later ones.
	exprBytes int
	over      *Error
}

// Expr is a compiled expression.
type Expr struct {
	key  string // where it came from, for messages: "if", "emit.to", ...
	line int
	src  string
	prog *vm.Program // metered: see patch.go
	// measure: the result may be far larger than the work that built it
	// (patcher.flat), so Eval charges its size before handing it on.
	measure bool
}

// String returns the expression's source, after ${VAR} expansion.
func (e *Expr) String() string { return e.src }

// Line is the line of the rules file the expression starts on.
func (e *Expr) Line() int { return e.line }

func newCompilerOptions(opt Options) []expr.Option {
	now := opt.Now
	if now == nil {
		now = time.Now
	}
	maxNodes := opt.MaxNodes
	if maxNodes == 0 {
		maxNodes = DefaultMaxNodes
	}
	opts := []expr.Option{expr.Env(Env{}), expr.MaxNodes(maxNodes)}
	return append(opts, functions(now)...)
}

// File is the name of the rules file being compiled.
func (c *Compiler) File() string { return c.file }

// Rule is the name of the rule being compiled.
func (c *Compiler) Rule() string { return c.rule }

// Errorf returns a load error positioned at n.
func (c *Compiler) Errorf(n *yaml.Node, format string, args ...any) *Error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &Error{File: c.file, Line: line, Rule: c.rule, Msg: fmt.Sprintf(format, args...)}
}

// String reads a literal scalar (not an expression), with ${VAR} expanded.
func (c *Compiler) String(key string, n *yaml.Node) (string, error) {
	n = resolve(n)
	if n == nil || n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return "", c.Errorf(n, "%s: want a string", key)
	}
	s, err := ExpandEnv(n.Value, c.lookup)
	if err != nil {
		return "", c.Errorf(n, "%s: %v", key, err)
	}
	return s, nil
}

// Mapping reads a mapping whose keys must be among keys. An unknown or a
// repeated key is an error; the values come back by key, absent keys as nil.
func (c *Compiler) Mapping(key string, n *yaml.Node, keys ...string) (map[string]*yaml.Node, error) {
	n = resolve(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return nil, c.Errorf(n, "%s: want a mapping with keys %s", key, strings.Join(keys, ", "))
	}
	m := make(map[string]*yaml.Node, len(keys))
	var errs ErrorList
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		known := false
		for _, want := range keys {
			known = known || k.Value == want
		}
		switch {
		case !known:
			errs = append(errs, c.Errorf(k, "%s: unknown key %q (want %s)", key, k.Value, strings.Join(keys, ", ")))
		case m[k.Value] != nil:
			errs = append(errs, c.Errorf(k, "%s: duplicate key %q", key, k.Value))
		default:
			m[k.Value] = v
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return m, nil
}

// Expr compiles an expression that may yield anything.
func (c *Compiler) Expr(key string, n *yaml.Node) (*Expr, error) {
	return c.compile(key, n, nil, "")
}

// Bool compiles a condition: it must yield a bool (expr.AsBool).
func (c *Compiler) Bool(key string, n *yaml.Node) (*Expr, error) {
	return c.compile(key, n, nil, "", expr.AsBool())
}

// Target compiles a `to` expression: a target (user(), users(), room(),
// all(), except()) or a list of them. An expression whose type is known
// and is not one of these (a string, a number) is rejected at load.
func (c *Compiler) Target(key string, n *yaml.Node) (*Expr, error) {
	return c.compile(key, n, func(t reflect.Type) bool {
		return t == targetType || t.Kind() == reflect.Slice &&
			(t.Elem() == targetType || t.Elem().Kind() == reflect.Interface)
	}, "a target such as user(id), or a list of them")
}

// Rooms compiles an expression yielding room names: a list, or one name.
func (c *Compiler) Rooms(key string, n *yaml.Node) (*Expr, error) {
	return c.compile(key, n, func(t reflect.Type) bool {
		return t.Kind() == reflect.Slice || isIDKind(t)
	}, "a room name or a list of them")
}

// ID compiles an expression yielding one user id (a string or a number).
func (c *Compiler) ID(key string, n *yaml.Node) (*Expr, error) {
	return c.compile(key, n, isIDKind, "a user id (a string or a number)")
}

var targetType = reflect.TypeFor[Target]()

func isIDKind(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.String, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return true
	}
	return false
}

// compile compiles the scalar n. typeOK, when set, vets the expression's
// static type; an unknown type (from untyped data) passes and is checked
// when the rule runs.
func (c *Compiler) compile(key string, n *yaml.Node, typeOK func(reflect.Type) bool, want string, extra ...expr.Option) (*Expr, error) {
	n = resolve(n)
	if n == nil || n.Kind != yaml.ScalarNode {
		return nil, c.Errorf(n, "%s: want an expression (a string)", key)
	}
	src, err := ExpandEnv(n.Value, c.lookup)
	if err != nil {
		return nil, c.Errorf(n, "%s: %v", key, err)
	}
	if strings.TrimSpace(src) == "" {
		return nil, c.Errorf(n, "%s: empty expression", key)
	}
	if l := c.load; l != nil {
		if l.over == nil {
			if l.exprBytes += len(src); l.exprBytes > MaxFileBytes {
				l.over = c.Errorf(n, "%s: the expressions total more than %d MiB after ${VAR} and alias expansion; nothing after this one is compiled",
					key, MaxFileBytes>>20)
			}
		}
		if l.over != nil {
			return nil, l.over
		}
	}
	if nestingDepth(src) > maxNesting {
		return nil, c.Errorf(n, "%s: expression nested more than %d levels deep", key, maxNesting)
	}
	line := n.Line
	if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		line++ // a block scalar's text starts on the line after | or >
	}
	// First as written, for the errors and the type (not optimized: the
	// optimizer folds "a" + "b" + ..., and the second compile does not need
	// it to); then metered, for the program that runs. See patch.go.
	opts := append(c.opts[:len(c.opts):len(c.opts)], extra...)
	checked, err := expr.Compile(src, append(opts, expr.Optimize(false))...)
	if err != nil {
		at := line
		if n.Style&yaml.LiteralStyle != 0 {
			at += exprLine(err) - 1
		}
		return nil, &Error{File: c.file, Line: at, Rule: c.rule, Msg: key + ": " + exprMessage(err)}
	}
	if typeOK != nil {
		if t := checked.Node().Type(); t != nil && t.Kind() != reflect.Interface && !typeOK(t) {
			return nil, c.Errorf(n, "%s: yields %s, want %s", key, t, want)
		}
	}
	if usesClaims(checked.Node()) {
		c.claims = true
	}
	p := &patcher{}
	prog, err := expr.Compile(src, append(opts, expr.Patch(p))...)
	switch {
	case p.refused != "":
		return nil, c.Errorf(n, "%s: %s", key, p.refused)
	case err != nil:
		// The source passed the first compile; the patcher made something
		// expr rejects. A bug here, reported as a load error, not a crash.
		return nil, c.Errorf(n, "%s: internal error metering the expression: %s", key, exprMessage(err))
	}
	return &Expr{key: key, line: line, src: src, prog: prog, measure: !p.flat()}, nil
}

// nestingDepth is the deepest bracket nesting in src, outside string
// literals.
func nestingDepth(src string) int {
	depth, deepest := 0, 0
	var quote byte
	for i := 0; i < len(src); i++ {
		ch := src[i]
		if quote != 0 {
			switch {
			case ch == '\\' && quote != '`':
				i++
			case ch == quote:
				quote = 0
			}
			continue
		}
		switch ch {
		case '"', '\'', '`':
			quote = ch
		case '(', '[', '{':
			depth++
			deepest = max(deepest, depth)
		case ')', ']', '}':
			depth--
		}
	}
	return deepest
}

// resolve follows YAML aliases (*name) to the node they stand for.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	if n != nil && n.Kind == yaml.AliasNode {
		return nil
	}
	return n
}

// Eval runs e for the current event.
func (in *Input) Eval(e *Expr) (any, error) {
	v, err := in.vm.Run(e.prog, &in.env)
	if err == nil && e.measure {
		err = in.meter.measure(v, false)
	}
	if err != nil {
		return nil, &evalError{e: e, err: err, memory: in.vm.MemoryBudget}
	}
	return v, nil
}

// Target runs a `to` expression and merges what it yields into one Target.
func (in *Input) Target(e *Expr) (Target, error) {
	v, err := in.Eval(e)
	if err != nil {
		return Target{}, err
	}
	t, err := toTarget(v)
	if err != nil {
		return Target{}, &evalError{e: e, err: err}
	}
	return t, nil
}

// Rooms runs an expression yielding room names.
func (in *Input) Rooms(e *Expr) ([]string, error) {
	v, err := in.Eval(e)
	if err != nil {
		return nil, err
	}
	rooms, err := toRooms(v)
	if err != nil {
		return nil, &evalError{e: e, err: err}
	}
	return rooms, nil
}

// ID runs an expression yielding one id.
func (in *Input) ID(e *Expr) (string, error) {
	v, err := in.Eval(e)
	if err != nil {
		return "", err
	}
	id, err := ID(v)
	if err != nil {
		return "", &evalError{e: e, err: err}
	}
	return id, nil
}

// errorsOf flattens what a factory returned into positioned errors; an
// error without a position gets n's.
func (c *Compiler) errorsOf(err error, key string, n *yaml.Node) ErrorList {
	var out ErrorList
	var walk func(error)
	walk = func(err error) {
		var e *Error
		switch x := err.(type) {
		case ErrorList:
			out = append(out, x...)
			return
		case interface{ Unwrap() []error }:
			for _, err := range x.Unwrap() {
				walk(err)
			}
			return
		}
		if errors.As(err, &e) {
			out = append(out, e)
			return
		}
		out = append(out, c.Errorf(n, "%s: %v", key, err))
	}
	walk(err)
	return out
}

// usesClaims reports whether the expression reads the sender's claims: any
// use of sender other than sender.id (or sender?.id, sender["id"]). An
// event whose rules read no claims needs none decoded (Set.NeedsClaims).
func usesClaims(root ast.Node) bool {
	v := &claimsVisitor{}
	ast.Walk(&root, v)
	return v.sender > v.idOnly
}

type claimsVisitor struct{ sender, idOnly int }

func (v *claimsVisitor) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		if n.Value == "sender" {
			v.sender++
		}
	case *ast.MemberNode:
		if id, ok := n.Node.(*ast.IdentifierNode); ok && id.Value == "sender" {
			if s, ok := n.Property.(*ast.StringNode); ok && s.Value == "id" {
				v.idOnly++
			}
		}
	}
}
