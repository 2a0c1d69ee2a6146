//go:build linux

package main

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

// wire is the encoding of a server frame, built by gobwas/ws so that the
// expectations do not come from the code under test.
func wire(op ws.OpCode, fin bool, payload []byte) []byte {
	return ws.MustCompileFrame(ws.NewFrame(op, fin, payload))
}

// header is a bare frame header for length n, with no payload after it.
func header(h ws.Header) []byte {
	var b bytes.Buffer
	if err := ws.WriteHeader(&b, h); err != nil {
		panic(err)
	}
	return b.Bytes()
}

func concat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

type nextFrameCase struct {
	name    string
	in      []byte
	fin     bool
	op      byte
	payload []byte
	n       int // 0: need more (or error)
	err     error
}

// nextFrameCases are shared by TestNextFrame and the FuzzNextFrame seeds.
func nextFrameCases() []nextFrameCase {
	hello := []byte("hello")
	p125 := bytes.Repeat([]byte("a"), 125)
	p126 := bytes.Repeat([]byte("b"), 126)
	p64k := bytes.Repeat([]byte("c"), 65535)
	p64k1 := bytes.Repeat([]byte("d"), 65536)
	pMax := bytes.Repeat([]byte("e"), maxFrame)
	closeBody := ws.NewCloseFrameBody(ws.StatusGoingAway, "bye")
	rsv1 := ws.NewTextFrame(hello)
	rsv1.Header.Rsv = ws.Rsv(true, false, false)
	text := wire(ws.OpText, true, hello)

	return []nextFrameCase{
		{name: "text 7-bit", in: text, fin: true, op: opText, payload: hello, n: 7},
		{name: "text empty", in: wire(ws.OpText, true, nil), fin: true, op: opText, payload: []byte{}, n: 2},
		{name: "text 125 (largest 7-bit)", in: wire(ws.OpText, true, p125), fin: true, op: opText, payload: p125, n: 2 + 125},
		{name: "text 126 (smallest 16-bit)", in: wire(ws.OpText, true, p126), fin: true, op: opText, payload: p126, n: 4 + 126},
		{name: "binary 65535 (largest 16-bit)", in: wire(ws.OpBinary, true, p64k), fin: true, op: opBinary, payload: p64k, n: 4 + 65535},
		{name: "binary 65536 (64-bit)", in: wire(ws.OpBinary, true, p64k1), fin: true, op: opBinary, payload: p64k1, n: 10 + 65536},
		{name: "text maxFrame", in: wire(ws.OpText, true, pMax), fin: true, op: opText, payload: pMax, n: 10 + maxFrame},
		{name: "text maxFrame+1 rejected from the header", in: header(ws.Header{Fin: true, OpCode: ws.OpText, Length: maxFrame + 1}), err: errTooLarge},
		{name: "64-bit length with MSB set", in: []byte{0x81, 127, 0x80, 0, 0, 0, 0, 0, 0, 0}, err: errTooLarge},
		{name: "ping", in: wire(ws.OpPing, true, []byte("p1")), fin: true, op: opPing, payload: []byte("p1"), n: 4},
		{name: "pong empty", in: wire(ws.OpPong, true, nil), fin: true, op: opPong, payload: []byte{}, n: 2},
		{name: "close with code", in: wire(ws.OpClose, true, closeBody), fin: true, op: opClose, payload: closeBody, n: 2 + 5},
		{name: "first fragment", in: wire(ws.OpText, false, []byte("frag")), fin: false, op: opText, payload: []byte("frag"), n: 6},
		{name: "last continuation", in: wire(ws.OpContinuation, true, []byte("ment")), fin: true, op: opContinuation, payload: []byte("ment"), n: 6},
		{name: "next frame's bytes are left alone", in: concat(text, wire(ws.OpPing, true, nil), []byte{0x81}), fin: true, op: opText, payload: hello, n: 7},
		// Not minimal, which RFC 6455 forbids; gobwas accepts it too.
		{name: "16-bit length for 5 bytes", in: []byte{0x81, 126, 0, 5, 'h', 'e', 'l', 'l', 'o'}, fin: true, op: opText, payload: hello, n: 9},
		// Neither RSV bits nor reserved opcodes are rejected: the op keeps
		// only the low nibble, and the worker ignores opcodes it does not know.
		{name: "rsv1 set is accepted", in: ws.MustCompileFrame(rsv1), fin: true, op: opText, payload: hello, n: 7},
		{name: "reserved opcode 0x3 is passed through", in: []byte{0x83, 1, 'x'}, fin: true, op: 0x3, payload: []byte("x"), n: 3},

		{name: "empty", in: nil},
		{name: "one byte", in: text[:1]},
		{name: "7-bit payload short by one", in: text[:6]},
		{name: "16-bit header cut after the length marker", in: wire(ws.OpText, true, p126)[:3]},
		{name: "16-bit payload short by one", in: wire(ws.OpText, true, p126)[:4+125]},
		{name: "64-bit header cut", in: wire(ws.OpBinary, true, p64k1)[:9]},
		{name: "64-bit header only", in: wire(ws.OpBinary, true, p64k1)[:10]},

		{name: "masked", in: ws.MustCompileFrame(ws.MaskFrameWith(ws.NewTextFrame(hello), [4]byte{1, 2, 3, 4})), err: errMasked},
		{name: "masked, known from two bytes", in: []byte{0x81, 0x85}, err: errMasked},
	}
}

