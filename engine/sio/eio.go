package sio

import "bytes"

// PacketType is an Engine.IO packet type: the value of the digit that starts
// a text packet ('0' is Open, '4' is Message).
type PacketType byte

// The Engine.IO v4 packet types.
const (
	Open    PacketType = iota // server to client, first packet of a session: the handshake JSON
	Close                     // either side: the transport may be closed
	Ping                      // server to client heartbeat; client to server "probe" during an upgrade
	Pong                      // answer to Ping, with the same data
	Message                   // carries one Socket.IO packet
	Upgrade                   // client to server: switch to the probed WebSocket
	Noop                      // server to client: ends a pending poll during an upgrade
)

// String returns the type's protocol name ("open", "message", ...).
func (t PacketType) String() string {
	switch t {
	case Open:
		return "open"
	case Close:
		return "close"
	case Ping:
		return "ping"
	case Pong:
		return "pong"
	case Message:
		return "message"
	case Upgrade:
		return "upgrade"
	case Noop:
		return "noop"
	}
	return "unknown"
}

// Separator joins the packets of an HTTP long-polling payload (the ASCII
// record separator). A polling response is the packets of the Append
// functions with one Separator between each two; none is written after the
// last. Packet data must not contain it, which JSON-encoded data never does.
const Separator byte = 0x1e

// Packet is one parsed Engine.IO packet.
type Packet struct {
	// Type is the packet type.
	Type PacketType
	// Data is what follows the type digit (empty for "2"). It aliases the
	// parsed input: it is valid as long as the input is and unchanged.
	Data []byte
	// Binary reports a base64 binary packet, which only a polling payload
	// carries: "b" then the standard base64 (with padding) of the bytes, as
	// "bAQIDBA==" for 01 02 03 04. Type is then Message and Data is the base64
	// text still encoded (ParsePacket checked it decodes with
	// encoding/base64.StdEncoding). A binary WebSocket frame is not an
	// Engine.IO text packet: it is a Message whose data is the whole frame,
	// with no type byte, and is not for ParsePacket.
	Binary bool
}

// ParsePacket parses one Engine.IO text packet: a WebSocket text frame's
// payload, or one packet of a polling payload. It copies nothing: the
// returned Data aliases p. It fails on an empty packet, on a first byte that
// is neither a type digit '0'..'6' nor the binary prefix 'b', and on a binary
// packet that is not valid base64. The data of a known type is not checked:
// the engine decides what a message or a ping may carry.
func ParsePacket(p []byte) (Packet, error) {
	if len(p) == 0 {
		return Packet{}, errEmptyPacket
	}
	c := p[0]
	if c == 'b' {
		if !validBase64(p[1:]) {
			return Packet{}, errBase64
		}
		return Packet{Type: Message, Data: p[1:], Binary: true}, nil
	}
	if c < '0' || c > '6' {
		return Packet{}, errPacketType
	}
	return Packet{Type: PacketType(c - '0'), Data: p[1:]}, nil
}

// SplitPayload parses an HTTP long-polling payload, the body of a client's
// POST: packets joined by Separator. It calls fn with each packet in order,
// Data aliasing body, and allocates nothing. It stops at the first packet
// ParsePacket rejects, an empty one included (an empty body, two separators
// in a row, a separator at either end), and returns that error; packets
// before it have already been given to fn. It stops too when fn returns an
// error, and returns it.
func SplitPayload(body []byte, fn func(Packet) error) error {
	for {
		part := body
		i := bytes.IndexByte(body, Separator)
		if i >= 0 {
			part = body[:i]
		}
		pkt, err := ParsePacket(part)
		if err != nil {
			return err
		}
		if err := fn(pkt); err != nil {
			return err
		}
		if i < 0 {
			return nil
		}
		body = body[i+1:]
	}
}

// validBase64 reports whether s is standard base64 with padding, as
// engine.io writes it (Buffer's "base64"): a multiple of 4 characters of the
// standard alphabet, with at most two '=' and only at the end.
func validBase64(s []byte) bool {
	if len(s)%4 != 0 {
		return false
	}
	n := len(s)
	if n > 0 && s[n-1] == '=' {
		n--
		if s[n-1] == '=' {
			n--
		}
	}
	for _, c := range s[:n] {
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '+', c == '/':
		default:
			return false
		}
	}
	return true
}
