package engine

import (
	"context"
	"time"

	"github.com/sidecar/sidecar/engine/auth"
)

// Event is one input to the pipeline: a webhook, a client frame or a
// lifecycle change. Every source becomes this one shape, so "who hears
// userOnline" is a rule, not code.
type Event struct {
	ID     string    // webhook-id, or generated for client and lifecycle events
	Type   string    // "booking.created", "client.typing", "connection.open", ...
	Source string    // SourceWebhook, SourceClient, SourceLifecycle or SourceAPI
	Time   time.Time // when the sidecar received it
	// Sender is the identity of the connection that sent a client event, or
	// of the user a lifecycle event is about. Nil for webhooks.
	Sender *auth.Identity
	// Data is the decoded JSON payload: the webhook's "data", or the client
	// event's "data". It is read-only once the event enters the pipeline.
	Data any

	conn *conn // the connection a client event came from, if any
	// claims, when set, are Sender's claims still as JSON: decoded into
	// Sender when the event runs, if a rule listens to it.
	claims *[]byte
	// opening collects what connection.open rules decide for the
	// connection being opened, carried out when it is indexed.
	opening *opening
}

// opening is what connection.open rules decided that must wait for the
// connection to be indexed: the rooms it joins, joined as it is indexed,
// and the events they emit, published right after its index job, so that
// an emit to the opening user reaches the new connection too, after its
// 101.
type opening struct {
	rooms []string
	emits []*Message
}

// Event sources.
const (
	SourceWebhook   = "webhook"
	SourceClient    = "client"
	SourceLifecycle = "lifecycle"
	SourceAPI       = "api"
)

// Op is what a Command asks the engine to do.
type Op uint8

const (
	OpEmit    Op = iota + 1 // deliver Event to To
	OpForward               // POST Data to URL, signed, durably queued
	OpJoin                  // add connections to Rooms
	OpLeave                 // remove connections from Rooms
)

func (o Op) String() string {
	switch o {
	case OpEmit:
		return "emit"
	case OpForward:
		return "forward"
	case OpJoin:
		return "join"
	case OpLeave:
		return "leave"
	}
	return "unknown"
}

// Target names the recipients of an emit. The zero Target reaches nobody.
// Ids are compared as strings.
type Target struct {
	All    bool
	Users  []string
	Rooms  []string
	Except []string // user ids left out, whatever else matched
}

// Empty reports whether t can reach nobody.
func (t Target) Empty() bool { return !t.All && len(t.Users) == 0 && len(t.Rooms) == 0 }

// Command is one decision of the Router, applied by the engine.
type Command struct {
	Op   Op
	Rule string // the rule that produced it, for stats and dry runs

	Event string // OpEmit: event name sent to clients
	To    Target // OpEmit: recipients
	Data  any    // OpEmit: payload; OpForward: request body (nil: the input event)

	URL string // OpForward

	Rooms []string // OpJoin, OpLeave
	// User is whose connections join or leave. Empty: the connection the
	// event came from, or, if none, the event's sender's connections.
	User string
}

// Router decides what an event causes. The compiled rules satisfy it
// through a small adapter (rules/live); tests use fakes. Route appends to
// out and returns it. A non-nil error with commands means some rules failed
// at run time and were skipped; the commands of the others are still
// valid. Each failure, joined in the error, should say which rule and what
// kind of failure it was (RuleName() string and Kind() string methods), so
// that it is counted per rule and kind.
type Router interface {
	Route(ctx context.Context, ev *Event, out []Command) ([]Command, error)
}
