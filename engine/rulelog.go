package engine

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ruleLog accounts for rules that fail at run time: a counter per rule and
// kind (sidecar_rule_errors_total{rule,kind}) on every failure, and a log
// line per rule at most once per logInterval, saying how many were left
// unlogged. A rule failing on every client event must not write a line per
// event.
type ruleLog struct {
	log     *slog.Logger
	errors  *prometheus.CounterVec
	limited limitedLog
}

// ruleError is how a rule failure reports itself through Router.Route's
// error: its rule and a kind such as "nil", "type", "budget", "timeout".
// The compiled rules' errors satisfy it; anything else counts as kind
// "other" of rule "".
type ruleError interface {
	error
	RuleName() string
	Kind() string
}

// logInterval is the least time between two log lines of one rule.
const logInterval = 10 * time.Second

// maxRuleLabels bounds the rule label values of the counter; rule names
// come from the rules file, which a reload can change.
const maxRuleLabels = 1000

// failures accounts for every rule failure joined in err and returns
// them, one per rule.
func (l *ruleLog) failures(ev *Event, err error) []ruleFailure {
	var out []ruleFailure
	var walk func(error)
	walk = func(err error) {
		if u, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range u.Unwrap() {
				walk(e)
			}
			return
		}
		name, kind := "", "other"
		var re ruleError
		if errors.As(err, &re) {
			name, kind = re.RuleName(), re.Kind()
		}
		f := l.failed(ev, name, kind, err)
		for i := range out {
			if out[i].Rule == name {
				return // one per rule: the first says why
			}
		}
		out = append(out, f)
	}
	walk(err)
	return out
}

// failed accounts for one rule failure and returns it.
func (l *ruleLog) failed(ev *Event, rule, kind string, err error) ruleFailure {
	if l.limited.labels(rule) {
		l.errors.WithLabelValues(rule, kind).Inc()
	} else {
		l.errors.WithLabelValues("other", kind).Inc()
	}
	l.limited.log("rule:"+rule, func(suppressed int) {
		l.log.Warn("rule failed at run time; skipped for this event", "rule", rule, "kind", kind,
			"event", ev.Type, "id", ev.ID, "err", err, "suppressed_since_last", suppressed)
	})
	return ruleFailure{Rule: rule, Kind: kind, Message: err.Error()}
}

// limitedLog lets a key write at most one line per logInterval.
type limitedLog struct {
	mu   sync.Mutex
	keys map[string]*logState // guarded by mu
	seen map[string]bool      // guarded by mu: rule label values in use
}

type logState struct {
	last       time.Time
	suppressed int
}

// log calls write, with the count of lines suppressed since the last, if
// key has not written for logInterval; otherwise it counts one more.
func (l *limitedLog) log(key string, write func(suppressed int)) {
	now := time.Now()
	l.mu.Lock()
	if l.keys == nil || len(l.keys) > 4*maxRuleLabels {
		l.keys = make(map[string]*logState)
	}
	st := l.keys[key]
	if st == nil {
		st = &logState{}
		l.keys[key] = st
	}
	if !st.last.IsZero() && now.Sub(st.last) < logInterval {
		st.suppressed++
		l.mu.Unlock()
		return
	}
	n := st.suppressed
	st.last, st.suppressed = now, 0
	l.mu.Unlock()
	write(n)
}

// labels reports whether rule may be a label value of its own.
func (l *limitedLog) labels(rule string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = make(map[string]bool)
	}
	if l.seen[rule] {
		return true
	}
	if len(l.seen) >= maxRuleLabels {
		return false
	}
	l.seen[rule] = true
	return true
}
