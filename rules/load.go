package rules

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/expr-lang/expr"
	"go.yaml.in/yaml/v3"
)

// Options configure a load.
type Options struct {
	// Registry holds the actions rules may use; nil means Builtin().
	Registry *Registry
	// Lookup resolves ${VAR} in the file (os.LookupEnv in production). Nil:
	// every variable is unset, so only ${VAR:-default} works.
	Lookup func(string) (string, bool)
	// MaxNodes bounds each expression's size (expr.MaxNodes); 0 means
	// DefaultMaxNodes.
	MaxNodes uint
	// Now is the clock behind now() in expressions; nil means time.Now.
	// `sidecar test` pins it so that test outputs are reproducible.
	Now func() time.Time
	// AllowEmpty lets an empty rules list ("rules: []") load. Without it,
	// an empty list is a load error: a file emptied by mistake would
	// otherwise turn off all routing while the node looks healthy. Config
	// sets it from rules.allow_empty.
	AllowEmpty bool

	// MaxCost bounds the work of one rule for one event: its `if` and its
	// actions' expressions together. The unit is one item a loop visits
	// times the number of nodes in the loop's body, or one byte of a string
	// that + builds or a builtin reads, or one item or byte of a value an
	// action yields when the expression has loops or lets. Going over fails
	// the rule for that event (Kind "budget"). 0 means DefaultMaxCost.
	MaxCost int
	// Timeout bounds the time of one rule for one event, checked as the
	// meter counts; going over fails the rule (Kind "timeout"). 0 means
	// DefaultTimeout.
	Timeout time.Duration
	// MaxMemory is expr's memory budget for one expression evaluation, in
	// items of the ranges, lists and maps it builds (1..n is n items). 0
	// means DefaultMaxMemory.
	MaxMemory uint
}

// MaxFileBytes is the size limit of a rules file. The expressions of a file
// may total no more either, counted after ${VAR} and YAML alias expansion:
// an alias repeated many times must not make a load compile for minutes.
const MaxFileBytes = 4 << 20

// Load reads and compiles a rules file. Problems in the file come back
// together as an ErrorList, each positioned "file:line: rule "name": ...".
func Load(path string, opt Options) (*Set, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load rules: %w", err)
	}
	defer f.Close()
	// One byte more than the limit, so that Parse sees the file is too big
	// without Load reading all of it.
	src, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("load rules: %w", err)
	}
	return Parse(path, src, opt)
}

// Parse compiles rules from src; name stands for the file in messages.
func Parse(name string, src []byte, opt Options) (*Set, error) {
	if len(src) > MaxFileBytes {
		return nil, ErrorList{{File: name, Msg: fmt.Sprintf("larger than %d MiB, the most a rules file may hold", MaxFileBytes>>20)}}
	}
	if opt.Registry == nil {
		opt.Registry = Builtin()
	}
	p := &parser{
		file: name,
		opt:  opt,
		base: newCompilerOptions(opt),
		set: &Set{source: name, exact: make(map[string][]*rule),
			maxCost: positiveOr(opt.MaxCost, DefaultMaxCost), timeout: positiveOr(opt.Timeout, DefaultTimeout),
			maxMemory: positiveOr(opt.MaxMemory, DefaultMaxMemory)},
	}
	p.parse(src)
	if len(p.errs) > 0 {
		if over := p.load.over; over != nil {
			// Every expression after the limit got the same error; keep one.
			first := slices.Index(p.errs, over)
			p.errs = slices.DeleteFunc(p.errs, func(e *Error) bool { return e == over })
			p.errs = slices.Insert(p.errs, min(first, len(p.errs)), over)
		}
		slices.SortStableFunc(p.errs, func(a, b *Error) int { return a.Line - b.Line })
		return nil, p.errs
	}
	return p.set, nil
}

type parser struct {
	file  string
	opt   Options
	base  []expr.Option
	set   *Set
	errs  ErrorList
	names map[string]int // rule name -> line
	load  loadState
}

