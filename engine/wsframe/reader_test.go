package wsframe

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unsafe"

	"github.com/gobwas/ws"
)

const testMax = 64 << 10

type readerCase struct {
	name   string
	max    int // MaxMessage; testMax if 0
	stream []byte
	want   []event
	code   ws.StatusCode // close code of the expected error, 0 for none
}

func readerCases() []readerCase {
	big := strings.Repeat("x", 100)
	cases := []readerCase{
		// Well-formed traffic.
		{
			name:   "text",
			stream: frame(ws.OpText, true, "hello"),
			want:   []event{text("hello")},
		},
		{
			name:   "empty text",
			stream: frame(ws.OpText, true, ""),
			want:   []event{text("")},
		},
		{
			name:   "binary passes invalid UTF-8 through",
			stream: frame(ws.OpBinary, true, "\xff\xfe\x00"),
			want:   []event{binaryMsg("\xff\xfe\x00")},
		},
		{
			name: "several messages in a row",
			stream: cat(
				frame(ws.OpText, true, "a"),
				frame(ws.OpBinary, true, "bc"),
				frame(ws.OpText, true, "κόσμε")),
			want: []event{text("a"), binaryMsg("bc"), text("κόσμε")},
		},
		{
			name:   "16-bit length",
			stream: frame(ws.OpText, true, strings.Repeat("é", 150)),
			want:   []event{text(strings.Repeat("é", 150))},
		},
		{
			name:   "64-bit length over the largest pool tier",
			max:    1 << 20,
			stream: frame(ws.OpText, true, long),
			want:   []event{text(long)},
		},
		{
			name:   "fragmented 64-bit message",
			max:    1 << 20,
			stream: fragments(ws.OpBinary, long, 30000),
			want:   []event{binaryMsg(long)},
		},
		{
			name:   "fragmented text",
			stream: fragments(ws.OpText, "hello, world", 5),
			want:   []event{text("hello, world")},
		},
		{
			name: "fragments with empty ones",
			stream: cat(
				frame(ws.OpText, false, ""),
				frame(ws.OpContinuation, false, "ab"),
				frame(ws.OpContinuation, false, ""),
				frame(ws.OpContinuation, true, "")),
			want: []event{text("ab")},
		},
		{
			name: "empty fragmented message",
			stream: cat(
				frame(ws.OpBinary, false, ""),
				frame(ws.OpContinuation, true, "")),
			want: []event{binaryMsg("")},
		},

		// Case 1: unmasked.
		{
			name:   "unmasked text",
			stream: unmaskedFrame(ws.OpText, "hi"),
			code:   ws.StatusProtocolError,
		},
		{
			name:   "unmasked ping",
			stream: unmaskedFrame(ws.OpPing, ""),
			code:   ws.StatusProtocolError,
		},
		{
			name:   "unmasked frame after a good message",
			stream: cat(frame(ws.OpText, true, "ok"), unmaskedFrame(ws.OpBinary, "x")),
			want:   []event{text("ok")},
			code:   ws.StatusProtocolError,
		},

		// Case 4: control frame payload size.
		{
			name:   "ping of 125 bytes",
			stream: frame(ws.OpPing, true, strings.Repeat("p", 125)),
			want:   []event{ping(strings.Repeat("p", 125))},
		},
		{
			name:   "empty ping",
			stream: frame(ws.OpPing, true, ""),
			want:   []event{ping("")},
		},
		{
			name:   "ping of 126 bytes",
			stream: frame(ws.OpPing, true, strings.Repeat("p", 126)),
			code:   ws.StatusProtocolError,
		},
		{
			name:   "pong of 126 bytes",
			stream: frame(ws.OpPong, true, strings.Repeat("p", 126)),
			code:   ws.StatusProtocolError,
		},
		{
			name:   "close of 126 bytes",
			stream: frame(ws.OpClose, true, closeBody(1000, strings.Repeat("r", 124))),
			code:   ws.StatusProtocolError,
		},
		{
			name:   "ping with a 64-bit length",
			stream: header(ws.OpPing, true, 1<<40),
			code:   ws.StatusProtocolError,
		},

		// Case 5: fragmented control frames.
		{
			name:   "ping with FIN=0",
			stream: frame(ws.OpPing, false, "x"),
			code:   ws.StatusProtocolError,
		},
		{
			name:   "pong with FIN=0",
			stream: frame(ws.OpPong, false, ""),
			code:   ws.StatusProtocolError,
		},
		{
			name:   "close with FIN=0",
			stream: frame(ws.OpClose, false, closeBody(1000, "")),
			code:   ws.StatusProtocolError,
		},

		// Case 6: continuation out of place.
		{
			name:   "continuation with no message",
			stream: frame(ws.OpContinuation, true, "x"),
			code:   ws.StatusProtocolError,
		},
		{
			name:   "non-final continuation with no message",
			stream: frame(ws.OpContinuation, false, "x"),
			code:   ws.StatusProtocolError,
		},
		{
			name:   "continuation after a complete message",
			stream: cat(frame(ws.OpText, true, "a"), frame(ws.OpContinuation, true, "b")),
			want:   []event{text("a")},
			code:   ws.StatusProtocolError,
		},
		{
			name:   "text inside a fragmented text",
			stream: cat(frame(ws.OpText, false, "a"), frame(ws.OpText, true, "b")),
			code:   ws.StatusProtocolError,
		},
		{
			name:   "binary inside a fragmented text",
			stream: cat(frame(ws.OpText, false, "a"), frame(ws.OpBinary, true, "b")),
			code:   ws.StatusProtocolError,
		},

		// Cases 7 and 9: control frames between fragments, pongs.
		{
			name: "ping between fragments",
			stream: cat(
				frame(ws.OpText, false, "Hel"),
				frame(ws.OpPing, true, "are you there"),
				frame(ws.OpContinuation, true, "lo")),
			want: []event{ping("are you there"), text("Hello")},
		},
		{
			name: "pings and pongs between every fragment",
			stream: cat(
				frame(ws.OpBinary, false, "a"),
				frame(ws.OpPing, true, strings.Repeat("1", 125)),
				frame(ws.OpContinuation, false, "b"),
				frame(ws.OpPong, true, "2"),
				frame(ws.OpPing, true, ""),
				frame(ws.OpContinuation, true, "c")),
			want: []event{ping(strings.Repeat("1", 125)), pong("2"), ping(""), binaryMsg("abc")},
		},
		{
			name: "ping between fragments of a split character",
			stream: cat(
				frame(ws.OpText, false, "\xe2\x82"),
				frame(ws.OpPing, true, "p"),
				frame(ws.OpContinuation, true, "\xac")),
			want: []event{ping("p"), text("€")},
		},
		{
			name:   "unsolicited pong",
			stream: cat(frame(ws.OpPong, true, "beat"), frame(ws.OpText, true, "still open")),
			want:   []event{pong("beat"), text("still open")},
		},

		// Case 8: UTF-8.
		{
			name:   "invalid UTF-8 in a single frame",
			stream: frame(ws.OpText, true, "κόσμε\xed\xa0\x80edited"),
			code:   ws.StatusInvalidFramePayloadData,
		},
		{
			name:   "overlong encoding",
			stream: frame(ws.OpText, true, "\xc0\xaf"),
			code:   ws.StatusInvalidFramePayloadData,
		},
		{
			name: "invalid UTF-8 in a later fragment, message never finished",
			stream: cat(
				frame(ws.OpText, false, "fine"),
				frame(ws.OpContinuation, false, "\xff")),
			code: ws.StatusInvalidFramePayloadData,
		},
		{
			name:   "invalid UTF-8 reported before the frame ends",
			stream: append(header(ws.OpText, true, 1000), frame(ws.OpText, true, "ok\xff")[6:]...),
			code:   ws.StatusInvalidFramePayloadData,
		},
		{
			name: "bad continuation byte after a split lead",
			stream: cat(
				frame(ws.OpText, false, "\xf0"),
				frame(ws.OpContinuation, false, "\x9f"),
				frame(ws.OpContinuation, true, "\x41")),
			code: ws.StatusInvalidFramePayloadData,
		},
		{
			name:   "valid UTF-8 split at every byte",
			stream: fragments(ws.OpText, "κόσμε😀€", 1),
			want:   []event{text("κόσμε😀€")},
		},
		{
			name:   "message ends inside a character",
			stream: fragments(ws.OpText, "abc\xe2\x82", 2),
			code:   ws.StatusInvalidFramePayloadData,
		},
		{
			name:   "single frame ends inside a character",
			stream: frame(ws.OpText, true, "abc\xf0\x9f\x98"),
			code:   ws.StatusInvalidFramePayloadData,
		},

		// Case 10: close frames.
		{
			name:   "close without payload",
			stream: frame(ws.OpClose, true, ""),
			want:   []event{closed(ws.StatusNoStatusRcvd, "")},
		},
		{
			name:   "close with a 1-byte payload",
			stream: frame(ws.OpClose, true, "\x03"),
			code:   ws.StatusProtocolError,
		},
		{
			name:   "close reason with invalid UTF-8",
			stream: frame(ws.OpClose, true, closeBody(1000, "bye\xff")),
			code:   ws.StatusInvalidFramePayloadData,
		},
		{
			name:   "close with the longest reason",
			stream: frame(ws.OpClose, true, closeBody(4000, strings.Repeat("é", 61)+"!")),
			want:   []event{closed(4000, strings.Repeat("é", 61)+"!")},
		},
		{
			name:   "close between fragments drops the message",
			stream: cat(frame(ws.OpText, false, "part"), frame(ws.OpClose, true, closeBody(1001, "bye"))),
			want:   []event{closed(1001, "bye")},
		},

		// Case 11: nothing after a close counts.
		{
			name: "frames after close are ignored",
			stream: cat(
				frame(ws.OpClose, true, closeBody(1000, "")),
				frame(ws.OpText, true, "late"),
				unmaskedFrame(ws.OpText, "bad"),
				[]byte{0xff, 0xff, 0xff}),
			want: []event{closed(1000, "")},
		},

		// Cases 12 and 13: sizes.
		{
			name:   "header claims 1 TiB",
			stream: cat(header(ws.OpBinary, true, 1<<40), []byte("some payload")),
			code:   ws.StatusMessageTooBig,
		},
		{
			name:   "header cut short after two bad bytes",
			stream: unmaskedFrame(ws.OpBinary, long)[:2],
			code:   ws.StatusProtocolError,
		},
		{
			name:   "64-bit length with the MSB set",
			stream: msbHeader(),
			code:   ws.StatusProtocolError,
		},
		{
			name:   "message of exactly MaxMessage",
			max:    100,
			stream: frame(ws.OpText, true, big),
			want:   []event{text(big)},
		},
		{
			name:   "message one byte over MaxMessage",
			max:    99,
			stream: frame(ws.OpText, true, big),
			code:   ws.StatusMessageTooBig,
		},
		{
			name:   "fragments summing to exactly MaxMessage",
			max:    100,
			stream: fragments(ws.OpBinary, big, 7),
			want:   []event{binaryMsg(big)},
		},
		{
			name:   "1000 fragments over MaxMessage",
			stream: fragments(ws.OpText, strings.Repeat(big, 1000), 100),
			code:   ws.StatusMessageTooBig,
		},
		{
			name: "control frames do not count toward MaxMessage",
			max:  4,
			stream: cat(
				frame(ws.OpText, false, "ab"),
				frame(ws.OpPing, true, big),
				frame(ws.OpContinuation, true, "cd")),
			want: []event{ping(big), text("abcd")},
		},
	}

	// Case 2: RSV bits on data and control frames.
	for _, op := range []ws.OpCode{ws.OpText, ws.OpBinary, ws.OpPing, ws.OpClose} {
		for _, rsv := range []byte{ws.Rsv(true, false, false), ws.Rsv(false, true, false), ws.Rsv(false, false, true)} {
			cases = append(cases, readerCase{
				name:   fmt.Sprintf("rsv %03b on opcode %d", rsv, op),
				stream: rsvFrame(op, rsv, ""),
				code:   ws.StatusProtocolError,
			})
		}
	}
	// Case 3: reserved opcodes.
	for _, op := range []ws.OpCode{0x3, 0x4, 0x5, 0x6, 0x7, 0xb, 0xc, 0xd, 0xe, 0xf} {
		cases = append(cases, readerCase{
			name:   fmt.Sprintf("reserved opcode %#x", byte(op)),
			stream: frame(op, true, "x"),
			code:   ws.StatusProtocolError,
		})
	}
	// Case 10: close codes.
	for _, c := range []ws.StatusCode{0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535} {
		cases = append(cases, readerCase{
			name:   fmt.Sprintf("close code %d", c),
			stream: frame(ws.OpClose, true, closeBody(c, "")),
			code:   ws.StatusProtocolError,
		})
	}
	for _, c := range []ws.StatusCode{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999} {
		cases = append(cases, readerCase{
			name:   fmt.Sprintf("close code %d", c),
			stream: frame(ws.OpClose, true, closeBody(c, "why")),
			want:   []event{closed(c, "why")},
		})
	}
	return cases
}

