//go:build linux

package main

import (
	"bytes"
	"encoding/binary"
	"errors"
)

// A minimal reader for server-to-client frames (RFC 6455 section 5): the
// server never masks, so a frame is a 2, 4 or 10 byte header and the payload.
// Nothing here allocates; payload slices point into the caller's buffer.

const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA

	maxFrame = 1 << 20 // larger server frames are treated as a protocol error
)

var (
	errMasked   = errors.New("server frame is masked")
	errTooLarge = errors.New("server frame too large")
)

// frame is one parsed frame header plus its payload.
type frame struct {
	fin     bool
	op      byte
	payload []byte
}

// nextFrame parses the frame at the start of b. It returns the number of
// bytes the frame takes, or 0 when b does not hold a whole frame yet.
func nextFrame(b []byte) (frame, int, error) {
	if len(b) < 2 {
		return frame{}, 0, nil
	}
	if b[1]&0x80 != 0 {
		return frame{}, 0, errMasked
	}
	hdr, n := 2, uint64(b[1]&0x7f)
	switch n {
	case 126:
		if len(b) < 4 {
			return frame{}, 0, nil
		}
		hdr, n = 4, uint64(binary.BigEndian.Uint16(b[2:4]))
	case 127:
		if len(b) < 10 {
			return frame{}, 0, nil
		}
		hdr, n = 10, binary.BigEndian.Uint64(b[2:10])
	}
	if n > maxFrame {
		return frame{}, 0, errTooLarge
	}
	end := hdr + int(n)
	if len(b) < end {
		return frame{}, 0, nil
	}
	return frame{fin: b[0]&0x80 != 0, op: b[0] & 0x0f, payload: b[hdr:end]}, end, nil
}

// clientControl appends a masked control frame (client frames must be
// masked) with the given payload, at most 125 bytes, to dst.
func clientControl(dst []byte, op byte, payload []byte) []byte {
	if len(payload) > 125 {
		payload = payload[:125]
	}
	// A fixed key is allowed by the RFC's wire format; the unpredictability it
	// asks for guards browsers against cache poisoning, not a load generator.
	key := [4]byte{0x5a, 0xc3, 0x17, 0x9e}
	dst = append(dst, 0x80|op, 0x80|byte(len(payload)), key[0], key[1], key[2], key[3])
	for i, c := range payload {
		dst = append(dst, c^key[i&3])
	}
	return dst
}

var (
	keySeq    = []byte(`"seq":`)
	keySentAt = []byte(`"sentAt":`)
)

// benchFields finds the load generator's "seq" and "sentAt" numbers in a
// notification, wherever the server put them inside the frame. ok is false
// when the frame carries no seq (not one of our broadcasts).
func benchFields(msg []byte) (seq, sentAt int64, ok bool) {
	seq, ok = intField(msg, keySeq)
	if !ok {
		return 0, 0, false
	}
	sentAt, _ = intField(msg, keySentAt)
	return seq, sentAt, true
}

// intField reads the integer after key, allowing spaces, a quoted number and
// a float rendering of an integer ("1.7e+18" is not handled, "17.0" is).
func intField(msg, key []byte) (int64, bool) {
	i := bytes.Index(msg, key)
	if i < 0 {
		return 0, false
	}
	b := msg[i+len(key):]
	for len(b) > 0 && (b[0] == ' ' || b[0] == '"') {
		b = b[1:]
	}
	var v int64
	n := 0
	for n < len(b) && b[n] >= '0' && b[n] <= '9' {
		v = v*10 + int64(b[n]-'0')
		n++
	}
	return v, n > 0
}

var keyBookingID = []byte(`"bookingId":`)

// keyLgUser names the recipient's index in a targeted event's data
// (`loadgen xlatency`), so that a client can tell it was meant for it.
var keyLgUser = []byte(`"lgUser":`)

// bookingFields reads the "bookingId" that `loadgen webhooks` puts in each
// webhook's data.id, "<seq>-<user>-<sentAt unix ns>", and that the shipped
// booking-created rule passes through. ok is false when the frame has none
// or it is not of that form.
func bookingFields(msg []byte) (seq, user, sentAt int64, ok bool) {
	i := bytes.Index(msg, keyBookingID)
	if i < 0 {
		return 0, 0, 0, false
	}
	b := msg[i+len(keyBookingID):]
	for len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}
	if len(b) == 0 || b[0] != '"' {
		return 0, 0, 0, false
	}
	b = b[1:]
	var v [3]int64
	for k := range v {
		n := 0
		for n < len(b) && b[n] >= '0' && b[n] <= '9' {
			v[k] = v[k]*10 + int64(b[n]-'0')
			n++
		}
		want := byte('-')
		if k == 2 {
			want = '"'
		}
		if n == 0 || n >= len(b) || b[n] != want {
			return 0, 0, 0, false
		}
		b = b[n+1:]
	}
	return v[0], v[1], v[2], true
}
