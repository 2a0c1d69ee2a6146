package engine

import (
	"context"
	"time"

	"github.com/gobwas/ws"

	"github.com/sidecar/sidecar/engine/auth"
)

// Lifecycle events, connection.open and connection.close, go through the
// rules like any other event, and neither is ever dropped: presence is
// built on them.
//
//   - connection.open runs on the handshake's goroutine, after every check
//     and before the 101 is queued. The rooms its rules join are joined when
//     the connection is indexed, before the 101 leaves, so an event for such
//     a room sent after the client sees its connection open reaches it.
//   - connection.close runs on the rule pool once the owner has taken the
//     connection out of the index and its reader side has ended, so after
//     the connection's last client events have been through the rules. The
//     pool holds at most one per connection: a connection's place
//     (limits.max_connections) is freed only once its close event has run,
//     so a connect storm that outruns the rules is refused at the
//     handshake (503), not forgotten.
const (
	eventOpen  = "connection.open"
	eventClose = "connection.close"
)

// runOpen runs connection.open for the user of a connection about to be
// indexed. Forwards and other users' rooms are carried out here; the
// rooms the connection joins and the events the rules emit come back, for
// when it is indexed (publishOpen). If a decision cannot be kept, that is
// logged and counted and the connection opens all the same.
func (e *Engine) runOpen(ctx context.Context, ident *auth.Identity, now time.Time) *opening {
	op := new(opening)
	ev := &Event{ID: e.newEventID(), Type: eventOpen, Source: SourceLifecycle, Time: now, Sender: ident, opening: op}
	if _, err := e.process(ctx, ev); err != nil {
		e.lifecycleFailed(ev, err)
	}
	return op
}

// publishOpen publishes what connection.open rules emitted, once the
// connection's index job is queued (or its upgrade failed).
func (e *Engine) publishOpen(op *opening) {
	for _, m := range op.emits {
		if _, err := e.publish(context.Background(), m, false); err != nil {
			e.log.Warn("connection.open emit not published", "event", m.Event, "err", err)
		}
	}
}

// connClosed runs on the owner when c leaves the index. c's close event
// is made now and queued once its reader side has ended too (readerDone):
// after the conn's last client events have been through the rules.
func (e *Engine) connClosed(c *conn, code ws.StatusCode) {
	e.metrics.closed(code)
	b := c.mailbox()
	// The claims are decoded by the rule worker, and only if a rule
	// listens: not on the partition's goroutine.
	b.closeEv = e.newCloseEvent(&auth.Identity{UserID: c.user}, code)
	b.closeEv.claims = c.claims.Load()
	if b.gate.Add(1) == 2 {
		e.pool.submit(ruleTask{ev: b.closeEv})
	}
}

// readerDone runs once c's reader side has ended, by whoever ended it.
func (e *Engine) readerDone(c *conn) {
	if b := c.mailbox(); b.gate.Add(1) == 2 {
		e.pool.submit(ruleTask{ev: b.closeEv})
	}
}

// closeEvent queues the connection.close event of an upgrade that failed
// after its open rules ran: there is no conn, so nothing to wait for.
func (e *Engine) closeEvent(ident *auth.Identity, code ws.StatusCode) {
	e.pool.submit(ruleTask{ev: e.newCloseEvent(ident, code)})
}

func (e *Engine) newCloseEvent(ident *auth.Identity, code ws.StatusCode) *Event {
	return &Event{
		ID:     e.newEventID(),
		Type:   eventClose,
		Source: SourceLifecycle,
		Time:   time.Now(),
		Sender: ident,
		Data:   map[string]any{"code": float64(code)},
	}
}

// runLifecycle runs a queued lifecycle event on the rule pool. A
// connection's place is freed once its close event has run.
func (e *Engine) runLifecycle(ev *Event) {
	if ev.claims != nil && e.needsClaims(ev.Type) {
		ev.Sender = identityOf(ev.Sender.UserID, ev.claims)
	}
	if _, err := e.process(e.runCtx, ev); err != nil {
		e.lifecycleFailed(ev, err)
	}
	if ev.Type == eventClose {
		e.slots.Add(-1)
	}
}

// handles reports whether a rule listens to events of type typ (true when
// the router cannot say).
func (e *Engine) handles(typ string) bool {
	h, ok := e.router.(interface{ Handles(string) bool })
	return !ok || h.Handles(typ)
}

// needsClaims reports whether a rule for typ reads the sender's claims
// beyond the id (true when the router cannot say): if none does, the
// claims are not decoded.
func (e *Engine) needsClaims(typ string) bool {
	if h, ok := e.router.(interface{ NeedsClaims(string) bool }); ok {
		return h.NeedsClaims(typ)
	}
	return e.handles(typ)
}

func (e *Engine) lifecycleFailed(ev *Event, err error) {
	e.metrics.lifecycleFailed.Inc()
	e.ruleLog.limited.log("lifecycle:"+ev.Type, func(suppressed int) {
		e.log.Error("lifecycle event not fully processed", "event", ev.Type, "user", ev.Sender.UserID,
			"err", err, "suppressed", suppressed)
	})
}
