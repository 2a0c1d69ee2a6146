package sio

import (
	"encoding/json"
	"math"
	"unicode/utf8"
)

// SIOType is a Socket.IO packet type: the value of the digit that starts a
// Socket.IO packet.
type SIOType byte

// The Socket.IO v5 packet types.
const (
	Connect      SIOType = iota // client: join a namespace (payload: auth object); server: accepted ({"sid":...})
	Disconnect                  // either side: leave a namespace
	Event                       // either side: ["name", args...]
	Ack                         // answer to an Event that had an ack id: [args...]
	ConnectError                // server: namespace refused ({"message":...})
	BinaryEvent                 // Event with binary attachments in the packets that follow
	BinaryAck                   // Ack with binary attachments in the packets that follow
)

// String returns the type's protocol name ("CONNECT", "EVENT", ...).
func (t SIOType) String() string {
	switch t {
	case Connect:
		return "CONNECT"
	case Disconnect:
		return "DISCONNECT"
	case Event:
		return "EVENT"
	case Ack:
		return "ACK"
	case ConnectError:
		return "CONNECT_ERROR"
	case BinaryEvent:
		return "BINARY_EVENT"
	case BinaryAck:
		return "BINARY_ACK"
	}
	return "UNKNOWN"
}

// MaxAttachments is the largest attachment count ParseSIO accepts on a
// binary packet; a larger one is refused as malformed rather than reported
// as ErrBinary.
const MaxAttachments = 256

// MaxNesting is how deep ParseSIO lets the arrays and objects of a payload
// nest: `[[1]]` nests 2 deep. socket.io sets no limit; this one keeps a
// hostile payload from costing more than its size to check.
const MaxNesting = 128

// SIOPacket is one parsed Socket.IO packet:
//
//	<type>[<attachments>-][<namespace>,][<ack id>][<JSON payload>]
type SIOPacket struct {
	// Type is the packet type.
	Type SIOType
	// Namespace is the namespace, "/" when the packet names none. It starts
	// with '/', holds no ',', no control character and only valid UTF-8.
	Namespace string
	// ID is the ack id, valid when HasID: the sender wants an ACK with it.
	ID int64
	// HasID reports that the packet carries an ack id.
	HasID bool
	// Attachments is the number of binary attachments that follow a
	// BinaryEvent or BinaryAck; 0 for the other types.
	Attachments int
	// Data is the raw JSON payload, aliasing the parsed input; nil when the
	// packet has none.
	Data []byte
}

// ParseSIO parses a Socket.IO packet: the data of an Engine.IO message
// packet, without the message type '4' (ParsePacket's Data for Message).
// Data aliases p; only a namespace other than "/" is copied (into
// Namespace).
//
// It checks what the reference parser (socket.io-parser) checks, and a
// little more:
//   - the type is a digit '0'..'6';
//   - a binary type has an attachment count, digits then '-', of at most
//     MaxAttachments;
//   - a namespace starts with '/' and ends at ','; it may also end the
//     packet without a ',' (`0/admin`, as the reference parser reads it), but
//     then it may hold none of '[', '{' and '"', which would mean a payload
//     glued to it;
//   - an ack id is decimal digits and fits an int64; whatever else sits
//     between the namespace and the payload is a bad ack id (`2abc["x"]`);
//   - the payload is valid JSON, nested at most MaxNesting deep, and fits
//     the type: CONNECT an object or none, DISCONNECT none, EVENT an array
//     whose first element is a string event name other than the reserved
//     ones (connect, connect_error, disconnect, disconnecting, newListener,
//     removeListener), ACK an array, with an ack id, and CONNECT_ERROR an
//     object or a string.
//
// The reference parser also takes an EVENT whose first element is a number;
// ParseSIO does not, since the engine routes events by name.
//
// A well-formed BinaryEvent or BinaryAck comes back filled in, with
// ErrBinary. Any other error means the packet is malformed.
func ParseSIO(p []byte) (SIOPacket, error) {
	if len(p) == 0 {
		return SIOPacket{}, errSIOEmpty
	}
	if p[0] < '0' || p[0] > '6' {
		return SIOPacket{}, errSIOType
	}
	pkt := SIOPacket{Type: SIOType(p[0] - '0'), Namespace: "/"}
	i := 1
	binary := pkt.Type == BinaryEvent || pkt.Type == BinaryAck
	if binary {
		n, next, err := parseAttachments(p, i)
		if err != nil {
			return SIOPacket{}, err
		}
		pkt.Attachments, i = n, next
	}
	var nsp []byte
	if i < len(p) && p[i] == '/' {
		var err error
		if nsp, i, err = parseNamespace(p, i); err != nil {
			return SIOPacket{}, err
		}
	}
	if i < len(p) && isDigit(p[i]) {
		id, next, err := parseAckID(p, i)
		if err != nil {
			return SIOPacket{}, err
		}
		pkt.ID, pkt.HasID, i = id, true, next
	}
	if i < len(p) {
		switch p[i] {
		case '[', '{', '"':
		default:
			return SIOPacket{}, errAckID
		}
		pkt.Data = p[i:]
	}
	if err := checkPayload(&pkt); err != nil {
		return SIOPacket{}, err
	}
	if nsp != nil && string(nsp) != "/" {
		pkt.Namespace = string(nsp) // the only copy, once the packet is known good
	}
	if binary {
		return pkt, ErrBinary
	}
	return pkt, nil
}