func TestNextFrame(t *testing.T) {
	for _, tc := range nextFrameCases() {
		t.Run(tc.name, func(t *testing.T) {
			f, n, err := nextFrame(tc.in)
			if !errors.Is(err, tc.err) || n != tc.n {
				t.Fatalf("nextFrame(% x...) = n %d, err %v; want n %d, err %v", prefix(tc.in), n, err, tc.n, tc.err)
			}
			if n == 0 {
				if f.fin || f.op != 0 || f.payload != nil {
					t.Errorf("nextFrame(% x...) = %+v with n 0, want the zero frame", prefix(tc.in), f)
				}
				return
			}
			if f.fin != tc.fin || f.op != tc.op || !bytes.Equal(f.payload, tc.payload) {
				t.Errorf("nextFrame(% x...) = fin %v op %#x payload %q..., want fin %v op %#x payload %q...",
					prefix(tc.in), f.fin, f.op, prefix(f.payload), tc.fin, tc.op, prefix(tc.payload))
			}
			// Zero copy: the payload is the tail of the frame inside tc.in.
			if len(f.payload) > 0 && &f.payload[0] != &tc.in[n-len(f.payload)] {
				t.Errorf("payload is a copy, want a slice of the input")
			}
			// Every proper prefix of a whole frame means "need more".
			for i := range n {
				if i > 64 && i < n-64 {
					continue // the header and the payload's ends are what matter
				}
				if pf, pn, perr := nextFrame(tc.in[:i]); pn != 0 || perr != nil || pf.payload != nil {
					t.Fatalf("nextFrame(first %d of %d bytes) = n %d, err %v; want 0, nil", i, n, pn, perr)
				}
			}
		})
	}
}

func prefix(b []byte) []byte { return b[:min(len(b), 16)] }

