package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/sidecar/sidecar/engine/auth"
	"github.com/sidecar/sidecar/engine/forward"
	"github.com/sidecar/sidecar/rules"
)

// The pipeline: one event in (a webhook, a client message, a lifecycle
// change), the rules' decisions out, carried out in an order that loses
// nothing:
//
//  1. the rules decide (Router.Route); rules that fail are counted per rule
//     and kind, and logged at most once per interval (rulelog.go);
//  2. every emit's data is encoded as JSON, once; a rule whose output
//     cannot be encoded (NaN, Inf, invalid UTF-8) fails as a whole;
//  3. forwards are queued durably: if one cannot be, nothing has been sent
//     yet and the error goes back, so the sender's retry delivers it all once;
//  4. emits go to the broker, and room changes to the hubs.

// ErrOverloaded is returned (wrapped) by the pipeline when what the rules
// decided cannot be kept now because a bounded queue is full: the sender
// should retry later (a webhook gets 503 with Retry-After, a client event
// an `overloaded` ack).
var ErrOverloaded = errors.New("engine: overloaded")

// outcome is what one event caused, for the webhook's answer.
type outcome struct {
	matched []string      // rules whose decisions were carried out
	errors  []ruleFailure // rules that failed at run time, or whose output could not be encoded
}

// ruleFailure is one rule that failed for an event, as the webhook's
// answer tells the app: which rule, what kind of failure, and why.
type ruleFailure struct {
	Rule    string `json:"rule"`
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

// failed reports whether rule is among the failures.
func (o *outcome) failed(rule string) bool {
	for i := range o.errors {
		if o.errors[i].Rule == rule {
			return true
		}
	}
	return false
}

// process routes ev and carries out what the rules decided. An error means
// something that must not be lost could not be kept; rules that failed are
// in the outcome, not the error.
func (e *Engine) process(ctx context.Context, ev *Event) (outcome, error) {
	cmds, rerr := e.router.Route(ctx, ev, nil)
	var out outcome
	if rerr != nil {
		out.errors = e.ruleLog.failures(ev, rerr)
	}
	// 2. Encode every emit once; a rule whose emit cannot be encoded is
	// dropped whole, like any rule that fails at run time.
	payloads := make([][]byte, len(cmds))
	for i := range cmds {
		cmd := &cmds[i]
		if cmd.Op != OpEmit || out.failed(cmd.Rule) {
			continue
		}
		p, err := encodeData(cmd.Data)
		if err != nil {
			err = fmt.Errorf("rule %q: emit %s: data cannot be sent as JSON: %w", cmd.Rule, cmd.Event, err)
			out.errors = append(out.errors, e.ruleLog.failed(ev, cmd.Rule, "encode", err))
			continue
		}
		payloads[i] = p
	}
	// 3. Forwards first.
	for i := range cmds {
		cmd := &cmds[i]
		if cmd.Op != OpForward || out.failed(cmd.Rule) {
			continue
		}
		if err := e.forward(ctx, ev, cmd, i); err != nil {
			return out, err
		}
	}
	// 4. Emits and rooms. A node that has stopped publishing says so before
	// the first, so that nothing has been sent when the caller is told.
	select {
	case <-e.hub.stopped:
		return out, ErrStopped
	default:
	}
	for i := range cmds {
		cmd := &cmds[i]
		if out.failed(cmd.Rule) {
			continue
		}
		switch cmd.Op {
		case OpEmit:
			m := &Message{Event: cmd.Event, Data: payloads[i], To: cmd.To}
			if ev.opening != nil {
				ev.opening.emits = append(ev.opening.emits, m)
				break
			}
			if _, err := e.publish(ctx, m, false); err != nil {
				return out, fmt.Errorf("rule %s: emit %s: %w", cmd.Rule, cmd.Event, err)
			}
		case OpJoin, OpLeave:
			if err := e.rooms(ctx, ev, cmd); err != nil {
				return out, fmt.Errorf("rule %s: %s: %w", cmd.Rule, cmd.Op, err)
			}
		}
		if !containsString(out.matched, cmd.Rule) {
			out.matched = append(out.matched, cmd.Rule)
		}
	}
	if out.matched == nil {
		out.matched = []string{}
	}
	if out.errors == nil {
		out.errors = []ruleFailure{}
	}
	return out, nil
}

// encodeData is an event's data as the JSON every protocol carries.
func encodeData(data any) ([]byte, error) {
	var p []byte
	switch d := data.(type) {
	case json.RawMessage:
		p = d
	case nil:
		return []byte("null"), nil
	default:
		var err error
		if p, err = json.Marshal(d); err != nil {
			return nil, err
		}
	}
	if !utf8.Valid(p) {
		return nil, errors.New("data is not valid UTF-8")
	}
	return p, nil
}

// forward queues the i-th command of ev durably.
func (e *Engine) forward(ctx context.Context, ev *Event, cmd *Command, i int) error {
	if e.cfg.Forwarder == nil {
		return fmt.Errorf("rule %s: forward: no forwarder configured", cmd.Rule)
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
	if ev.Source == SourceClient && ev.Sender != nil {
		it.User = ev.Sender.UserID // a client's share of the outbox is bounded
	}
	if err := e.cfg.Forwarder.Enqueue(ctx, it); err != nil {
		if errors.Is(err, forward.ErrFull) {
			return fmt.Errorf("rule %s: queue forward: %w: %w", cmd.Rule, ErrOverloaded, err)
		}
		return fmt.Errorf("rule %s: queue forward: %w", cmd.Rule, err)
	}
	return nil
}

// rooms applies a join or leave: to cmd.User's connections if named (for
// that user's own connection.open, the one being opened too); else to the
// connection being opened, or the one the event came from; else to the
// sender's connections.
func (e *Engine) rooms(ctx context.Context, ev *Event, cmd *Command) error {
	leave := cmd.Op == OpLeave
	own := ev.opening != nil && (cmd.User == "" || ev.Sender != nil && cmd.User == ev.Sender.UserID)
	if own { // the connection being opened, which no hub holds yet
		for _, r := range cmd.Rooms {
			switch have := containsString(ev.opening.rooms, r); {
			case !leave && !have:
				ev.opening.rooms = append(ev.opening.rooms, r)
			case leave && have:
				ev.opening.rooms = removeString(ev.opening.rooms, r)
			}
		}
	}
	switch {
	case cmd.User != "": // every connection of that user, the opening one included above
		return e.broker.Rooms(ctx, cmd.User, leave, cmd.Rooms)
	case own:
		return nil
	case ev.conn != nil:
		if !e.hub.send(ev.conn.part, job{kind: jobRooms, leave: leave, c: ev.conn, rooms: cmd.Rooms}) {
			return ErrStopped
		}
		return nil
	case ev.Sender != nil:
		return e.broker.Rooms(ctx, ev.Sender.UserID, leave, cmd.Rooms)
	}
	return nil
}

// forwardBody is what a forward posts: the rule's data if it set one, else
// the event itself, with the sender's claims ("id" set to the user id).
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
		body.Sender = ev.Sender.Sender()
	}
	return json.Marshal(body)
}

