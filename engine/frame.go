package engine

import (
	"encoding/json"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// WebSocket frames as the server sends them: unmasked and final. The
// codecs build their frames with these; control frames are compiled once.

// framePing is the server's ping, compiled once.
var framePing = ws.MustCompileFrame(ws.NewPingFrame(nil))

// maxHeader is the largest server frame header: no mask, 64-bit length.
const maxHeader = 10

// appendServerHeader appends the header of an unmasked, final server frame
// of the given opcode and payload length.
func appendServerHeader(dst []byte, op ws.OpCode, n int) []byte {
	b0 := 0x80 | byte(op)
	switch {
	case n <= 125:
		return append(dst, b0, byte(n))
	case n <= 0xffff:
		return append(dst, b0, 126, byte(n>>8), byte(n))
	default:
		return append(dst, b0, 127,
			byte(uint64(n)>>56), byte(uint64(n)>>48), byte(uint64(n)>>40), byte(uint64(n)>>32),
			byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

// serverFrame returns a complete frame of opcode op carrying payload.
func serverFrame(op ws.OpCode, payload []byte) []byte {
	f := make([]byte, 0, maxHeader+len(payload))
	f = appendServerHeader(f, op, len(payload))
	return append(f, payload...)
}

// closeFrame returns a close frame with code and a short reason.
func closeFrame(code ws.StatusCode, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	var p [125]byte
	p[0], p[1] = byte(code>>8), byte(code)
	n := 2 + copy(p[2:], reason)
	return serverFrame(ws.OpClose, p[:n])
}

// prependHeader writes the frame header into the maxHeader bytes reserved at
// the front of f, right before the payload, and returns the frame: a codec
// builds the payload once, after a reserved gap, and never copies it.
func prependHeader(f []byte, op ws.OpCode) []byte {
	n := len(f) - maxHeader
	var h [maxHeader]byte
	hdr := appendServerHeader(h[:0], op, n)
	start := maxHeader - len(hdr)
	copy(f[start:], hdr)
	return f[start:]
}

// appendJSONString appends s as a JSON string. Names and ids are short and
// nearly always plain ASCII, so the common case is a straight copy.
func appendJSONString(dst []byte, s string) []byte {
	plain := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			plain = false
			break
		}
	}
	if plain {
		dst = append(dst, '"')
		dst = append(dst, s...)
		return append(dst, '"')
	}
	b, _ := json.Marshal(s) // a string always marshals
	return append(dst, b...)
}
