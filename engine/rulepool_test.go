package engine

import (
	"slices"
	"strings"
	"testing"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"
)

// Once the queue reaches its cap, every new read turn parks until it is
// back at half: turns parked first are not starved by newcomers while the
// queue hovers in between.
func TestRulePoolParksUntilHalf(t *testing.T) {
	e := bareEngine(Limits{})
	p := &e.pool
	a, b := &conn{}, &conn{}
	p.submit(ruleTask{c: a, bytes: maxQueuedBytes})
	if !p.park(a, 1) {
		t.Fatal("a turn did not park with the queue at its cap")
	}
	t1, _ := p.take()
	p.finished(e, t1.bytes-maxQueuedBytes*3/4) // down to 3/4: still over half
	p.submit(ruleTask{c: b, bytes: 0})
	if !p.park(b, 2) {
		t.Fatal("a new turn did not park while the queue was between half and its cap")
	}
	if len(p.parked) != 2 {
		t.Fatalf("%d parked, want 2", len(p.parked))
	}
}

func TestClosesCountedByKnownCodesOnly(t *testing.T) {
	e := bareEngine(Limits{})
	for _, code := range []int{1000, 4008, 3333, 4999, 0} {
		e.metrics.closed(ws.StatusCode(code))
	}
	if got := counterVecLabels(t, e.metrics.closes); got != "0,1000,4008,other" {
		t.Fatalf("close code labels %s, want 0,1000,4008,other", got)
	}
}

// counterVecLabels lists the label values of a one-label counter vector,
// sorted and comma-joined.
func counterVecLabels(t *testing.T, v *prometheus.CounterVec) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(v)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var labels []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetValue())
			}
		}
	}
	slices.Sort(labels)
	return strings.Join(labels, ",")
}
