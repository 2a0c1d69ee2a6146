package engine

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sidecar/sidecar/engine/forward"
	"github.com/sidecar/sidecar/engine/store"
)

// An emit whose data cannot be encoded (+Inf has no JSON form) is a rule
// failure, counted and reported, not a silent loss behind a 202 that names
// the rule as matched.
func TestEmitThatCannotBeEncodedIsARuleError(t *testing.T) {
	n := startNode(t)
	n.router.route = func(ev *Event) []Command {
		if ev.Type != "calc" {
			return nil
		}
		return []Command{
			{Op: OpEmit, Rule: "bad-division", Event: "x", To: Target{All: true}, Data: map[string]any{"r": math.Inf(1)}},
			{Op: OpEmit, Rule: "fine", Event: "y", To: Target{Users: []string{"u1"}}, Data: map[string]any{"ok": true}},
		}
	}
	c := n.dial("u1")
	waitFor(t, 2*time.Second, "connection", func() bool { return n.e.Stats().Connections == 1 })
	status, resp := n.postWebhook("msg_inf", time.Now(), []byte(`{"type":"calc","data":{"a":1,"b":0}}`), nil)
	if status != http.StatusAccepted {
		t.Fatalf("webhook = %d %v", status, resp)
	}
	errs, _ := resp["errors"].([]any)
	if fmt.Sprint(resp["matched"]) != "[fine]" || len(errs) != 1 {
		t.Fatalf("answer = %v, want matched [fine] and one error", resp)
	}
	if e := errs[0].(map[string]any); e["rule"] != "bad-division" || e["kind"] != "encode" ||
		!strings.Contains(e["message"].(string), "cannot be sent as JSON") {
		t.Fatalf("error = %v, want bad-division, encode, and why", e)
	}
	c.mustEvent("y")
	if got := scrape(t, n, `sidecar_rule_errors_total{kind="encode",rule="bad-division"}`); got != "1" {
		t.Fatalf("rule error counter = %q, want 1", got)
	}
}

// A rule that fails on every client event is counted every time but logged
// at most once per interval, not once per event.
func TestRuleErrorsAreCountedAndLoggedRateLimited(t *testing.T) {
	var logs lockedBuffer
	n := startNode(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
		c.Limits.ClientEventsPerSecond = 1000
	})
	n.router.fail = func(ev *Event) error {
		if ev.Type == "client.typing" {
			return testRuleError{rule: "typing", kind: "nil", msg: "user(): id is nil"}
		}
		return nil
	}
	c := n.dial("typist")
	for i := 0; i < 100; i++ {
		c.send(map[string]any{"event": "typing", "data": map[string]any{}, "ack": i})
		if m, err := c.event(5 * time.Second); err != nil || m["ok"] != true {
			t.Fatalf("ack %d = %v %v", i, m, err)
		}
	}
	if got := scrape(t, n, `sidecar_rule_errors_total{kind="nil",rule="typing"}`); got != "100" {
		t.Fatalf("rule error counter = %q, want 100", got)
	}
	if lines := strings.Count(logs.String(), "id is nil"); lines < 1 || lines > 2 {
		t.Fatalf("%d log lines for 100 failures, want 1 or 2:\n%s", lines, logs.String())
	}
}

// scrape returns the value of one sample line of /metrics, or "".
func scrape(t *testing.T, n *node, series string) string {
	t.Helper()
	resp, err := http.Get("http://" + n.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// testRuleError is a rule failure as the engine sees it through Router.
type testRuleError struct{ rule, kind, msg string }

func (e testRuleError) Error() string    { return fmt.Sprintf("rule %q: %s", e.rule, e.msg) }
func (e testRuleError) RuleName() string { return e.rule }
func (e testRuleError) Kind() string     { return e.kind }

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A webhook whose rule fails at run time (its payload lacks what the rule
// needs) is accepted, and the answer says which rule failed and why, so
// the app's developer sees it without the sidecar's logs.
func TestWebhookAnswerListsRuleErrors(t *testing.T) {
	n := startNode(t)
	n.router.fail = func(ev *Event) error {
		if ev.Type == "booking.created" {
			return testRuleError{rule: "booking-created", kind: "nil", msg: "emit.to (line 29): user(): id is nil"}
		}
		return nil
	}
	status, resp := n.postWebhook("msg_nil", time.Now(), []byte(`{"type":"booking.created","data":{}}`), nil)
	errs, _ := resp["errors"].([]any)
	if status != http.StatusAccepted || len(errs) != 1 {
		t.Fatalf("webhook = %d %v, want 202 with one error", status, resp)
	}
	if e := errs[0].(map[string]any); e["rule"] != "booking-created" || e["kind"] != "nil" || !strings.Contains(e["message"].(string), "id is nil") {
		t.Fatalf("error = %v", e)
	}
}

// A full outbox is a clear refusal, never unbounded memory: a client event
// whose forward does not fit the user's share is acked `overloaded`, and a
// webhook whose forward does not fit the outbox is answered 503 with
// Retry-After (its id forgotten, so the retry works once there is room).
func TestFullOutboxIsRefusedClearly(t *testing.T) {
	st, err := store.Open(":memory:", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fw, err := forward.New(forward.Config{Store: st, MaxPendingBytes: 512 << 10, MaxPendingPerUser: 200 << 10})
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, func(c *Config) {
		c.Forwarder = fw
		c.Limits.ClientEventsPerSecond = 0
	})
	n.router.route = func(ev *Event) []Command {
		switch ev.Type {
		case "client.bookingUpdate", "booking.created":
			return []Command{{Op: OpForward, Rule: "to-app", URL: "http://127.0.0.1:1/unreachable"}}
		}
		return nil
	}
	c := n.dial("flooder")
	pad := strings.Repeat("x", 60<<10)
	var ok, overloaded int
	for i := 0; i < 10; i++ {
		c.send(map[string]any{"event": "bookingUpdate", "data": map[string]any{"pad": pad}, "ack": i})
		m, err := c.event(5 * time.Second)
		if err != nil {
			t.Fatalf("ack %d: %v", i, err)
		}
		switch e, _ := m["error"].(map[string]any); {
		case m["ok"] == true:
			ok++
		case e["code"] == "overloaded":
			overloaded++
		default:
			t.Fatalf("ack %d = %v", i, m)
		}
	}
	if ok == 0 || ok > 4 || overloaded != 10-ok {
		t.Fatalf("%d accepted and %d refused overloaded; want the user's 200 KiB share (3 of 60 KiB) then refusals", ok, overloaded)
	}
	// Fill the rest of the outbox from webhooks, then one more is refused.
	body := []byte(`{"type":"booking.created","data":{"pad":"` + pad + `"}}`)
	var refused map[string]any
	for i := 0; i < 20 && refused == nil; i++ {
		status, resp := n.postWebhook(fmt.Sprintf("msg_fill_%d", i), time.Now(), body, nil)
		if status == http.StatusServiceUnavailable {
			refused = resp
		} else if status != http.StatusAccepted {
			t.Fatalf("webhook %d = %d %v", i, status, resp)
		}
	}
	if refused == nil || refused["error"] != "overloaded" {
		t.Fatalf("no webhook refused as overloaded with a full outbox: %v", refused)
	}
	if got := fw.Stats().PendingBytes; got > 512<<10 {
		t.Fatalf("outbox holds %d bytes, over its 512 KiB cap", got)
	}
}
