package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sidecar/sidecar/engine/auth"
	"github.com/sidecar/sidecar/rules"
)

// Handler is the node's whole HTTP surface (docs/DESIGN.md section 3).
// Every error answer is JSON, also the mux's own 404 and 405.
func (e *Engine) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", notFound(mux))
	mux.HandleFunc("/ws", e.serveWS)
	mux.HandleFunc("/socket.io/", e.serveSocketIO)
	mux.HandleFunc("POST /webhooks", e.serveWebhook)
	mux.HandleFunc("POST /api/socket-test/broadcast", e.api(e.serveTestBroadcast))
	mux.HandleFunc("POST /api/socket-test/send/{userId}", e.api(e.serveTestSend))
	mux.HandleFunc("GET /api/socket-test/stats", e.api(e.serveStats))
	mux.HandleFunc("POST /api/events", e.api(e.serveEvents))
	mux.HandleFunc("POST /api/rules/dry-run", e.api(e.serveDryRun))
	mux.HandleFunc("GET /api/presence", e.api(e.servePresence))
	mux.HandleFunc("GET /api/presence/{userId}", e.api(e.servePresenceUser))
	mux.HandleFunc("GET /socket-example.html", serveExample)
	mux.HandleFunc("GET /favicon.ico", serveFavicon)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", e.serveReady)
	mux.Handle("GET /metrics", promhttp.HandlerFor(e.cfg.Metrics, promhttp.HandlerOpts{}))
	return mux
}

// methods are those a 405 may list in Allow.
var methods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodPatch, http.MethodDelete, http.MethodOptions}

// notFound answers a request no other pattern of mux matched: 405 with
// Allow when the path exists under other methods, else 404; both JSON.
// It is the "/" pattern, so it runs only when nothing else matches, and
// the routes that do match pay nothing for it.
func notFound(mux *http.ServeMux) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, m := range methods {
			if m == r.Method {
				continue
			}
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "/" && pattern != "" {
				allow = append(allow, m)
			}
		}
		if len(allow) == 0 {
			httpError(w, http.StatusNotFound, "not_found",
				fmt.Sprintf("no endpoint %s (the example page is /socket-example.html; README.md lists the endpoints)", r.URL.Path))
			return
		}
		w.Header().Set("Allow", strings.Join(allow, ", "))
		httpError(w, http.StatusMethodNotAllowed, "method_not_allowed",
			fmt.Sprintf("%s %s: this endpoint takes %s", r.Method, r.URL.Path, strings.Join(allow, ", ")))
	}
}

// api admits a request to /api/*: "Authorization: Bearer" with an API key
// from config, or with a JWT whose claims pass api.admin_if. No credential
// is 401; a valid token that is not an admin is 403.
func (e *Engine) api(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := bearer(r.Header.Get("Authorization"))
		if !ok || tok == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sidecar"`)
			httpError(w, http.StatusUnauthorized, "unauthorized", "send Authorization: Bearer <API key or admin JWT>")
			return
		}
		if e.apiKeys.match(tok) {
			h(w, r)
			return
		}
		ident, err := e.cfg.Auth.Authenticate(tok)
		if err != nil {
			httpError(w, http.StatusUnauthorized, "unauthorized", authMessage(err))
			return
		}
		if !e.cfg.AdminIf(ident.Claims) {
			httpError(w, http.StatusForbidden, "forbidden", "this token may not use the API (api.admin_if)")
			return
		}
		h(w, r)
	}
}

// serveTestBroadcast is the seed's POST /api/socket-test/broadcast: the
// body's fields become newNotification's data, sent to everyone.
func (e *Engine) serveTestBroadcast(w http.ResponseWriter, r *http.Request) {
	data, ok := e.readObject(w, r)
	if !ok {
		return
	}
	e.testPublish(w, data, Target{All: true})
}

