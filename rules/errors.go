package rules

import (
	"errors"
	"fmt"
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
// division by zero, a target expression that yields no target. The rule's
// outputs for that event are discarded; the other rules still run.
type RuleError struct {
	Rule string
	Err  error
}

func (e *RuleError) Error() string { return fmt.Sprintf("rule %q: %v", e.Rule, e.Err) }
func (e *RuleError) Unwrap() error { return e.Err }

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