func (p *parser) errorf(n *yaml.Node, rule, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	p.errs = append(p.errs, &Error{File: p.file, Line: line, Rule: rule, Msg: fmt.Sprintf(format, args...)})
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlParserProblems are the YAML parser's (not scanner's) messages.
var yamlParserProblems = map[string]bool{
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"did not find expected '-' indicator":    true,
	"did not find expected key":              true,
	"did not find expected node content":     true,
	"did not find expected <document start>": true,
}

func (p *parser) parse(src []byte) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(src))
	err := decode(dec, &doc)
	if err == io.EOF {
		p.errorf(nil, "", "empty file: want a top-level \"rules:\" list")
		return
	}
	if err != nil {
		p.yamlError(err)
		return
	}
	var extra yaml.Node
	if err := decode(dec, &extra); err == nil {
		p.errorf(&extra, "", "more than one YAML document; put every rule under one \"rules:\" list")
		return
	} else if err != io.EOF {
		p.yamlError(err)
		return
	}
	root := resolve(&doc)
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = resolve(root.Content[0])
	}
	if root == nil || root.Kind != yaml.MappingNode {
		p.errorf(root, "", "want a mapping with a \"rules:\" list at the top")
		return
	}
	var list, listKey *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		switch {
		case k.Value != "rules":
			p.errorf(k, "", "unknown top-level key %q (want rules)", k.Value)
		case list != nil:
			p.errorf(k, "", "duplicate key \"rules\"")
		default:
			list, listKey = resolve(v), k
			if list == nil || list.Kind != yaml.SequenceNode {
				p.errorf(v, "", "rules: want a list of rules")
				list, listKey = &yaml.Node{Kind: yaml.SequenceNode}, nil
			}
		}
	}
	if list == nil {
		p.errorf(root, "", "missing top-level \"rules:\" list")
		return
	}
	if listKey != nil && len(list.Content) == 0 && !p.opt.AllowEmpty {
		p.errorf(listKey, "", "no rules: an empty list turns off all routing (set rules.allow_empty: true in the config to allow it)")
		return
	}
	p.names = make(map[string]int, len(list.Content))
	for i, item := range list.Content {
		if p.load.over != nil {
			break
		}
		p.rule(i, item)
	}
}

// decode is dec.Decode with a recover: the YAML library is a parser of
// untrusted edits, and a panic in it must be a load error, not a crash.
func decode(dec *yaml.Decoder, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: %v", r)
		}
	}()
	return dec.Decode(n)
}

func (p *parser) yamlError(err error) {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		msg = m[2]
		if yamlParserProblems[msg] {
			// For these the YAML library reports the 0-based line of the
			// enclosing block or flow, not of the problem itself.
			line++
			msg += " (in the block or flow collection that starts on this line)"
		}
		p.errs = append(p.errs, &Error{File: p.file, Line: line, Msg: "yaml: " + msg})
		return
	}
	p.errs = append(p.errs, &Error{File: p.file, Msg: msg})
}

