// Package sio is the wire codec of Engine.IO protocol v4 and Socket.IO
// protocol v5, the protocols socket.io-client v4 speaks: parsers for what a
// client sends and append-style encoders for what a server answers. It has
// no sessions, no transports and no handlers; it depends on the standard
// library only.
//
// # Layers
//
// An Engine.IO packet is a type digit and its data: "4hello" is a message
// whose data is "hello", "2" a ping, "3probe" a pong with data "probe". Over
// WebSocket each text frame carries one packet (ParsePacket). Over HTTP
// long-polling a body carries several, joined by Separator (SplitPayload).
//
// A Socket.IO packet is the data of an Engine.IO message packet: in
// `42["typing",{"to":"u2"}]` the leading '4' is the Engine.IO message type
// and `2["typing",{"to":"u2"}]` is the Socket.IO EVENT that ParseSIO reads.
// SplitEvent then splits an EVENT's array into the event name and its
// arguments without decoding them.
//
// The Socket.IO encoders (AppendEvent, AppendAck, AppendConnect, ...) write
// the whole Engine.IO message, leading '4' included: what they append is
// exactly the payload of one WebSocket text frame, or one packet of a polling
// payload.
//
// # Allocation
//
// Parsers return slices that alias their input and copy nothing, with two
// exceptions: ParseSIO copies a namespace other than "/" into a string, and
// SplitEvent copies an event name written with JSON escapes as it unescapes
// it. Whatever the input, they allocate at most once, and at most about its
// size (payloads nest at most MaxNesting deep). Encoders append to the
// caller's buffer and allocate only when it must grow.
//
// # Errors
//
// Every parse error is a fixed value whose text says what was wrong (for
// example "sio: bad ack id"). The one error meant to be told apart is
// ErrBinary: a Socket.IO packet with binary attachments, which this codec
// parses but which the engine does not serve. Any other error means a
// malformed packet, on which the reference server closes the connection.
package sio