// TestReader decodes every case whole, one byte at a time and in random
// splits; all must give the expected events and error.
func TestReader(t *testing.T) {
	for _, tc := range readerCases() {
		t.Run(tc.name, func(t *testing.T) {
			maxMessage := tc.max
			if maxMessage == 0 {
				maxMessage = testMax
			}
			want := result{events: tc.want, code: tc.code}
			splits := map[string][]int{
				"whole": wholeSizes(len(tc.stream)),
				"bytes": byteSizes(len(tc.stream)),
			}
			for seed := range uint64(20) {
				splits[fmt.Sprintf("random %d", seed)] = randomSizes(len(tc.stream), seed)
			}
			for name, sizes := range splits {
				got := decode(t, tc.stream, maxMessage, sizes)
				if !got.equal(want) {
					t.Errorf(
						"%s: decode = %v, want %v",
						name, got, want)
				}
			}
		})
	}
}

// TestTooBigBeforePayload checks that 1009 comes from the header alone and
// that rejecting a 1 TiB frame allocates nothing.
func TestTooBigBeforePayload(t *testing.T) {
	hdr := header(ws.OpBinary, true, 1<<40)
	var rec recorder
	allocs := testing.AllocsPerRun(100, func() {
		r := Reader{MaxMessage: testMax}
		err := r.Feed(hdr, &rec)
		// A type assertion, not errors.As, whose target would escape.
		if ce, ok := err.(*CloseError); !ok || ce.Code != ws.StatusMessageTooBig {
			t.Fatalf(
				"Feed(1 TiB header) = %v, want 1009",
				err)
		}
	})
	if allocs != 0 {
		t.Errorf(
			"Feed(1 TiB header) allocs = %v, want 0",
			allocs)
	}
}

