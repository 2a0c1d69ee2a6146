package wsframe

import (
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

// nopHandler counts what it is given and keeps nothing.
type nopHandler struct{ n int }

func (h *nopHandler) OnMessage(op ws.OpCode, p []byte)          { h.n += len(p) }
func (h *nopHandler) OnPing(p []byte)                           { h.n += len(p) }
func (h *nopHandler) OnPong(p []byte)                           { h.n += len(p) }
func (h *nopHandler) OnClose(code ws.StatusCode, reason []byte) { h.n += len(reason) }

// feedAll feeds stream to r in pieces of at most chunk bytes from the
// scratch buffer p, as the engine's read loop does, and fails on any error.
func feedAll(tb testing.TB, r *Reader, h Handler, p, stream []byte, chunk int) {
	copy(p, stream)
	for q := p[:len(stream)]; len(q) > 0; {
		n := min(chunk, len(q))
		if err := r.Feed(q[:n], h); err != nil {
			tb.Fatalf(
				"Feed = %v",
				err)
		}
		q = q[n:]
	}
}

// fragmented4K is a 4 KiB text message in four 1 KiB fragments.
var fragmented4K = fragments(ws.OpText, strings.Repeat("abcdefgh", 512), 1024)

// TestFragmentedNoAllocs checks that split frames and fragmented messages
// allocate nothing once the pools are warm.
func TestFragmentedNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	// 500-byte fragments start in a 512-byte buffer and move to a 4 KiB one.
	growing := fragments(ws.OpBinary, strings.Repeat("x", 3000), 500)
	for _, tc := range []struct {
		name   string
		stream []byte
		chunk  int
	}{
		{
			name:   "4 KiB in 1 KiB fragments, one read",
			stream: fragmented4K,
			chunk:  len(fragmented4K),
		},
		{
			name:   "4 KiB in 1 KiB fragments, 1460-byte reads",
			stream: fragmented4K,
			chunk:  1460,
		},
		{
			name:   "4 KiB in 1 KiB fragments, 7-byte reads",
			stream: fragmented4K,
			chunk:  7,
		},
		{
			name:   "3000 bytes in 500-byte fragments, buffer grows",
			stream: growing,
			chunk:  len(growing),
		},
	} {
		var h nopHandler
		r := Reader{MaxMessage: testMax}
		p := make([]byte, len(tc.stream))
		feedAll(t, &r, &h, p, tc.stream, tc.chunk) // warm the pools
		allocs := testing.AllocsPerRun(100, func() {
			feedAll(t, &r, &h, p, tc.stream, tc.chunk)
		})
		if allocs != 0 {
			t.Errorf(
				"Feed(%s) allocs = %v, want 0",
				tc.name, allocs)
		}
	}
}

// BenchmarkFeedSmall feeds a whole 100-byte masked text frame: the
// zero-copy path. The copy restores the masked bytes Feed unmasked.
func BenchmarkFeedSmall(b *testing.B) {
	tmpl := frame(ws.OpText, true, strings.Repeat("0123456789", 10))
	p := make([]byte, len(tmpl))
	var h nopHandler
	r := Reader{MaxMessage: testMax}
	b.SetBytes(int64(len(tmpl)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		copy(p, tmpl)
		if err := r.Feed(p, &h); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFeedFragmented feeds a 4 KiB text message sent as four 1 KiB
// fragments, in one read and in 1460-byte reads: the pooled-buffer path.
func BenchmarkFeedFragmented(b *testing.B) {
	for _, bc := range []struct {
		name  string
		chunk int
	}{
		{
			name:  "one read",
			chunk: len(fragmented4K),
		},
		{
			name:  "1460-byte reads",
			chunk: 1460,
		},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := make([]byte, len(fragmented4K))
			var h nopHandler
			r := Reader{MaxMessage: testMax}
			b.SetBytes(int64(len(fragmented4K)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				feedAll(b, &r, &h, p, fragmented4K, bc.chunk)
			}
		})
	}
}
