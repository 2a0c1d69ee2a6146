package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/sidecar/sidecar/engine/auth"
	"github.com/sidecar/sidecar/engine/forward"
)

// clientFrame is a client-to-server message: {"event", "data", "ack"}.
type clientFrame struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
	Ack   *int64          `json:"ack"`
}

// clientMessage handles one complete text message from c, on its reader.
func (e *Engine) clientMessage(r *reader, c *conn, p []byte) {
	if lim := e.limits.ClientEventsPerSecond; lim > 0 {
		if c.rateWin != r.now {
			c.rateWin, c.rateN = r.now, 0
		}
		c.rateN++
		if int(c.rateN) > lim {
			e.metrics.rateLimited.Inc()
			r.stopWith(CloseRateLimited, "rate limited")
			return
		}
	}
	var f clientFrame
	if err := json.Unmarshal(p, &f); err != nil {
		r.stopWith(ws.StatusInvalidFramePayloadData, "invalid JSON")
		return
	}
	e.metrics.clientEvents.Inc()
	var data any
	if len(f.Data) > 0 {
		if err := json.Unmarshal(f.Data, &data); err != nil {
			r.stopWith(ws.StatusInvalidFramePayloadData, "invalid JSON")
			return
		}
	}
	code, msg := e.clientEvent(c, f.Event, data)
	if f.Ack != nil {
		e.sendTo(c, ackFrame(*f.Ack, code, msg))
	}
}

// Error codes in acks.
const (
	ackBadRequest   = "bad_request"
	ackForbidden    = "forbidden"
	ackUnauthorized = "unauthorized"
	ackInternal     = "internal"
)

// clientEvent runs one client event and returns the ack's error code and
// message ("" when it went through). The engine handles refresh and
// register itself; every other event goes to the rules as client.<name>.
func (e *Engine) clientEvent(c *conn, name string, data any) (code, msg string) {
	switch name {
	case "":
		return ackBadRequest, `"event" must be a non-empty string`
	case "refresh":
		return e.refresh(c, data)
	case "register":
		// The seed's client sent its own id; accept it only as a
		// confirmation of the token's user.
		var id any = data
		if m, ok := data.(map[string]any); ok {
			id = m["userId"]
		}
		if idString(id) != c.user {
			return ackForbidden, "register can only confirm the token's own user"
		}
		return "", ""
	}
	ev := &Event{
		ID:     e.newEventID(),
		Type:   "client." + name,
		Source: SourceClient,
		Time:   time.Now(),
		Sender: c.identity(),
		Data:   data,
		conn:   c,
	}
	if _, err := e.process(context.Background(), ev); err != nil {
		e.log.Error("client event not processed", "event", ev.Type, "user", c.user, "err", err)
		return ackInternal, "the event could not be processed"
	}
	return "", ""
}

// refresh replaces c's token with a newer one for the same user.
func (e *Engine) refresh(c *conn, data any) (code, msg string) {
	m, _ := data.(map[string]any)
	tok, _ := m["token"].(string)
	if tok == "" {
		return ackBadRequest, `refresh needs {"token": "<JWT>"}`
	}
	ident, err := e.cfg.Auth.Authenticate(tok)
	if err != nil {
		return ackUnauthorized, "invalid token"
	}
	if ident.UserID != c.user {
		return ackForbidden, "the new token is for another user"
	}
	c.setIdentity(&ident)
	return "", ""
}

// idString renders an id the way targets compare ids: as a string.
func idString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case json.Number:
		return x.String()
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}

// process routes ev and applies what the rules decided. It returns the
// names of the rules that produced commands. An error means something that
// must not be lost could not be kept (a forward could not be queued); rules
// that failed at run time are counted and logged, not returned.
func (e *Engine) process(ctx context.Context, ev *Event) (matched []string, err error) {
	cmds, rerr := e.router.Route(ctx, ev, nil)
	if rerr != nil {
		e.metrics.ruleErrors.Inc()
		e.log.Warn("rules failed at run time", "event", ev.Type, "id", ev.ID, "err", rerr)
	}
	if err := e.apply(ctx, ev, cmds); err != nil {
		return nil, err
	}
	return matchedRules(cmds), nil
}