// TestMaxMessageFragments checks that 1009 comes with the first fragment
// that takes the sum over the limit, and not later.
func TestMaxMessageFragments(t *testing.T) {
	const size, limit = 100, testMax
	r := Reader{MaxMessage: limit}
	defer r.Release()
	var rec recorder
	for i := range 1000 {
		op := ws.OpText
		if i > 0 {
			op = ws.OpContinuation
		}
		err := r.Feed(frame(op, false, strings.Repeat("z", size)), &rec)
		checkInvariants(t, &r)
		over := (i+1)*size > limit
		if over != (err != nil) {
			t.Fatalf(
				"Feed(fragment %d, total %d) = %v, want error %v",
				i, (i+1)*size, err, over)
		}
		if err != nil {
			var ce *CloseError
			if !errors.As(err, &ce) || ce.Code != ws.StatusMessageTooBig {
				t.Fatalf(
					"Feed(fragment %d) = %v, want 1009",
					i, err)
			}
			return
		}
	}
	t.Fatal("no fragment was rejected")
}

// TestZeroMaxMessage checks that a Reader whose MaxMessage was never set
// fails closed: only empty messages pass.
func TestZeroMaxMessage(t *testing.T) {
	got := decode(t, frame(ws.OpText, true, ""), 0, nil)
	if want := (result{events: []event{text("")}}); !got.equal(want) {
		t.Errorf(
			"decode(empty text) = %v, want %v",
			got, want)
	}
	got = decode(t, frame(ws.OpText, true, "a"), 0, nil)
	if want := (result{code: ws.StatusMessageTooBig}); !got.equal(want) {
		t.Errorf(
			"decode(\"a\") = %v, want %v",
			got, want)
	}
}

