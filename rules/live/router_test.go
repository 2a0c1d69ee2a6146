package live

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/sidecar/sidecar/engine"
	"github.com/sidecar/sidecar/engine/auth"
	"github.com/sidecar/sidecar/rules"
)

func parseRules(t *testing.T, src string, reg *rules.Registry) *rules.Set {
	t.Helper()
	s, err := rules.Parse("t.yaml", []byte(src), rules.Options{Registry: reg})
	if err != nil {
		t.Fatalf("rules.Parse() = %v", err)
	}
	return s
}

func TestRouterWithoutRulesRoutesNothing(t *testing.T) {
	var r Router
	out, err := r.Route(context.Background(), &engine.Event{Type: "x"}, nil)
	if len(out) != 0 || err != nil || r.Set() != nil {
		t.Errorf("zero Router: Route() = %v, %v; Set() = %v", out, err, r.Set())
	}
}

func TestRouterConvertsOutputsToCommands(t *testing.T) {
	var r Router
	r.store(parseRules(t, `rules:
  - name: emit
    on: client.hello
    emit: {event: greeting, to: 'except(users([sender.id, 2]), [2])', data: '{"by": sender.id, "role": sender.role, "src": event.source}'}
  - name: fwd
    on: client.hello
    forward: {url: "http://app.test/x"}
  - name: rooms
    on: client.hello
    join: '["a", "b"]'
    leave: {rooms: '["c"]', user: '"u9"'}
`, nil))
	claims := map[string]any{"sub": "u1", "role": "customer"}
	ev := &engine.Event{ID: "e1", Type: "client.hello", Source: engine.SourceClient, Time: time.Now(),
		Sender: &auth.Identity{UserID: "u1", Claims: claims}, Data: map[string]any{"x": 1}}
	prior := []engine.Command{{Op: engine.OpEmit, Rule: "earlier"}}
	out, err := r.Route(context.Background(), ev, prior)
	if err != nil {
		t.Fatalf("Route() error = %v", err)
	}
	want := []engine.Command{
		{Op: engine.OpEmit, Rule: "earlier"},
		{Op: engine.OpEmit, Rule: "emit", Event: "greeting",
			To:   engine.Target{Users: []string{"u1", "2"}, Except: []string{"2"}},
			Data: map[string]any{"by": "u1", "role": "customer", "src": "client"}},
		{Op: engine.OpForward, Rule: "fwd", URL: "http://app.test/x"},
		{Op: engine.OpJoin, Rule: "rooms", Rooms: []string{"a", "b"}},
		{Op: engine.OpLeave, Rule: "rooms", Rooms: []string{"c"}, User: "u9"},
	}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("Route() =\n%+v\nwant\n%+v", out, want)
	}
	if _, ok := claims["id"]; ok || len(claims) != 2 {
		t.Errorf("Route() changed the identity's claims: %v", claims)
	}
}

func TestRouterSender(t *testing.T) {
	var r Router
	r.store(parseRules(t, `rules:
  - {name: anonymous, on: x, if: 'len(sender) == 0 && sender.id == nil', join: '["anon"]'}
  - {name: id-wins, on: x, if: 'sender.id == "u1" && sender.sub == "s"', join: '["id"]'}
`, nil))
	out, _ := r.Route(context.Background(), &engine.Event{Type: "x", Source: engine.SourceWebhook}, nil)
	if len(out) != 1 || out[0].Rule != "anonymous" {
		t.Errorf("webhook Route() = %+v, want the anonymous rule", out)
	}
	// A claim named id does not override the identity's user id.
	id := &auth.Identity{UserID: "u1", Claims: map[string]any{"id": "forged", "sub": "s"}}
	out, _ = r.Route(context.Background(), &engine.Event{Type: "x", Sender: id}, nil)
	if len(out) != 1 || out[0].Rule != "id-wins" {
		t.Errorf("client Route() = %+v, want the id-wins rule", out)
	}
}

type pluginAction struct{}

func (pluginAction) Do(_ context.Context, _ *rules.Input, out []rules.Output) ([]rules.Output, error) {
	return append(out, rules.Output{Action: "store"}), nil
}

// TestRouterReportsFailures: rule run-time errors and plugin outputs the
// engine cannot apply come back as the error, beside the valid commands.
func TestRouterReportsFailures(t *testing.T) {
	reg := rules.Builtin()
	reg.Register("store", func(*yaml.Node, *rules.Compiler) (rules.Action, error) { return pluginAction{}, nil })
	var r Router
	r.store(parseRules(t, `rules:
  - {name: broken, on: x, emit: {event: e, to: user(data.nope)}}
  - {name: plugin, on: x, store: yes}
  - {name: fine, on: x, join: '["r"]'}
`, reg))
	out, err := r.Route(context.Background(), &engine.Event{Type: "x", Data: map[string]any{}}, nil)
	if len(out) != 1 || out[0].Rule != "fine" {
		t.Errorf("Route() = %+v, want the fine rule's join only", out)
	}
	var re *rules.RuleError
	if !errors.As(err, &re) || re.Rule != "broken" || !strings.Contains(err.Error(), `action "store" has no engine command`) {
		t.Errorf("Route() error = %v", err)
	}
}

// gatherValues returns the values of metric name by label pairs
// (`k="v"`, comma-joined; "" for no labels).
func gatherValues(t *testing.T, g prometheus.Gatherer, name string) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			vals[strings.Join(labels, ",")] = v
		}
	}
	return vals
}

func BenchmarkRoute(b *testing.B) {
	var r Router
	s, err := rules.Load("../../rules.yaml", rules.Options{})
	if err != nil {
		b.Fatal(err)
	}
	r.store(s)
	ev := &engine.Event{Type: "client.typing", Source: engine.SourceClient,
		Sender: &auth.Identity{UserID: "u1", Claims: map[string]any{"sub": "u1", "role": "customer", "exp": 1e9}},
		Data:   map[string]any{"to": "u2", "isTyping": true}}
	out := make([]engine.Command, 0, 4)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		out, err = r.Route(context.Background(), ev, out[:0])
		if err != nil || len(out) != 1 {
			b.Fatalf("Route() = %v, %v", out, err)
		}
	}
}
