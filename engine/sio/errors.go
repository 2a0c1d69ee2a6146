package sio

import "errors"

// ErrBinary is returned by ParseSIO for a BINARY_EVENT or BINARY_ACK packet
// that is otherwise well formed. The packet it returns with ErrBinary is
// filled in (Type, Namespace, ID, Attachments, Data), so the engine can answer
// cleanly: its Attachments binary frames (or base64 packets) follow it and
// are to be consumed and dropped.
var ErrBinary = errors.New("sio: binary attachments are not supported")

// Engine.IO errors.
var (
	errEmptyPacket = errors.New("sio: empty engine.io packet")
	errPacketType  = errors.New("sio: unknown engine.io packet type")
	errBase64      = errors.New("sio: engine.io binary packet is not valid base64")
)

// Socket.IO errors.
var (
	errSIOEmpty        = errors.New("sio: empty socket.io packet")
	errSIOType         = errors.New("sio: unknown socket.io packet type")
	errAttachments     = errors.New("sio: bad attachment count")
	errAttachmentsMany = errors.New("sio: too many attachments")
	errNamespaceEnd    = errors.New("sio: namespace not terminated by ','")
	errNamespaceChars  = errors.New("sio: namespace has control characters or invalid UTF-8")
	errAckID           = errors.New("sio: bad ack id")
	errAckIDOverflow   = errors.New("sio: ack id overflows int64")
	errJSON            = errors.New("sio: payload is not valid JSON")
	errNesting         = errors.New("sio: payload nested too deep")

	errConnectPayload      = errors.New("sio: CONNECT payload must be a JSON object")
	errDisconnectPayload   = errors.New("sio: DISCONNECT takes no payload")
	errEventPayload        = errors.New("sio: EVENT payload must be a JSON array")
	errEventName           = errors.New("sio: EVENT payload must start with a string event name")
	errEventReserved       = errors.New("sio: EVENT uses a reserved event name")
	errAckPayload          = errors.New("sio: ACK payload must be a JSON array")
	errAckWithoutID        = errors.New("sio: ACK without an ack id")
	errConnectErrorPayload = errors.New("sio: CONNECT_ERROR payload must be a JSON object or string")
)