// aliasRecorder counts calls and remembers where the last payload points,
// without allocating.
type aliasRecorder struct {
	calls int
	first *byte
	n     int
}

func (a *aliasRecorder) record(p []byte) {
	a.calls++
	a.first, a.n = unsafe.SliceData(p), len(p)
}
func (a *aliasRecorder) OnMessage(op ws.OpCode, p []byte) { a.record(p) }
func (a *aliasRecorder) OnPing(p []byte)                  { a.record(p) }
func (a *aliasRecorder) OnPong(p []byte)                  { a.record(p) }
func (a *aliasRecorder) OnClose(code ws.StatusCode, reason []byte) {
	a.record(reason)
}

// TestWholeFrameNoCopy checks that a whole frame is delivered in place and
// that neither it nor a whole control frame allocates.
func TestWholeFrameNoCopy(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{
			name:  "text",
			frame: frame(ws.OpText, true, strings.Repeat("κ", 50)),
		},
		{
			name:  "binary 16-bit length",
			frame: frame(ws.OpBinary, true, strings.Repeat("b", 1000)),
		},
		{
			name:  "ping",
			frame: frame(ws.OpPing, true, "p"),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := make([]byte, len(tc.frame))
			h := &aliasRecorder{}
			r := Reader{MaxMessage: testMax}
			allocs := testing.AllocsPerRun(100, func() {
				copy(p, tc.frame)
				h.calls = 0
				if err := r.Feed(p, h); err != nil {
					t.Fatalf(
						"Feed = %v",
						err)
				}
			})
			if allocs != 0 {
				t.Errorf(
					"Feed(whole %s frame) allocs = %v, want 0",
					tc.name, allocs)
			}
			if h.calls != 1 {
				t.Fatalf(
					"%d handler calls, want 1",
					h.calls)
			}
			if hl := headerLen(p); h.first != &p[hl] || h.n != len(p)-hl {
				t.Errorf("payload is not the sub-slice of p after the header")
			}
			if !r.Idle() || r.buf != nil {
				t.Errorf("Reader holds state after a whole frame")
			}
		})
	}
}

