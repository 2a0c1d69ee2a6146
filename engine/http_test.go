package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sidecar/sidecar/engine/forward"
)

// rawRequest sends a request and returns the status, the headers and the
// body as it came, for tests about the shape of answers.
func (n *node) rawRequest(method, path, authz string, body []byte) (int, http.Header, []byte) {
	n.t.Helper()
	req, err := http.NewRequest(method, "http://"+n.addr+path, bytes.NewReader(body))
	if err != nil {
		n.t.Fatal(err)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// Every error answer of every endpoint is JSON {"error", "message"}: the
// mux's own 404 and 405 too, and a 405 says in Allow what the path takes.
func TestEveryErrorAnswerIsJSON(t *testing.T) {
	n := startNode(t)
	key := "Bearer " + testAPIKey
	user := "Bearer " + userToken(t, "u1")
	cases := []struct {
		name         string
		method, path string
		authz        string
		body         string
		status       int
		allow        string
	}{
		{"unknown path", "GET", "/nope", "", "", 404, ""},
		{"root", "GET", "/", "", "", 404, ""},
		{"unknown api path", "POST", "/api/nope", key, "{}", 404, ""},
		{"GET webhooks", "GET", "/webhooks", "", "", 405, "POST"},
		{"POST healthz", "POST", "/healthz", "", "", 405, "GET, HEAD"},
		{"DELETE stats", "DELETE", "/api/socket-test/stats", key, "", 405, "GET, HEAD"},
		{"GET broadcast", "GET", "/api/socket-test/broadcast", key, "", 405, "POST"},
		{"PUT send", "PUT", "/api/socket-test/send/u1", key, "{}", 405, "POST"},
		{"POST example page", "POST", "/socket-example.html", "", "", 405, "GET, HEAD"},
		{"api without credentials", "GET", "/api/socket-test/stats", "", "", 401, ""},
		{"api with a user token", "GET", "/api/socket-test/stats", user, "", 403, ""},
		{"api with a bad token", "GET", "/api/socket-test/stats", "Bearer x.y.z", "", 401, ""},
		{"broadcast not an object", "POST", "/api/socket-test/broadcast", key, "[1]", 400, ""},
		{"broadcast null", "POST", "/api/socket-test/broadcast", key, "null", 400, ""},
		{"events not JSON", "POST", "/api/events", key, "{", 400, ""},
		{"events no target", "POST", "/api/events", key, `{"event":"x"}`, 400, ""},
		{"dry-run no type", "POST", "/api/rules/dry-run", key, `{}`, 400, ""},
		{"webhook unsigned", "POST", "/webhooks", "", `{"type":"x"}`, 400, ""},
		{"ws not a handshake", "GET", "/ws", "", "", 400, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, h, body := n.rawRequest(tc.method, tc.path, tc.authz, []byte(tc.body))
			if status != tc.status {
				t.Fatalf("%s %s = %d %s, want %d", tc.method, tc.path, status, body, tc.status)
			}
			if ct := h.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			var m map[string]any
			if err := json.Unmarshal(body, &m); err != nil {
				t.Fatalf("body %q is not JSON: %v", body, err)
			}
			if code, _ := m["error"].(string); code == "" {
				t.Errorf("body %s has no error code", body)
			}
			if msg, _ := m["message"].(string); msg == "" {
				t.Errorf("body %s has no message", body)
			}
			if got := h.Get("Allow"); got != tc.allow {
				t.Errorf("Allow = %q, want %q", got, tc.allow)
			}
		})
	}
}

// A webhook body of the wrong shape gets a message that says what was
// expected and where, in JSON's words, never Go's.
func TestWebhookShapeMessagesAreForPeople(t *testing.T) {
	n := startNode(t)
	goWords := regexp.MustCompile(`Go |engine\.|webhookBody|unmarshal|struct`)
	cases := []struct {
		name, body string
		want       string
	}{
		{"array", `[{"type":"booking.created"}]`, `the body is an array; want a JSON object {"type": "booking.created"`},
		{"type is a number", `{"type": 42, "data": {}}`, `"type" is a number; want a string`},
		{"type is an object", `{"type": {"name": "x"}}`, `"type" is an object; want a string`},
		{"timestamp is a number", `{"type": "x", "timestamp": 1700000000}`, `"timestamp" is a number; want a string`},
		{"a string", `"booking.created"`, `the body is a string; want a JSON object`},
		{"no type", `{"data": {}}`, `the body has no "type"; want a JSON object`},
		{"empty", ``, `the body is empty; want a JSON object`},
		{"not JSON", `{"type": booking}`, `the body is not valid JSON: at byte 10, invalid character 'b'`},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, resp := n.postWebhook("msg_shape_"+strconv.Itoa(i), time.Now(), []byte(tc.body), nil)
			msg, _ := resp["message"].(string)
			if status != http.StatusBadRequest || resp["error"] != "bad_request" || !strings.Contains(msg, tc.want) {
				t.Fatalf("webhook %s = %d %v, want 400 with a message containing %q", tc.body, status, resp, tc.want)
			}
			if goWords.MatchString(msg) {
				t.Errorf("message %q speaks of Go internals", msg)
			}
		})
	}
	// The same words for the API's bodies.
	status, resp := n.api("POST", "/api/events", map[string]any{"event": "x", "to": map[string]any{"rooms": "r1"}})
	if msg, _ := resp["message"].(string); status != 400 || msg != `"to.rooms" is a string; want an array of strings` {
		t.Errorf("events with rooms a string = %d %v", status, resp)
	}
	status, resp = n.api("POST", "/api/events", []any{map[string]any{"event": "x", "to": map[string]any{"all": true}}, map[string]any{"event": 7}})
	if msg, _ := resp["message"].(string); status != 400 || msg != `event 1: "event" is a number; want a string` {
		t.Errorf("events batch with a number for a name = %d %v", status, resp)
	}
	status, resp = n.api("POST", "/api/events", []any{1})
	if msg, _ := resp["message"].(string); status != 400 || goWords.MatchString(msg) || !strings.HasPrefix(msg, `event 0 is a number; want an object {"event"`) {
		t.Errorf("events batch of a number = %d %v", status, resp)
	}
}

