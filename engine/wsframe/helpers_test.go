package wsframe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

// event is one Handler call, with its payload copied.
type event struct {
	kind string // "message", "ping", "pong" or "close"
	op   ws.OpCode
	code ws.StatusCode
	data string
}

func (e event) String() string {
	d := e.data
	if len(d) > 24 {
		d = fmt.Sprintf("%.24s...(%d bytes)", d, len(d))
	}
	switch e.kind {
	case "message":
		return fmt.Sprintf("message(%d, %q)", e.op, d)
	case "close":
		return fmt.Sprintf("close(%d, %q)", e.code, d)
	}
	return fmt.Sprintf("%s(%q)", e.kind, d)
}

func message(op ws.OpCode, s string) event { return event{kind: "message", op: op, data: s} }
func text(s string) event                  { return message(ws.OpText, s) }
func binaryMsg(s string) event             { return message(ws.OpBinary, s) }
func ping(s string) event                  { return event{kind: "ping", data: s} }
func pong(s string) event                  { return event{kind: "pong", data: s} }
func closed(c ws.StatusCode, s string) event {
	return event{kind: "close", code: c, data: s}
}

// recorder is a Handler that records every call.
type recorder struct{ events []event }

func (r *recorder) OnMessage(op ws.OpCode, p []byte) {
	r.events = append(r.events, message(op, string(p)))
}
func (r *recorder) OnPing(p []byte) { r.events = append(r.events, ping(string(p))) }
func (r *recorder) OnPong(p []byte) { r.events = append(r.events, pong(string(p))) }
func (r *recorder) OnClose(code ws.StatusCode, reason []byte) {
	r.events = append(r.events, closed(code, string(reason)))
}

// result is everything a decode produced: the events and the close code of
// the error, 0 if none.
type result struct {
	events []event
	code   ws.StatusCode
}

func (r result) equal(o result) bool {
	if r.code != o.code || len(r.events) != len(o.events) {
		return false
	}
	for i := range r.events {
		if r.events[i] != o.events[i] {
			return false
		}
	}
	return true
}

func (r result) String() string {
	return fmt.Sprintf("%v code=%d", r.events, r.code)
}

// decode feeds a copy of stream to a fresh Reader in pieces of the given
// sizes (the last piece takes the rest) and checks the Reader's invariants
// after every Feed.
func decode(t testing.TB, stream []byte, maxMessage int, sizes []int) result {
	t.Helper()
	p := bytes.Clone(stream)
	r := Reader{MaxMessage: maxMessage}
	defer r.Release()
	var rec recorder
	for i := 0; len(p) > 0; i++ {
		n := len(p)
		if i < len(sizes) {
			n = min(max(sizes[i], 1), len(p))
		}
		err := r.Feed(p[:n], &rec)
		p = p[n:]
		checkInvariants(t, &r)
		if err != nil {
			var ce *CloseError
			if !errors.As(err, &ce) {
				t.Fatalf(
					"Feed error %T %v, want *CloseError",
					err, err)
			}
			switch ce.Code {
			case ws.StatusProtocolError, ws.StatusInvalidFramePayloadData, ws.StatusMessageTooBig:
			default:
				t.Fatalf(
					"Feed error code %d (%v), want 1002, 1007 or 1009",
					ce.Code, ce)
			}
			if !r.Idle() {
				t.Fatalf(
					"Idle() = false after error %v",
					err)
			}
			return result{events: rec.events, code: ce.Code}
		}
	}
	return result{events: rec.events}
}

// checkInvariants checks that an idle Reader holds no buffer and that no
// buffer is bigger than MaxMessage calls for.
func checkInvariants(t testing.TB, r *Reader) {
	t.Helper()
	if r.Idle() && (r.buf != nil || r.ctl != nil) {
		t.Fatalf(
			"Idle() = true with buf %v ctl %v",
			r.buf != nil, r.ctl != nil)
	}
	if r.buf != nil {
		if limit := bufCap(max(r.MaxMessage, 0)); cap(*r.buf) > limit {
			t.Fatalf(
				"buffer cap %d over %d for MaxMessage %d",
				cap(*r.buf), limit, r.MaxMessage)
		}
	}
	if r.ctl != nil && cap(*r.ctl) > tierSizes[0] {
		t.Fatalf(
			"control buffer cap %d over %d",
			cap(*r.ctl), tierSizes[0])
	}
}

// Split strategies: every case is decoded with each and must give the same.
func wholeSizes(n int) []int { return []int{n} }

func byteSizes(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = 1
	}
	return s
}

func randomSizes(n int, seed uint64) []int {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var s []int
	for left := n; left > 0; {
		k := 1 + rng.IntN(min(left, 1+rng.IntN(64)))
		if rng.IntN(8) == 0 {
			k = left // sometimes everything that is left
		}
		s = append(s, k)
		left -= k
	}
	return s
}

// testMask is a masking key with four distinct bytes, so a payload unmasked
// at the wrong offset cannot come out right.
var testMask = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// frame compiles a masked client frame.
func frame(op ws.OpCode, fin bool, payload string) []byte {
	return compile(ws.MaskFrameWith(ws.NewFrame(op, fin, []byte(payload)), testMask))
}

// unmaskedFrame compiles a frame as a server would send it.
func unmaskedFrame(op ws.OpCode, payload string) []byte {
	return compile(ws.NewFrame(op, true, []byte(payload)))
}

func rsvFrame(op ws.OpCode, rsv byte, payload string) []byte {
	f := ws.MaskFrameWith(ws.NewFrame(op, true, []byte(payload)), testMask)
	f.Header.Rsv = rsv
	return compile(f)
}

func compile(f ws.Frame) []byte {
	b, err := ws.CompileFrame(f)
	if err != nil {
		panic(err)
	}
	return b
}

// header compiles only the header of a masked frame of the given length.
func header(op ws.OpCode, fin bool, length int64) []byte {
	var b bytes.Buffer
	err := ws.WriteHeader(&b, ws.Header{Fin: fin, OpCode: op, Masked: true, Mask: testMask, Length: length})
	if err != nil {
		panic(err)
	}
	return b.Bytes()
}

// msbHeader is a masked binary frame header whose 64-bit length has its most
// significant bit set, which ws.WriteHeader refuses to write.
func msbHeader() []byte {
	h := []byte{0x82, 0x80 | 127}
	h = binary.BigEndian.AppendUint64(h, 1<<63|5)
	return append(h, testMask[:]...)
}

func closeBody(code ws.StatusCode, reason string) string {
	b := make([]byte, 2+len(reason))
	ws.PutCloseFrameBody(b, code, reason)
	return string(b)
}

func cat(frames ...[]byte) []byte { return bytes.Join(frames, nil) }

// fragments splits s into n-byte fragments of one message.
func fragments(op ws.OpCode, s string, n int) []byte {
	var out []byte
	for i := 0; i < len(s) || i == 0; i += n {
		end := min(i+n, len(s))
		fop := op
		if i > 0 {
			fop = ws.OpContinuation
		}
		out = append(out, frame(fop, end == len(s), s[i:end])...)
	}
	return out
}

var long = strings.Repeat("0123456789", 7000) // 70,000 bytes: 64-bit length, over maxTier