// rule compiles the i-th rule (0-based) and adds it to the set.
func (p *parser) rule(i int, node *yaml.Node) {
	node = resolve(node)
	label := fmt.Sprintf("#%d", i+1) // for messages until the name is known
	if node == nil || node.Kind != yaml.MappingNode {
		p.errorf(node, "", "rule %s: want a mapping with name, on and an action", label)
		return
	}
	// The name first, so every other message can carry it.
	var name string
	for k := 0; k+1 < len(node.Content); k += 2 {
		if node.Content[k].Value == "name" {
			v := resolve(node.Content[k+1])
			if v == nil || v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
				p.errorf(v, "", "rule %s: name: want a string", label)
				return
			}
			name = v.Value
			if err := checkName(name); err != nil {
				p.errorf(v, "", "rule %s: name %q: %v", label, name, err)
				return
			}
			if first, dup := p.names[name]; dup {
				p.errorf(v, name, "duplicate name (first defined at line %d)", first)
				return
			}
			p.names[name] = v.Line
			break
		}
	}
	if name == "" {
		p.errorf(node, "", "rule %s: missing name", label)
		return
	}
	c := &Compiler{file: p.file, rule: name, lookup: p.opt.Lookup, opts: p.base, load: &p.load}
	r := &rule{name: name, idx: i}
	nerr := len(p.errs)
	actionKeys := 0 // keys that are, or might be meant as, actions
	seen := make(map[string]bool, len(node.Content)/2)
	var onNode *yaml.Node
	for k := 0; k+1 < len(node.Content); k += 2 {
		key, val := node.Content[k], node.Content[k+1]
		if seen[key.Value] {
			p.errorf(key, name, "duplicate key %q", key.Value)
			continue
		}
		seen[key.Value] = true
		switch key.Value {
		case "name":
		case "description":
			if _, err := c.String("description", val); err != nil {
				p.errs = append(p.errs, c.errorsOf(err, "description", val)...)
			}
		case "on":
			onNode = key
			p.on(c, r, val)
		case "if":
			cond, err := c.Bool("if", val)
			if err != nil {
				p.errs = append(p.errs, c.errorsOf(err, "if", val)...)
			}
			r.cond = cond
		default:
			actionKeys++
			f := p.opt.Registry.lookup(key.Value)
			if f == nil {
				p.errorf(key, name, "unknown key %q: not a rule field (%s) nor an action (%s)",
					key.Value, strings.Join(ruleFields, ", "), strings.Join(p.opt.Registry.Names(), ", "))
				continue
			}
			a, err := f(val, c)
			if err != nil {
				p.errs = append(p.errs, c.errorsOf(err, key.Value, val)...)
				continue
			}
			r.actions = append(r.actions, a)
			switch key.Value {
			case "emit", "join", "leave": // what they read is in their expressions
			default: // forward posts the sender's claims; a plugin may read anything
				r.claims = true
			}
		}
	}
	if onNode == nil {
		p.errorf(node, name, "missing on (the event type, e.g. booking.created or client.*)")
	}
	if actionKeys == 0 {
		p.errorf(node, name, "no action: want one of %s", strings.Join(p.opt.Registry.Names(), ", "))
	}
	if len(p.errs) > nerr {
		return
	}
	r.claims = r.claims || c.claims
	p.set.rules = append(p.set.rules, r)
	if len(r.globs) > 0 {
		p.set.globs = append(p.set.globs, r)
	}
}

// on reads the event types of a rule: one pattern or a list of them. A
// pattern is an exact type or a glob (path.Match syntax: "booking.*", "*").
func (p *parser) on(c *Compiler, r *rule, val *yaml.Node) {
	val = resolve(val)
	items := []*yaml.Node{val}
	if val != nil && val.Kind == yaml.SequenceNode {
		items = val.Content
		if len(items) == 0 {
			p.errorf(val, r.name, "on: empty list")
		}
	}
	for _, it := range items {
		pat, err := c.String("on", it)
		if err != nil {
			p.errs = append(p.errs, c.errorsOf(err, "on", it)...)
			continue
		}
		switch _, err := path.Match(pat, ""); {
		case pat == "":
			p.errorf(it, r.name, "on: empty event type")
		case strings.ContainsFunc(pat, unicode.IsSpace):
			p.errorf(it, r.name, "on: %q contains white space", pat)
		case err != nil:
			p.errorf(it, r.name, "on: bad glob %q: %v", pat, err)
		case isGlob(pat):
			r.globs = append(r.globs, newGlob(pat))
		default:
			if l := p.set.exact[pat]; len(l) == 0 || l[len(l)-1] != r {
				p.set.exact[pat] = append(l, r)
			}
		}
	}
}

// positiveOr is v, or def when v is zero or negative.
func positiveOr[T int | uint | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

func isGlob(pat string) bool { return strings.ContainsAny(pat, `*?[\`) }

// checkName keeps names fit for log lines and metric labels.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("empty")
	case len(name) > 128:
		return errors.New("longer than 128 bytes")
	case strings.ContainsFunc(name, func(r rune) bool { return unicode.IsControl(r) || r == unicode.ReplacementChar }):
		return errors.New("contains control characters")
	}
	return nil
}
