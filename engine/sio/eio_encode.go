package sio

import (
	"strconv"
	"time"
)

// AppendOpen appends the Engine.IO open packet of a new session:
//
//	0{"sid":"<sid>","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}
//
// sid and each upgrade are JSON-escaped; a nil upgrades writes []. The two
// durations are written in whole milliseconds, as the protocol wants;
// maxPayload is the largest polling payload, in bytes, the server accepts.
func AppendOpen(dst []byte, sid string, upgrades []string, pingInterval, pingTimeout time.Duration, maxPayload int) []byte {
	dst = append(dst, `0{"sid":`...)
	dst = appendJSONString(dst, sid)
	dst = append(dst, `,"upgrades":[`...)
	for i, u := range upgrades {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, u)
	}
	dst = append(dst, `],"pingInterval":`...)
	dst = strconv.AppendInt(dst, pingInterval.Milliseconds(), 10)
	dst = append(dst, `,"pingTimeout":`...)
	dst = strconv.AppendInt(dst, pingTimeout.Milliseconds(), 10)
	dst = append(dst, `,"maxPayload":`...)
	dst = strconv.AppendInt(dst, int64(maxPayload), 10)
	return append(dst, '}')
}

// AppendClose appends the close packet "1".
func AppendClose(dst []byte) []byte { return append(dst, '1') }

// AppendPing appends a ping packet: "2" then data, usually empty. data is
// written as is and must not contain Separator.
func AppendPing(dst []byte, data string) []byte {
	return append(append(dst, '2'), data...)
}

// AppendPong appends a pong packet: "3" then data, which is the data of the
// ping it answers ("3probe" answers the client's "2probe" during an upgrade).
// data is written as is and must not contain Separator.
func AppendPong(dst []byte, data string) []byte {
	return append(append(dst, '3'), data...)
}

// AppendMessage appends a message packet: "4" then data as is. The Socket.IO
// encoders write whole message packets themselves and need no AppendMessage.
func AppendMessage(dst []byte, data []byte) []byte {
	return append(append(dst, '4'), data...)
}

// AppendNoop appends the noop packet "6", which the server answers a pending
// poll with during an upgrade.
func AppendNoop(dst []byte) []byte { return append(dst, '6') }

// AppendPacket appends p as ParsePacket reads it: the type digit then Data,
// or, for a Binary packet, "b" then Data (which is base64 text already), so
// that ParsePacket(AppendPacket(nil, p)) gives p back. p.Type must be one of
// the seven types.
func AppendPacket(dst []byte, p Packet) []byte {
	if p.Binary {
		dst = append(dst, 'b')
	} else {
		dst = append(dst, '0'+byte(p.Type))
	}
	return append(dst, p.Data...)
}