// TestIdle follows Idle through a split header, a fragmented message and a
// split control frame.
func TestIdle(t *testing.T) {
	var rec recorder
	r := Reader{MaxMessage: testMax}
	defer r.Release()
	steps := []struct {
		name string
		p    []byte
		idle bool
	}{
		{
			name: "nothing fed",
			p:    nil,
			idle: true,
		},
		{
			name: "first header byte",
			p:    frame(ws.OpText, false, "ab")[:1],
			idle: false,
		},
		{
			name: "rest of a first fragment",
			p:    frame(ws.OpText, false, "ab")[1:],
			idle: false,
		},
		{
			name: "half a ping between fragments",
			p:    frame(ws.OpPing, true, "ping")[:8],
			idle: false,
		},
		{
			name: "rest of the ping",
			p:    frame(ws.OpPing, true, "ping")[8:],
			idle: false,
		},
		{
			name: "last fragment",
			p:    frame(ws.OpContinuation, true, "cd"),
			idle: true,
		},
		{
			name: "a whole frame",
			p:    frame(ws.OpBinary, true, "x"),
			idle: true,
		},
	}
	for _, s := range steps {
		if err := r.Feed(s.p, &rec); err != nil {
			t.Fatalf(
				"%s: Feed = %v",
				s.name, err)
		}
		checkInvariants(t, &r)
		if r.Idle() != s.idle {
			t.Fatalf(
				"%s: Idle() = %v, want %v",
				s.name, r.Idle(), s.idle)
		}
	}
	want := []event{ping("ping"), text("abcd"), binaryMsg("x")}
	if got := (result{events: rec.events}); !got.equal(result{events: want}) {
		t.Errorf(
			"events = %v, want %v",
			got, want)
	}
}