// apply carries out cmds for ev. Forwards go first: they are durable, and if
// one cannot be queued nothing has been emitted yet, so the sender's retry
// delivers everything once.
func (e *Engine) apply(ctx context.Context, ev *Event, cmds []Command) error {
	for i := range cmds {
		cmd := &cmds[i]
		if cmd.Op != OpForward {
			continue
		}
		if e.cfg.Forwarder == nil {
			return errors.New("forward: no forwarder configured")
		}
		body, err := forwardBody(ev, cmd)
		if err != nil {
			return fmt.Errorf("rule %s: %w", cmd.Rule, err)
		}
		it := forward.Item{
			// Stable for this event and command, and free of '.', which a
			// Standard Webhooks id may not contain: webhook ids never do,
			// and generated ids are "<ms>-<seq>".
			ID:      "fwd_" + ev.ID + "_" + strconv.Itoa(i),
			EventID: ev.ID,
			URL:     cmd.URL,
			Body:    body,
			Created: ev.Time,
		}
		if err := e.cfg.Forwarder.Enqueue(ctx, it); err != nil {
			return fmt.Errorf("rule %s: queue forward: %w", cmd.Rule, err)
		}
	}
	for i := range cmds {
		cmd := &cmds[i]
		switch cmd.Op {
		case OpEmit:
			if _, _, err := e.Publish(cmd.Event, cmd.Data, cmd.To, false); err != nil {
				e.log.Warn("emit failed", "rule", cmd.Rule, "event", cmd.Event, "err", err)
			}
		case OpJoin, OpLeave:
			e.rooms(ev, cmd)
		}
	}
	return nil
}

// rooms applies a join or leave: to cmd.User's connections if named, else
// to the connection the event came from, else to the sender's connections.
func (e *Engine) rooms(ev *Event, cmd *Command) {
	kind := jobJoin
	if cmd.Op == OpLeave {
		kind = jobLeave
	}
	switch {
	case cmd.User != "":
		e.send(e.partFor(cmd.User), job{kind: kind, user: cmd.User, rooms: cmd.Rooms})
	case ev.conn != nil:
		e.send(ev.conn.part, job{kind: kind, c: ev.conn, rooms: cmd.Rooms})
	case ev.Sender != nil:
		u := ev.Sender.UserID
		e.send(e.partFor(u), job{kind: kind, user: u, rooms: cmd.Rooms})
	}
}

// forwardBody is what a forward posts: the rule's data if it set one, else
// the event itself.
func forwardBody(ev *Event, cmd *Command) ([]byte, error) {
	if cmd.Data != nil {
		return json.Marshal(cmd.Data)
	}
	body := struct {
		Type      string         `json:"type"`
		ID        string         `json:"id"`
		Source    string         `json:"source"`
		Timestamp string         `json:"timestamp"`
		Sender    map[string]any `json:"sender,omitempty"`
		Data      any            `json:"data"`
	}{Type: ev.Type, ID: ev.ID, Source: ev.Source, Timestamp: ev.Time.UTC().Format(time.RFC3339Nano), Data: ev.Data}
	if ev.Sender != nil {
		body.Sender = senderClaims(ev.Sender)
	}
	return json.Marshal(body)
}

// senderClaims is the sender as rules and the app see it: the token's
// claims, with "id" set to the user id.
func senderClaims(id *auth.Identity) map[string]any {
	m := make(map[string]any, len(id.Claims)+1)
	for k, v := range id.Claims {
		m[k] = v
	}
	m["id"] = id.UserID
	return m
}

func matchedRules(cmds []Command) []string {
	names := []string{}
	for i := range cmds {
		if !containsString(names, cmds[i].Rule) {
			names = append(names, cmds[i].Rule)
		}
	}
	return names
}

// processLifecycle runs a connection.open or connection.close event.
func (e *Engine) processLifecycle(ctx context.Context, ev *Event) {
	if _, err := e.process(ctx, ev); err != nil {
		e.log.Error("lifecycle event failed", "event", ev.Type, "err", err)
	}
}

// eventQueue carries lifecycle events from the goroutines that see them
// (partitions, handshakes) to one goroutine that runs them through the
// rules. A partition must never wait on the pipeline, which itself sends
// to partitions, so push never blocks. In steady state it holds about two
// events per connection that opened or closed since the last batch; it is
// capped (two per allowed connection), and what a connect storm pushes
// past the cap while the rules fall behind is dropped and counted
// (sidecar_lifecycle_dropped_total).
type eventQueue struct {
	mu      sync.Mutex
	q       []*Event // guarded by mu
	max     int
	dropped func()
	wake    chan struct{}
}

func (q *eventQueue) init(max int, dropped func()) {
	q.wake = make(chan struct{}, 1)
	q.max, q.dropped = max, dropped
}

func (q *eventQueue) push(ev *Event) {
	q.mu.Lock()
	if len(q.q) >= q.max {
		q.mu.Unlock()
		q.dropped()
		return
	}
	q.q = append(q.q, ev)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// run handles events until ctx is done, then handles what is left.
func (q *eventQueue) run(ctx context.Context, handle func(context.Context, *Event)) {
	for {
		q.mu.Lock()
		batch := q.q
		q.q = nil
		q.mu.Unlock()
		for _, ev := range batch {
			handle(ctx, ev)
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-q.wake:
		case <-ctx.Done():
			return
		}
	}
}