// FuzzNextFrame checks nextFrame against gobwas/ws on any input: no panic,
// never more than the input consumed, and a frame it reports is the frame
// gobwas reads; when it asks for more, gobwas cannot read a whole frame.
func FuzzNextFrame(f *testing.F) {
	for _, tc := range nextFrameCases() {
		if len(tc.in) <= 1<<16+16 {
			f.Add(tc.in)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, n, err := nextFrame(b)
		if n < 0 || n > len(b) {
			t.Fatalf("n = %d for %d bytes", n, len(b))
		}
		if err != nil && n != 0 {
			t.Fatalf("n = %d with err %v", n, err)
		}
		r := bytes.NewReader(b)
		h, herr := ws.ReadHeader(r)
		hdr := len(b) - r.Len() // header bytes gobwas read
		switch {
		case errors.Is(err, errMasked):
			if b[1]&0x80 == 0 {
				t.Fatalf("errMasked, but the mask bit is clear in % x", prefix(b))
			}
		case errors.Is(err, errTooLarge):
			if herr == nil && h.Length <= maxFrame || herr != nil && !errors.Is(herr, ws.ErrHeaderLengthMSB) {
				t.Fatalf("errTooLarge; gobwas reads length %d, err %v", h.Length, herr)
			}
		case err != nil:
			t.Fatalf("unexpected error %v", err)
		case n == 0: // need more
			if herr != nil {
				if herr != io.EOF && herr != io.ErrUnexpectedEOF {
					t.Fatalf("need more; gobwas ReadHeader: %v", herr)
				}
				return
			}
			if h.Masked || h.Length > maxFrame || int64(hdr)+h.Length <= int64(len(b)) {
				t.Fatalf("need more; gobwas reads a whole %+v (header %d bytes) from %d bytes", h, hdr, len(b))
			}
		default: // a whole frame
			if herr != nil {
				t.Fatalf("frame of %d bytes; gobwas ReadHeader: %v", n, herr)
			}
			if h.Masked || h.Fin != fr.fin || byte(h.OpCode) != fr.op || h.Length != int64(len(fr.payload)) || hdr+len(fr.payload) != n {
				t.Fatalf("nextFrame = fin %v op %#x len %d n %d; gobwas %+v, header %d bytes", fr.fin, fr.op, len(fr.payload), n, h, hdr)
			}
			if !bytes.Equal(fr.payload, b[hdr:n]) {
				t.Fatalf("payload differs from the bytes after the header")
			}
			// The frame does not depend on what follows it.
			if fr2, n2, err2 := nextFrame(b[:n]); n2 != n || err2 != nil || fr2.fin != fr.fin || fr2.op != fr.op || !bytes.Equal(fr2.payload, fr.payload) {
				t.Fatalf("nextFrame(b[:%d]) = n %d, err %v; differs from nextFrame(b)", n, n2, err2)
			}
		}
	})
}

func TestClientControl(t *testing.T) {
	long := bytes.Repeat([]byte("z"), 200)
	for _, tc := range []struct {
		name    string
		op      byte
		payload []byte
		want    []byte // what the server unmasks
	}{
		{"ping empty", opPing, nil, []byte{}},
		{"pong echo", opPong, []byte("p1"), []byte("p1")},
		{"close code", opClose, []byte{0x03, 0xe8}, []byte{0x03, 0xe8}},
		{"pong 125", opPong, long[:125], long[:125]},
		{"pong 200 cut to 125", opPong, long, long[:125]},
		{"payload of five, mask key wraps", opPing, []byte("abcde"), []byte("abcde")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]byte(nil), tc.payload...)
			dst := []byte("prefix")
			out := clientControl(dst, tc.op, in)
			if !bytes.Equal(in, tc.payload) {
				t.Errorf("clientControl changed its payload argument")
			}
			if !bytes.HasPrefix(out, []byte("prefix")) {
				t.Fatalf("clientControl(%q, ...) = %q, want it appended to dst", "prefix", out)
			}
			r := bytes.NewReader(out[len("prefix"):])
			f, err := ws.ReadFrame(r)
			if err != nil {
				t.Fatalf("ws.ReadFrame: %v", err)
			}
			if r.Len() != 0 {
				t.Errorf("%d bytes left after the frame", r.Len())
			}
			h := f.Header
			if !h.Fin || byte(h.OpCode) != tc.op || !h.Masked || h.Rsv != 0 || h.Length != int64(len(tc.want)) {
				t.Errorf("header = %+v, want fin, op %#x, masked, rsv 0, length %d", h, tc.op, len(tc.want))
			}
			if err := ws.CheckHeader(h, ws.StateServerSide); err != nil {
				t.Errorf("ws.CheckHeader (as a server): %v", err)
			}
			ws.Cipher(f.Payload, h.Mask, 0)
			if !bytes.Equal(f.Payload, tc.want) {
				t.Errorf("unmasked payload = %q, want %q", f.Payload, tc.want)
			}
		})
	}
}