// TestRelease checks that Release drops a half-read message with its buffer
// and leaves a Reader that decodes a new connection from scratch.
func TestRelease(t *testing.T) {
	var rec recorder
	r := Reader{MaxMessage: testMax}
	// A first fragment, then half a ping: both a message buffer and a
	// control buffer are held.
	p := cat(frame(ws.OpText, false, strings.Repeat("a", 300)), frame(ws.OpPing, true, "half a ping")[:9])
	if err := r.Feed(p, &rec); err != nil {
		t.Fatalf(
			"Feed = %v",
			err)
	}
	if r.buf == nil || r.ctl == nil || r.Idle() {
		t.Fatalf(
			"after a fragment and half a ping: buf %v, ctl %v, Idle %v; want both buffers held",
			r.buf != nil, r.ctl != nil, r.Idle())
	}
	r.Release()
	if r.buf != nil || r.ctl != nil || !r.Idle() || r.MaxMessage != testMax {
		t.Fatalf(
			"Release left buf %v, ctl %v, Idle %v, MaxMessage %d",
			r.buf != nil, r.ctl != nil, r.Idle(), r.MaxMessage)
	}
	if err := r.Feed(frame(ws.OpText, true, "new"), &rec); err != nil {
		t.Fatalf(
			"Feed after Release = %v",
			err)
	}
	if want := []event{text("new")}; !(result{events: rec.events}).equal(result{events: want}) {
		t.Errorf(
			"events = %v, want %v",
			rec.events, want)
	}
}

// TestFeedAfterError checks that a Reader keeps reporting its violation.
func TestFeedAfterError(t *testing.T) {
	var rec recorder
	r := Reader{MaxMessage: testMax}
	first := r.Feed(unmaskedFrame(ws.OpText, "x"), &rec)
	again := r.Feed(frame(ws.OpText, true, "fine"), &rec)
	if first == nil || again != first {
		t.Errorf(
			"Feed after error = %v, want %v",
			again, first)
	}
	if len(rec.events) != 0 {
		t.Errorf(
			"events = %v, want none",
			rec.events)
	}
}

func TestCloseErrorMessage(t *testing.T) {
	got := decode(t, msbHeader(), testMax, nil)
	if got.code != ws.StatusProtocolError {
		t.Fatalf(
			"decode(MSB header) = %v, want 1002",
			got)
	}
	if s := errLengthMSB.Error(); !strings.HasPrefix(s, "wsframe: ") || !strings.Contains(s, "most significant bit") {
		t.Errorf(
			"Error() = %q",
			s)
	}
}

func TestReaderSize(t *testing.T) {
	if n := unsafe.Sizeof(Reader{}); n > 64 {
		t.Errorf(
			"unsafe.Sizeof(Reader{}) = %d, want <= 64",
			n)
	}
}

// TestMaskingMatchesRFC checks the frames these tests build (and so
// ws.Cipher, which both masks them and unmasks them in Feed) against the
// formula of RFC 6455 section 5.3, so a broken cipher cannot cancel itself.
func TestMaskingMatchesRFC(t *testing.T) {
	for n := range 200 {
		payload := strings.Repeat("abcdefghijklm", n/13+1)[:n]
		f := ws.MaskFrameWith(ws.NewFrame(ws.OpBinary, true, []byte(payload)), testMask)
		for i := range n {
			if want := payload[i] ^ testMask[i%4]; f.Payload[i] != want {
				t.Fatalf(
					"masked byte %d of %d = %#x, want %#x",
					i, n, f.Payload[i], want)
			}
		}
	}
}
