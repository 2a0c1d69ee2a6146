package rules

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"

	"github.com/expr-lang/expr/file"
)

// Error is one problem found while loading a rules file. It prints as
// "file:line: rule "name": message", the form editors and CI logs link to.
type Error struct {
	File string
	Line int    // 1-based; 0 when the position is unknown
	Rule string // empty when the problem is outside any rule
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Rule != "" {
		fmt.Fprintf(&b, "rule %q: ", e.Rule)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ErrorList is every problem of one load, in file order. Load and Parse
// return it (as an error) when anything is wrong, so one run of
// `sidecar check` shows them all.
type ErrorList []*Error

func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap lets errors.As reach each *Error.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// RuleError is a rule that failed at run time for one event: a nil index, a
// division by zero, a target expression that yields no target, a loop over
// its budget. The rule's outputs for that event are discarded; the other
// rules still run.
type RuleError struct {
	Rule string
	Err  error
}

func (e *RuleError) Error() string { return fmt.Sprintf("rule %q: %v", e.Rule, e.Err) }
func (e *RuleError) Unwrap() error { return e.Err }

// RuleName is the name of the rule that failed. With Kind, it lets a caller
// that does not import this package count failures by rule and kind:
//
//	var re interface{ RuleName() string; Kind() string }
//	if errors.As(err, &re) { failures.WithLabelValues(re.RuleName(), re.Kind()).Inc() }
func (e *RuleError) RuleName() string { return e.Rule }

// Kind classifies the failure as one of the Kind constants.
func (e *RuleError) Kind() string { return errorKind(e.Err) }

// Kinds of run-time failure, as RuleError.Kind reports them: a short, fixed
// set, fit for a metric label.
const (
	KindBudget   = "budget"   // over Options.MaxCost, or over expr's memory budget (Options.MaxMemory)
	KindTimeout  = "timeout"  // over Options.Timeout, or past the deadline of Match's context
	KindCanceled = "canceled" // Match's context was canceled during the evaluation
	KindNil      = "nil"      // nil where a value is needed: a missing field, an id that is nil
	KindType     = "type"     // a value of the wrong type: an id that is a map, 1 + "a"
	KindPanic    = "panic"    // an action panicked
	KindOther    = "other"    // anything else: a division by zero, an index out of range
)

func errorKind(err error) string {
	var (
		limit *limitError
		typ   *typeError
		pan   *panicError
		conv  *runtime.TypeAssertionError
	)
	switch {
	case err == nil:
		return ""
	case errors.As(err, &limit):
		return limit.kind
	case errors.As(err, &pan):
		return KindPanic
	case errors.Is(err, errNilID), errors.Is(err, errNilList):
		return KindNil
	case errors.As(err, &typ), errors.As(err, &conv):
		return KindType
	case errors.Is(err, context.DeadlineExceeded):
		return KindTimeout
	case errors.Is(err, context.Canceled):
		return KindCanceled
	}
	return exprKind(exprMessage(err))
}

// exprKind classifies a run-time failure of expr's VM by its message: expr
// reports them as plain strings (panics it recovers), with no error types
// to test for. The messages are those of expr v1.17's vm and vm/runtime.
func exprKind(msg string) string {
	switch {
	case msg == "memory budget exceeded":
		return KindBudget
	case strings.Contains(msg, "<nil>"), strings.Contains(msg, "cannot call nil"):
		return KindNil
	case strings.HasPrefix(msg, "invalid operation"), strings.HasPrefix(msg, "invalid argument"),
		strings.HasPrefix(msg, "cannot fetch"), strings.HasPrefix(msg, "cannot get"),
		strings.HasPrefix(msg, "cannot use"), strings.HasPrefix(msg, `operator "in" not defined`):
		return KindType
	}
	return KindOther
}

// limitError is an evaluation stopped by a limit: the cost budget, the
// timeout, or the caller's context.
type limitError struct {
	kind string
	msg  string
	err  error // the context's error, when it is the cause
}

func (e *limitError) Error() string { return e.msg }
func (e *limitError) Unwrap() error { return e.err }

// typeError is a value of the wrong type met at run time, such as an id
// that is a list.
type typeError struct{ msg string }

func (e *typeError) Error() string { return e.msg }

func typeErrorf(format string, args ...any) error {
	return &typeError{msg: fmt.Sprintf(format, args...)}
}

// panicError is a panic recovered from an action.
type panicError struct{ v any }

func (e *panicError) Error() string { return fmt.Sprintf("panic: %v", e.v) }

// evalError is a failed evaluation of one expression. Its message is built
// only when printed, so a rule failing on every event costs no formatting.
type evalError struct {
	e      *Expr
	err    error
	memory uint // expr's memory budget, to say which limit "memory budget exceeded" is
}

func (e *evalError) Error() string {
	msg := exprMessage(e.err)
	if msg == "memory budget exceeded" && e.memory > 0 {
		msg = fmt.Sprintf("memory budget of %d items exceeded (ranges, lists and maps built); raise rules.max_memory or simplify", e.memory)
	}
	return fmt.Sprintf("%s (line %d): %s", e.e.key, e.e.line, msg)
}
func (e *evalError) Unwrap() error { return e.err }

// exprMessage is the one-line message of an expr error, without the source
// snippet expr adds (our messages carry file:line instead).
func exprMessage(err error) string {
	var fe *file.Error
	if errors.As(err, &fe) {
		return strings.TrimSpace(fe.Message)
	}
	return strings.TrimSpace(err.Error())
}

// exprLine is the 1-based line inside the expression source where err
// points, or 1.
func exprLine(err error) int {
	var fe *file.Error
	if errors.As(err, &fe) && fe.Line > 0 {
		return fe.Line
	}
	return 1
}