// fakeOutbox counts nothing and delivers nothing; it gives stats a
// forward section.
type fakeOutbox struct{}

func (fakeOutbox) Enqueue(context.Context, forward.Item) error { return nil }
func (fakeOutbox) Run(ctx context.Context) error               { <-ctx.Done(); return nil }
func (fakeOutbox) Stats() forward.Stats                        { return forward.Stats{Pending: 1, Delivered: 2} }

// snakeCase is the one naming style of the API's JSON keys.
var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// checkKeys walks a decoded JSON answer and reports every key that is not
// snake_case. Values under "data" (a payload the caller or a rule chose)
// and "events" (counts keyed by event name) are not the API's own keys.
func checkKeys(t *testing.T, where string, v any, path string) {
	t.Helper()
	switch x := v.(type) {
	case map[string]any:
		for k, sub := range x {
			if !snakeCase.MatchString(k) {
				t.Errorf("%s: key %q at %s is not snake_case", where, k, path)
			}
			if k == "data" || (k == "events" && path == "") {
				continue
			}
			checkKeys(t, where, sub, path+"."+k)
		}
	case []any:
		for _, sub := range x {
			checkKeys(t, where, sub, path+"[]")
		}
	}
}

// Every JSON answer of the API names its keys in one style, snake_case:
// stats (also the outbox's counts), events, dry-run, webhooks (accepted,
// with rule errors, and duplicate), health, readiness, and errors.
func TestJSONAnswersAreSnakeCase(t *testing.T) {
	n := startNode(t, func(c *Config) { c.Forwarder = fakeOutbox{} })
	n.router.route = func(ev *Event) []Command {
		return []Command{{Op: OpEmit, Rule: "r", Event: "newNotification", To: Target{Users: []string{"u1"}},
			Data: map[string]any{"bookingId": "b1"}}}
	}
	n.router.fail = func(ev *Event) error {
		return testRuleError{rule: "bad", kind: "nil", msg: "user(): id is nil"}
	}
	c := n.dial("u1")
	waitFor(t, 2*time.Second, "connection", func() bool { return n.e.Stats().Connections == 1 })
	key := "Bearer " + testAPIKey
	answers := map[string][]byte{}
	add := func(name string, status int, body []byte) {
		t.Helper()
		if status >= 500 {
			t.Fatalf("%s = %d %s", name, status, body)
		}
		answers[name] = body
	}
	call := func(name, method, path, authz, body string) {
		t.Helper()
		status, _, b := n.rawRequest(method, path, authz, []byte(body))
		add(name, status, b)
	}
	call("broadcast", "POST", "/api/socket-test/broadcast", key, `{"title":"t","camelCase":1}`)
	call("send", "POST", "/api/socket-test/send/u1", key, `{"title":"t"}`)
	call("events", "POST", "/api/events", key, `{"event":"x","to":{"users":["u1"]},"data":{"someKey":1}}`)
	call("events batch", "POST", "/api/events", key, `[{"event":"x","to":{"all":true}}]`)
	call("dry-run", "POST", "/api/rules/dry-run", key, `{"type":"booking.created","data":{"providerId":"p1"}}`)
	call("events error", "POST", "/api/events", key, `{"event":""}`)
	call("not found", "GET", "/nope", "", "")
	call("method not allowed", "GET", "/webhooks", "", "")
	call("healthz", "GET", "/healthz", "", "")
	call("readyz", "GET", "/readyz", "", "")
	hook := []byte(`{"type":"booking.created","data":{"providerId":"p1"}}`)
	status, resp := n.postWebhook("msg_snake", time.Now(), hook, nil)
	b, _ := json.Marshal(resp)
	add("webhook", status, b)
	status, resp = n.postWebhook("msg_snake", time.Now(), hook, nil)
	b, _ = json.Marshal(resp)
	add("webhook duplicate", status, b)
	call("stats", "GET", "/api/socket-test/stats", key, "")

	for name, body := range answers {
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			t.Errorf("%s: %q is not JSON: %v", name, body, err)
			continue
		}
		checkKeys(t, name, v, "")
	}
	var stats struct {
		Forward map[string]int64 `json:"forward"`
	}
	json.Unmarshal(answers["stats"], &stats)
	if stats.Forward["pending"] != 1 || stats.Forward["delivered"] != 2 {
		t.Errorf("stats forward = %s, want the outbox's counts under snake_case keys", answers["stats"])
	}
	var webhook struct {
		Errors []map[string]any `json:"errors"`
	}
	json.Unmarshal(answers["webhook"], &webhook)
	if len(webhook.Errors) != 1 {
		t.Errorf("webhook answer %s: want one rule error, so that its keys were checked", answers["webhook"])
	}
	c.mustEvent("newNotification")
}

// The page asks for no icon (it has an inline one); a browser that asks
// anyway gets an empty answer, not a 404 in its console.
func TestFaviconIsNotA404(t *testing.T) {
	n := startNode(t)
	status, _, _ := n.rawRequest("GET", "/favicon.ico", "", nil)
	if status != http.StatusNoContent {
		t.Fatalf("GET /favicon.ico = %d, want 204", status)
	}
}
