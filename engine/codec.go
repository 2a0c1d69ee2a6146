package engine

import (
	"encoding/json"

	"github.com/gobwas/ws"
)

// protocol is a wire protocol a connection speaks. It indexes the codecs
// and a delivery's frames.
type protocol uint8

const (
	protoNative   protocol = iota // /ws, section 4 of the contract
	protoSocketIO                 // /socket.io/: Socket.IO v5 over Engine.IO v4 (socketio.go)
	numProtocols
)

// A codec is one wire protocol: how an event leaves as bytes, and how a
// client's message comes in. The engine holds one per protocol; each conn
// names its own. A publish is encoded at most once per protocol, lazily, by
// the first partition with a recipient that speaks it, and the same bytes go
// to every such recipient.
type codec interface {
	// encodeEvent returns the complete server frame carrying event name with
	// data (valid JSON) and stream id.
	encodeEvent(name string, data []byte, id string) []byte
	// encodeAck returns the frame answering a client message's ack: ok when
	// code is "", else an error with code and message.
	encodeAck(ack int64, code, message string) []byte
	// decode parses one complete client message. An event marked none is
	// not one: the message was the protocol's own (a pong). reply, when
	// set, is the frame that answers the message. An error is a
	// *wsframe.CloseError giving the close code to answer with.
	decode(op ws.OpCode, p []byte) (ev clientEvent, reply []byte, err error)
	// ping is the frame that asks the client for a sign of life.
	ping() []byte
	// closing is the frame sent before the close frame, if the protocol
	// has one (nil: none).
	closing() []byte
}

// clientEvent is one decoded client message. Its data stays JSON, checked
// but not decoded, until the rule pool runs it: decoded, a message can
// take twenty times its size, and what waits in the pool is bounded by
// bytes on the wire.
type clientEvent struct {
	name   string
	raw    []byte // the data as JSON (valid; nil: none)
	ack    int64
	hasAck bool
	size   int  // bytes on the wire, for the rule pool's byte cap
	none   bool // not an event: the protocol's own message, already handled
}

// data decodes the event's data.
func (ev *clientEvent) data() any {
	if len(ev.raw) == 0 {
		return nil
	}
	var v any
	json.Unmarshal(ev.raw, &v) // valid JSON: checked when the message was read
	return v
}

// Ack error codes, shared by every protocol.
const (
	ackBadRequest   = "bad_request"
	ackForbidden    = "forbidden"
	ackUnauthorized = "unauthorized"
	ackOverloaded   = "overloaded"
	ackInternal     = "internal"
)
