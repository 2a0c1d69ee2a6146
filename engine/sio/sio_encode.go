package sio

import "strconv"

// The Socket.IO encoders write a whole Engine.IO message packet: '4', the
// Socket.IO type digit, then the packet. Where they take a namespace nsp, ""
// and "/" both mean the main namespace, which is not written; any other must
// start with '/' and hold no ',' (the engine passes its own namespace names
// or one ParseSIO returned). JSON arguments given as []byte are written as
// they are and must be valid JSON; strings are JSON-escaped.

// AppendEvent appends an EVENT to the client:
//
//	42["<name>",<data>]
//	42["<name>",<data>,"<offset>"]
//
// data is the raw JSON of the event's one argument; a nil or empty data
// writes no argument (42["<name>"]). A non-empty offset is appended as a last
// string argument: that is how socket.io's connection state recovery marks
// each event it stores (the server's adapter pushes the offset onto the
// event's arguments), and socket.io-client, once its CONNECT answer carried a
// pid, keeps the last argument of every event it gets, when it is a string,
// as the offset to send back with the pid in its CONNECT payload when it
// reconnects. So when the CONNECT answer carried a pid, give every event an
// offset, or a string data would be taken for one; when it did not, give
// none. The client's listener sees the offset as one more argument (as its
// only one when data is nil).
func AppendEvent(dst []byte, nsp, name string, data []byte, offset string) []byte {
	dst = appendHeader(dst, Event, nsp)
	dst = append(dst, '[')
	dst = appendJSONString(dst, name)
	if len(data) > 0 {
		dst = append(dst, ',')
		dst = append(dst, data...)
	}
	if offset != "" {
		dst = append(dst, ',')
		dst = appendJSONString(dst, offset)
	}
	return append(dst, ']')
}

// AppendAck appends the ACK answering the client's event with ack id id
// (ParseSIO's ID, never negative), with args as its arguments, each the raw
// JSON of one:
//
//	43<id>[<arg>,...]
//
// The engine answers with one argument, an object such as {"ok":true} or
// {"error":{"code":"...","message":"..."}}; no args writes 43<id>[].
func AppendAck(dst []byte, nsp string, id int64, args ...[]byte) []byte {
	dst = appendHeader(dst, Ack, nsp)
	dst = strconv.AppendInt(dst, id, 10)
	dst = append(dst, '[')
	for i, a := range args {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, a...)
	}
	return append(dst, ']')
}

// AppendConnect appends the CONNECT that accepts the client into nsp, with
// the Socket.IO session id sid:
//
//	40{"sid":"<sid>"}
//	40{"sid":"<sid>","pid":"<pid>"}
//
// A non-empty pid is the private session id of connection state recovery;
// the client sends it back, with its last offset, when it reconnects.
func AppendConnect(dst []byte, nsp, sid, pid string) []byte {
	dst = appendHeader(dst, Connect, nsp)
	dst = append(dst, `{"sid":`...)
	dst = appendJSONString(dst, sid)
	if pid != "" {
		dst = append(dst, `,"pid":`...)
		dst = appendJSONString(dst, pid)
	}
	return append(dst, '}')
}

// AppendConnectError appends the CONNECT_ERROR that refuses the client's
// CONNECT to nsp:
//
//	44{"message":"<message>"}
//	44/admin,{"message":"Invalid namespace"}
//	44{"message":"<message>","data":<data>}
//
// data, the raw JSON of details for the client (socket.io-client exposes it
// as the error's data), is written only when not empty.
func AppendConnectError(dst []byte, nsp, message string, data []byte) []byte {
	dst = appendHeader(dst, ConnectError, nsp)
	dst = append(dst, `{"message":`...)
	dst = appendJSONString(dst, message)
	if len(data) > 0 {
		dst = append(dst, `,"data":`...)
		dst = append(dst, data...)
	}
	return append(dst, '}')
}

// AppendDisconnect appends the DISCONNECT that ends the client's membership
// of nsp: 41, or 41/admin, for a namespace.
func AppendDisconnect(dst []byte, nsp string) []byte {
	return appendHeader(dst, Disconnect, nsp)
}

// AppendSIOPacket appends p as a whole Engine.IO message, in the form
// ParseSIO reads, so that parsing the result's Socket.IO packet gives p back
// for any p ParseSIO returned: '4', the type digit, the attachment count and
// '-' for a binary type, the namespace and ',' unless it is "/" or "", the
// ack id when HasID, then Data as is.
func AppendSIOPacket(dst []byte, p SIOPacket) []byte {
	dst = append(dst, '4', '0'+byte(p.Type))
	if p.Type == BinaryEvent || p.Type == BinaryAck {
		dst = strconv.AppendInt(dst, int64(p.Attachments), 10)
		dst = append(dst, '-')
	}
	dst = appendNamespace(dst, p.Namespace)
	if p.HasID {
		dst = strconv.AppendInt(dst, p.ID, 10)
	}
	return append(dst, p.Data...)
}

// appendHeader appends '4', the type digit and the namespace.
func appendHeader(dst []byte, t SIOType, nsp string) []byte {
	return appendNamespace(append(dst, '4', '0'+byte(t)), nsp)
}

// appendNamespace appends nsp and ',' unless nsp is the main namespace.
func appendNamespace(dst []byte, nsp string) []byte {
	if nsp == "" || nsp == "/" {
		return dst
	}
	return append(append(dst, nsp...), ',')
}