// clientMessage runs one client message and queues its ack. Acks are
// bounded by the batch they answer, so the mailbox takes them all.
func (e *Engine) clientMessage(c *conn, m *clientEvent) {
	code, msg := e.clientEvent(c, m)
	if m.hasAck {
		c.postFrame(e.hub.codecs[c.proto].encodeAck(m.ack, code, msg), e.limits.OutboundQueueBytes)
	}
}

// clientEvent runs one client event and returns the ack's error code and
// message ("" when it went through). The engine handles refresh, register,
// watch and unwatch itself, and keeps updateStatus before the rules see
// it; every other event goes to the rules as client.<name>, and one that
// no rule listens to is answered unknown_event.
func (e *Engine) clientEvent(c *conn, m *clientEvent) (code, msg string) {
	data := m.data()
	switch m.name {
	case "":
		return ackBadRequest, `"event" must be a non-empty string`
	case "refresh":
		return e.refresh(c, data)
	case "register":
		// The seed's client sent its own id; accept it only as a
		// confirmation of the token's user.
		var id any = data
		if obj, ok := data.(map[string]any); ok {
			id = obj["userId"]
		}
		if s, err := rules.ID(id); err != nil || s != c.user {
			return ackForbidden, "register can only confirm the token's own user"
		}
		return "", ""
	case "watch", "unwatch":
		return e.watch(c, data, m.name == "unwatch")
	case "updateStatus":
		return e.updateStatus(c, data)
	}
	if !e.handles("client." + m.name) {
		e.metrics.unknownEvents.Inc()
		return ackUnknownEvent, fmt.Sprintf("no rule handles client event %q", truncate(m.name, 64))
	}
	return e.runClientEvent(c, m.name, data)
}

// runClientEvent runs client.<name> through the rules.
func (e *Engine) runClientEvent(c *conn, name string, data any) (code, msg string) {
	ev := &Event{
		ID:     e.newEventID(),
		Type:   "client." + name,
		Source: SourceClient,
		Time:   time.Now(),
		Sender: &auth.Identity{UserID: c.user},
		Data:   data,
		conn:   c,
	}
	if e.needsClaims(ev.Type) {
		ev.Sender = c.identity()
	}
	if _, err := e.process(e.runCtx, ev); err != nil {
		if errors.Is(err, ErrOverloaded) {
			return ackOverloaded, "the event cannot be kept now; retry later"
		}
		e.log.Error("client event not processed", "event", ev.Type, "user", c.user, "err", err)
		return ackInternal, "the event could not be processed"
	}
	return "", ""
}

// truncate cuts s to at most n bytes, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
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
		return ackUnauthorized, authMessage(err)
	}
	if ident.UserID != c.user {
		return ackForbidden, "the new token is for another user"
	}
	c.setIdentity(&ident, e.cfg.Auth.Leeway())
	return "", ""
}