const benchFrame = `{"event":"newNotification","data":{"title":"loadgen","message":"benchmark broadcast","type":"info","seq":42,"sentAt":1700000000123456789},"id":"7"}`

func TestBenchFields(t *testing.T) {
	for _, tc := range []struct {
		name        string
		msg         string
		seq, sentAt int64
		ok          bool
	}{
		{"sidecar frame", benchFrame, 42, 1700000000123456789, true},
		{"seq first in a bare body", `{"seq":0,"sentAt":1}`, 0, 1, true},
		{"sentAt absent", `{"data":{"seq":5}}`, 5, 0, true},
		{"sentAt malformed", `{"seq":5,"sentAt":null}`, 5, 0, true},
		{"seq absent", `{"data":{"sentAt":5}}`, 0, 0, false},
		{"empty", ``, 0, 0, false},
		{"seq null", `{"seq":null,"sentAt":5}`, 0, 0, false},
		{"seq a word", `{"seq":"abc","sentAt":5}`, 0, 0, false},
		{"seq negative", `{"seq":-5,"sentAt":5}`, 0, 0, false},
		{"sentAt negative", `{"seq":5,"sentAt":-5}`, 5, 0, true},
		{"seq at the end", `{"seq":`, 0, 0, false},
		{"spaces and quotes", `{"seq": "12" ,"sentAt":  "34"}`, 12, 34, true},
		{"float rendering", `{"seq":17.0,"sentAt":2.5}`, 17, 2, true},
		{"exponent is cut at the dot", `{"seq":1.7e+18}`, 1, 0, true},
		{"leading zeros", `{"seq":007}`, 7, 0, true},
		{"digits then junk", `{"seq":"12abc"}`, 12, 0, true},
		{"max int64", `{"seq":9223372036854775807,"sentAt":9223372036854775807}`, 1<<63 - 1, 1<<63 - 1, true},
		// Overflow is not detected: 2^63 wraps to -2^63. Our own bodies
		// carry unix nanoseconds (19 digits, < 2^63), so only a foreign
		// frame can get here.
		{"20 digits wrap", `{"seq":9223372036854775808}`, -1 << 63, 0, true},
		{"longer key with seq as prefix", `{"seqNo":9,"seq":3,"sentAtMs":8,"sentAt":4}`, 3, 4, true},
		{"key ending in seq", `{"xseq":9,"sentAt":4}`, 0, 0, false},
		{"space before the colon is not found", `{"seq" :3}`, 0, 0, false},
		{"seq inside an escaped string", `{"message":"\"seq\":9 \"sentAt\":8","seq":3,"sentAt":4}`, 3, 4, true},
		{"seq as a string value", `{"note":"seq","n":1}`, 0, 0, false},
		{"first occurrence wins", `{"data":{"meta":{"seq":1},"seq":2}}`, 1, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seq, sentAt, ok := benchFields([]byte(tc.msg))
			if seq != tc.seq || sentAt != tc.sentAt || ok != tc.ok {
				t.Errorf("benchFields(%q) = %d, %d, %v; want %d, %d, %v", tc.msg, seq, sentAt, ok, tc.seq, tc.sentAt, tc.ok)
			}
		})
	}
}

func TestIntField(t *testing.T) {
	for _, tc := range []struct {
		msg, key string
		want     int64
		ok       bool
	}{
		{`{"n":12}`, `"n":`, 12, true},
		{`{"n":12}`, `"m":`, 0, false},
		{`{"n":""}`, `"n":`, 0, false},
		{`{"n":"  "}`, `"n":`, 0, false},
		{`{"n":" 3"}`, `"n":`, 3, true},
		{`{"n":+3}`, `"n":`, 0, false},
		{`"n":1`, `"n":`, 1, true},
		{`{"n":12}`, ``, 0, false}, // an empty key matches at 0, where no digit is
	} {
		got, ok := intField([]byte(tc.msg), []byte(tc.key))
		if got != tc.want || ok != tc.ok {
			t.Errorf("intField(%q, %q) = %d, %v; want %d, %v", tc.msg, tc.key, got, ok, tc.want, tc.ok)
		}
	}
}

