package wsframe

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

// FuzzReader decodes arbitrary bytes, and a valid stream generated from
// them, in arbitrary splits. decode checks on every Feed that there is no
// panic, that an error is a *CloseError with code 1002, 1007 or 1009, and
// that no buffer exceeds what MaxMessage allows.
func FuzzReader(f *testing.F) {
	for _, tc := range readerCases() {
		f.Add(tc.stream, uint64(len(tc.stream)), uint32(tc.max))
	}
	f.Fuzz(func(t *testing.T, data []byte, seed uint64, limit uint32) {
		maxMessage := int(limit % (1 << 20))

		// Arbitrary bytes: the outcome does not depend on how they are split.
		whole := decode(t, data, maxMessage, nil)
		split := decode(t, data, maxMessage, randomSizes(len(data), seed))
		if !whole.equal(split) {
			t.Fatalf(
				"split decode = %v, whole decode = %v",
				split, whole)
		}

		// A valid stream: decoding gives back exactly what was encoded.
		stream, want := validStream(data, seed)
		got := decode(t, stream, 3*len(data), randomSizes(len(stream), seed+1))
		if !got.equal(result{events: want}) {
			t.Fatalf(
				"decode(valid stream) = %v, want %v",
				got, want)
		}
	})
}

// validStream turns data into a sequence of valid client frames: text and
// binary messages cut into random fragments (cutting characters too) with
// pings and pongs between them, each frame with its own mask. It returns the
// stream and the events decoding it must produce; no message is longer than
// 3*len(data) (U+FFFD, which replaces invalid bytes in text, takes three).
func validStream(data []byte, seed uint64) ([]byte, []event) {
	rng := rand.New(rand.NewPCG(seed, ^seed))
	var stream []byte
	var want []event
	add := func(op ws.OpCode, fin bool, p string) {
		var mask [4]byte
		for i := range mask {
			mask[i] = byte(rng.Uint32())
		}
		f := ws.MaskFrameWith(ws.NewFrame(op, fin, []byte(p)), mask)
		stream = append(stream, compile(f)...)
	}
	control := func(p string) {
		p = p[:min(len(p), ws.MaxControlFramePayloadSize)]
		if rng.IntN(2) == 0 {
			add(ws.OpPing, true, p)
			want = append(want, ping(p))
		} else {
			add(ws.OpPong, true, p)
			want = append(want, pong(p))
		}
	}
	for len(data) > 0 {
		n := min(len(data), rng.IntN(300))
		chunk := string(data[:n])
		data = data[n:]
		switch rng.IntN(3) {
		case 0:
			control(chunk)
		default:
			op := ws.OpBinary
			if rng.IntN(2) == 0 {
				op = ws.OpText
				chunk = strings.ToValidUTF8(chunk, "\uFFFD")
			}
			var ctl []event
			for rest, first := chunk, true; first || len(rest) > 0; first = false {
				k := rng.IntN(len(rest) + 1)
				fop := op
				if !first {
					fop = ws.OpContinuation
				}
				add(fop, k == len(rest), rest[:k])
				rest = rest[k:]
				if len(rest) > 0 && rng.IntN(3) == 0 {
					control(chunk)
					ctl = append(ctl, want[len(want)-1])
					want = want[:len(want)-1]
				}
			}
			want = append(want, ctl...)
			want = append(want, message(op, chunk))
		}
	}
	return stream, want
}