// serveTestSend is POST /api/socket-test/send/{userId}: the same, to one
// user's connections, all their tabs and devices.
func (e *Engine) serveTestSend(w http.ResponseWriter, r *http.Request) {
	user := r.PathValue("userId")
	data, ok := e.readObject(w, r)
	if !ok {
		return
	}
	e.testPublish(w, data, Target{Users: []string{user}})
}

func (e *Engine) testPublish(w http.ResponseWriter, data map[string]any, to Target) {
	if _, ok := data["timestamp"]; !ok {
		data["timestamp"] = time.Now().UTC().Format(time.RFC3339Nano)
	}
	id, n, err := e.Publish("newNotification", data, to, true)
	if err != nil {
		publishError(w, err, "")
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"id": id, "event": "newNotification", "delivered": n})
}

// publishError answers a failed publish: 503 with Retry-After when the
// node has stopped publishing, else 400 (the data has no JSON form).
func publishError(w http.ResponseWriter, err error, prefix string) {
	if errors.Is(err, ErrStopped) {
		w.Header().Set("Retry-After", retryAfterSec)
		httpError(w, http.StatusServiceUnavailable, "shutting_down", prefix+"the server is shutting down; retry")
		return
	}
	httpError(w, http.StatusBadRequest, "bad_request", prefix+err.Error())
}

func (e *Engine) serveStats(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, e.Stats())
}

// publishRequest is one event of POST /api/events.
type publishRequest struct {
	Event string `json:"event"`
	To    struct {
		Users  []any    `json:"users"`
		Rooms  []string `json:"rooms"`
		All    bool     `json:"all"`
		Except []any    `json:"except"`
	} `json:"to"`
	Data json.RawMessage `json:"data"`
}

// eventShape is the body of POST /api/events, for 400 messages.
const eventShape = `an object {"event": "name", "to": {"users": [...], "rooms": [...], "all": true, "except": [...]}, "data": {...}}`

// serveEvents publishes one event, or a batch (a JSON array), directly,
// without rules. The whole batch is checked before anything is sent.
func (e *Engine) serveEvents(w http.ResponseWriter, r *http.Request) {
	body, ok := e.readBody(w, r, e.cfg.Webhook.MaxBodyBytes)
	if !ok {
		return
	}
	var batch []publishRequest
	single := len(body) > 0 && firstNonSpace(body) != '['
	if single {
		batch = make([]publishRequest, 1)
		if err := json.Unmarshal(body, &batch[0]); err != nil {
			httpError(w, http.StatusBadRequest, "bad_request", jsonProblem(err, body, "the body", eventShape+" or an array of them"))
			return
		}
	} else {
		// Item by item, so that a message can name the one at fault.
		var items []json.RawMessage
		if err := json.Unmarshal(body, &items); err != nil {
			httpError(w, http.StatusBadRequest, "bad_request", jsonProblem(err, body, "the body", "an array of events, each "+eventShape))
			return
		}
		batch = make([]publishRequest, len(items))
		for i, it := range items {
			if err := json.Unmarshal(it, &batch[i]); err != nil {
				httpError(w, http.StatusBadRequest, "bad_request", jsonProblem(err, it, fmt.Sprintf("event %d", i), eventShape))
				return
			}
		}
	}
	targets := make([]Target, len(batch))
	for i, p := range batch {
		if p.Event == "" {
			httpError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("event %d: \"event\" is required", i))
			return
		}
		users, err := idList(p.To.Users)
		except, err2 := idList(p.To.Except)
		if err = errors.Join(err, err2); err != nil {
			httpError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("event %d: \"to\": %v", i, err))
			return
		}
		t := Target{All: p.To.All, Rooms: p.To.Rooms, Users: users, Except: except}
		if t.Empty() {
			httpError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("event %d: \"to\" names no users, rooms or all", i))
			return
		}
		targets[i] = t
	}
	type result struct {
		ID        string `json:"id"`
		Delivered int    `json:"delivered"`
	}
	results := make([]result, len(batch))
	for i, p := range batch {
		data := p.Data
		if len(data) == 0 {
			data = json.RawMessage("null")
		}
		id, n, err := e.Publish(p.Event, data, targets[i], true)
		if err != nil {
			publishError(w, err, fmt.Sprintf("event %d: ", i))
			return
		}
		results[i] = result{id, n}
	}
	if single {
		writeJSON(w, http.StatusAccepted, results[0])
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"results": results})
}