// parseAttachments reads the "<n>-" of a binary packet at p[i:].
func parseAttachments(p []byte, i int) (n, next int, err error) {
	start := i
	for ; i < len(p) && isDigit(p[i]); i++ {
		if n = n*10 + int(p[i]-'0'); n > MaxAttachments {
			return 0, 0, errAttachmentsMany
		}
	}
	if i == start || i == len(p) || p[i] != '-' {
		return 0, 0, errAttachments
	}
	return n, i + 1, nil
}

// parseNamespace reads the namespace starting with the '/' at p[i]; next is
// the index past its ',' (or len(p)).
func parseNamespace(p []byte, i int) (nsp []byte, next int, err error) {
	end := i
	for end < len(p) && p[end] != ',' {
		end++
	}
	nsp = p[i:end]
	for _, c := range nsp {
		if c < 0x20 || c == 0x7f {
			return nil, 0, errNamespaceChars
		}
		if end == len(p) && (c == '[' || c == '{' || c == '"') {
			return nil, 0, errNamespaceEnd
		}
	}
	if !utf8.Valid(nsp) {
		return nil, 0, errNamespaceChars
	}
	if end < len(p) {
		end++ // the ','
	}
	return nsp, end, nil
}

// parseAckID reads the decimal ack id starting with the digit at p[i].
func parseAckID(p []byte, i int) (id int64, next int, err error) {
	for ; i < len(p) && isDigit(p[i]); i++ {
		d := int64(p[i] - '0')
		if id > (math.MaxInt64-d)/10 {
			return 0, 0, errAckIDOverflow
		}
		id = id*10 + d
	}
	return id, i, nil
}

// checkPayload checks pkt.Data against pkt.Type: its presence and its first
// byte, then that it is valid JSON, then an event's name.
func checkPayload(pkt *SIOPacket) error {
	d := pkt.Data
	var first byte
	if len(d) > 0 {
		first = d[0]
	}
	switch pkt.Type {
	case Connect:
		if d != nil && first != '{' {
			return errConnectPayload
		}
	case Disconnect:
		if d != nil {
			return errDisconnectPayload
		}
	case Event, BinaryEvent:
		if first != '[' {
			return errEventPayload
		}
	case Ack, BinaryAck:
		if first != '[' {
			return errAckPayload
		}
		if !pkt.HasID {
			return errAckWithoutID
		}
	case ConnectError:
		if first != '{' && first != '"' {
			return errConnectErrorPayload
		}
	}
	if d == nil {
		return nil
	}
	// A payload nests at most half its length deep; check longer ones
	// before json.Valid, whose scanner stack would grow with the depth.
	if len(d) > 2*MaxNesting && nestedDeeper(d, MaxNesting) {
		return errNesting
	}
	if !json.Valid(d) {
		return errJSON
	}
	if pkt.Type == Event || pkt.Type == BinaryEvent {
		lit, _, err := eventNameLiteral(d)
		if err != nil {
			return err
		}
		if reservedLiteral(lit) {
			return errEventReserved
		}
	}
	return nil
}

// nestedDeeper reports whether the arrays and objects of the JSON text b
// (outside its strings) nest deeper than max.
func nestedDeeper(b []byte, max int) bool {
	depth := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			end, ok := skipString(b, i)
			if !ok {
				return false // invalid JSON, for json.Valid to say
			}
			i = end - 1
		case '[', '{':
			if depth++; depth > max {
				return true
			}
		case ']', '}':
			depth--
		}
	}
	return false
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