func TestBookingFieldsEdgeCases(t *testing.T) {
	for _, tc := range []struct {
		name              string
		msg               string
		seq, user, sentAt int64
		ok                bool
	}{
		{"rule output", `{"event":"newNotification","data":{"type":"booking_created","bookingId":"17-3-1700000000123456789","providerId":"u3"},"id":"1-2"}`, 17, 3, 1700000000123456789, true},
		{"spaces before the quote", `{"bookingId":   "1-2-3"}`, 1, 2, 3, true},
		{"absent", `{"id":"1-2-3"}`, 0, 0, 0, false},
		{"a number, not a string", `{"bookingId":123}`, 0, 0, 0, false},
		{"nothing after the key", `{"bookingId":`, 0, 0, 0, false},
		{"space inside the string", `{"bookingId":" 1-2-3"}`, 0, 0, 0, false},
		{"negative seq", `{"bookingId":"-1-2-3"}`, 0, 0, 0, false},
		{"empty part", `{"bookingId":"1--3"}`, 0, 0, 0, false},
		{"four parts", `{"bookingId":"1-2-3-4"}`, 0, 0, 0, false},
		{"letters after the digits", `{"bookingId":"1-2-3x"}`, 0, 0, 0, false},
		{"cut after the last digit", `{"bookingId":"1-2-3`, 0, 0, 0, false},
		{"max int64", `{"bookingId":"9223372036854775807-0-9223372036854775807"}`, 1<<63 - 1, 0, 1<<63 - 1, true},
		// Unchecked overflow, as in intField.
		{"20 digits wrap", `{"bookingId":"9223372036854775808-1-2"}`, -1 << 63, 1, 2, true},
		{"longer key with bookingId as prefix", `{"bookingIdx":"9-9-9","bookingId":"1-2-3"}`, 1, 2, 3, true},
		{"inside an escaped string", `{"note":"\"bookingId\":\"9-9-9\"","bookingId":"1-2-3"}`, 1, 2, 3, true},
		{"first occurrence wins, even if malformed", `{"bookingId":"x","data":{"bookingId":"1-2-3"}}`, 0, 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seq, user, sentAt, ok := bookingFields([]byte(tc.msg))
			if seq != tc.seq || user != tc.user || sentAt != tc.sentAt || ok != tc.ok {
				t.Errorf("bookingFields(%q) = %d, %d, %d, %v; want %d, %d, %d, %v",
					tc.msg, seq, user, sentAt, ok, tc.seq, tc.user, tc.sentAt, tc.ok)
			}
		})
	}
}

// TestFrameParsersDoNotAllocate holds frame.go to its "nothing here
// allocates" comment: these run once per received frame.
func TestFrameParsersDoNotAllocate(t *testing.T) {
	text := wire(ws.OpText, true, []byte(benchFrame))
	booking := []byte(`{"data":{"bookingId":"17-3-1700000000123456789"}}`)
	dst := make([]byte, 0, ws.MaxHeaderSize+125)
	payload := []byte(strings.Repeat("p", 125))
	var sink int64
	for _, tc := range []struct {
		name string
		fn   func()
	}{
		{"nextFrame", func() { f, n, _ := nextFrame(text); sink += int64(n + len(f.payload)) }},
		{"nextFrame partial", func() { _, n, _ := nextFrame(text[:5]); sink += int64(n) }},
		{"benchFields", func() { s, a, _ := benchFields(text); sink += s + a }},
		{"intField", func() { v, _ := intField(text, keySeq); sink += v }},
		{"bookingFields", func() { s, u, a, _ := bookingFields(booking); sink += s + u + a }},
		{"clientControl", func() { dst = clientControl(dst[:0], opPong, payload) }},
	} {
		if got := testing.AllocsPerRun(100, tc.fn); got != 0 {
			t.Errorf("%s: %v allocs per run, want 0", tc.name, got)
		}
	}
	_ = sink
}