// dryRunRequest is an event to try against the rules.
type dryRunRequest struct {
	Type   string         `json:"type"`
	Source string         `json:"source"`
	Sender map[string]any `json:"sender"`
	Data   any            `json:"data"`
}

// serveDryRun shows which rules match an event and what they would do,
// without doing any of it.
func (e *Engine) serveDryRun(w http.ResponseWriter, r *http.Request) {
	body, ok := e.readBody(w, r, e.cfg.Webhook.MaxBodyBytes)
	if !ok {
		return
	}
	const shape = `{"type": "booking.created", "data": {...}, "sender": {...}, "source": "webhook"} with a string "type"`
	var req dryRunRequest
	if err := json.Unmarshal(body, &req); err != nil {
		httpError(w, http.StatusBadRequest, "bad_request", jsonProblem(err, body, "the body", shape))
		return
	}
	if req.Type == "" {
		httpError(w, http.StatusBadRequest, "bad_request", `the body has no "type"; want `+shape)
		return
	}
	ev := &Event{ID: e.newEventID(), Type: req.Type, Source: req.Source, Time: time.Now(), Data: req.Data}
	if ev.Source == "" {
		ev.Source = SourceWebhook
	}
	if req.Sender != nil {
		id, _ := rules.ID(req.Sender["id"]) // no id: a sender without one
		ev.Sender = &auth.Identity{UserID: id, Claims: req.Sender}
	}
	cmds, err := e.router.Route(r.Context(), ev, nil)
	out := map[string]any{"matched": ruleNames(cmds), "commands": commandsJSON(cmds)}
	if err != nil {
		out["errors"] = err.Error()
	}
	writeJSON(w, http.StatusOK, out)
}

// ruleNames lists the rules that produced cmds, each once.
func ruleNames(cmds []Command) []string {
	names := []string{}
	for i := range cmds {
		if !containsString(names, cmds[i].Rule) {
			names = append(names, cmds[i].Rule)
		}
	}
	return names
}

func commandsJSON(cmds []Command) []map[string]any {
	out := make([]map[string]any, 0, len(cmds))
	for _, c := range cmds {
		m := map[string]any{"op": c.Op.String(), "rule": c.Rule}
		switch c.Op {
		case OpEmit:
			m["event"], m["data"] = c.Event, c.Data
			m["to"] = map[string]any{"all": c.To.All, "users": c.To.Users, "rooms": c.To.Rooms, "except": c.To.Except}
		case OpForward:
			m["url"], m["data"] = c.URL, c.Data
		case OpJoin, OpLeave:
			m["rooms"], m["user"] = c.Rooms, c.User
		}
		out = append(out, m)
	}
	return out
}

// serveReady answers 200 when the node can serve (store writable, and every
// configured check ready), 503 otherwise; details either way.
func (e *Engine) serveReady(w http.ResponseWriter, r *http.Request) {
	type check struct {
		Ready  bool   `json:"ready"`
		Detail string `json:"detail,omitempty"`
	}
	checks := map[string]check{}
	ready := !e.stopping.Load()
	if err := e.cfg.Store.Healthy(); err != nil {
		checks["store"] = check{false, err.Error()}
		ready = false
	} else {
		checks["store"] = check{Ready: true}
	}
	degraded := false
	for name, f := range e.cfg.Checks {
		ok, detail := f()
		checks[name] = check{ok, detail}
		ready = ready && ok
		degraded = degraded || strings.HasPrefix(detail, "degraded")
	}
	status, state := http.StatusOK, "ok"
	switch {
	case !ready:
		status, state = http.StatusServiceUnavailable, "unavailable"
	case degraded:
		state = "degraded" // serving, with less than it should (a node alone, without Redis)
	}
	writeJSON(w, status, map[string]any{"ready": ready, "status": state, "checks": checks})
}

// readBody reads at most max bytes; more is 413.
func (e *Engine) readBody(w http.ResponseWriter, r *http.Request, max int64) ([]byte, bool) {
	if r.ContentLength > max {
		httpError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body over %d bytes", max))
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body over %d bytes", max))
		} else {
			httpError(w, http.StatusBadRequest, "bad_request", "reading body: "+err.Error())
		}
		return nil, false
	}
	return body, true
}

// readObject reads a JSON object body.
func (e *Engine) readObject(w http.ResponseWriter, r *http.Request) (map[string]any, bool) {
	body, ok := e.readBody(w, r, e.cfg.Webhook.MaxBodyBytes)
	if !ok {
		return nil, false
	}
	const shape = `a JSON object, e.g. {"title": "Hello", "message": "...", "type": "info"}`
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		httpError(w, http.StatusBadRequest, "bad_request", jsonProblem(err, body, "the body", shape))
		return nil, false
	}
	if m == nil {
		httpError(w, http.StatusBadRequest, "bad_request", "the body is null; want "+shape)
		return nil, false
	}
	return m, true
}

// idList converts the ids of an API request as the rules compare them: 42
// and "42" are one user.
func idList(ids []any) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	out := make([]string, 0, len(ids))
	for i, v := range ids {
		s, err := rules.ID(v)
		if err != nil {
			return nil, fmt.Errorf("id %d: %w", i, err)
		}
		out = append(out, s)
	}
	return out, nil
}

func firstNonSpace(b []byte) byte {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return c
	}
	return 0
}

// jsonProblem says, for people, why raw did not decode: where (a field,
// or a byte offset) and what was expected there, in JSON's words (an
// object, a string), never Go's. what names raw in the message ("the
// body", "event 2"); shape is what raw should have been.
func jsonProblem(err error, raw []byte, what, shape string) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case len(bytes.TrimSpace(raw)) == 0:
		return what + " is empty; want " + shape
	case errors.As(err, &syntax):
		return fmt.Sprintf("%s is not valid JSON: at byte %d, %s", what, syntax.Offset, strings.TrimPrefix(syntax.Error(), "json: "))
	case errors.As(err, &typ) && typ.Field == "":
		return fmt.Sprintf("%s is %s; want %s", what, jsonKind(typ.Value), shape)
	case errors.As(err, &typ) && what == "the body":
		return fmt.Sprintf("%q is %s; want %s", typ.Field, jsonKind(typ.Value), goKind(typ.Type))
	case errors.As(err, &typ):
		return fmt.Sprintf("%s: %q is %s; want %s", what, typ.Field, jsonKind(typ.Value), goKind(typ.Type))
	}
	return what + " does not decode: want " + shape
}

// jsonKind names a JSON value kind as encoding/json reports it ("array",
// "number", ...) with its article.
func jsonKind(v string) string {
	switch v {
	case "array", "object":
		return "an " + v
	case "number", "string":
		return "a " + v
	case "bool":
		return "true or false"
	}
	if strings.HasPrefix(v, "number ") {
		return "a number (" + strings.TrimPrefix(v, "number ") + ")"
	}
	return v
}

// goKind names, in JSON's words, what a Go type decodes from: "a
// string", "an array of strings".
func goKind(t reflect.Type) string {
	n := jsonNoun(t)
	if strings.IndexByte("aeio", n[0]) >= 0 {
		return "an " + n
	}
	return "a " + n
}

func jsonNoun(t reflect.Type) string {
	if t == nil {
		return "value"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean (true or false)"
	case reflect.Slice, reflect.Array:
		if e := jsonNoun(t.Elem()); e != "value" {
			return "array of " + e + "s"
		}
		return "array"
	case reflect.Map, reflect.Struct:
		return "object"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Pointer:
		return jsonNoun(t.Elem())
	}
	return "value"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// httpError answers {"error": code, "message": message}.
func httpError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, map[string]string{"error": code, "message": message})
}
