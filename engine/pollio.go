package engine

import (
	"context"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/sidecar/sidecar/engine/sio"
)

// A long-polling conn's I/O: the client's packets come with POSTs and are
// fed to the conn's reader (feed), and the conn's frames wait in its
// session for a GET (pollTransport).

// feed gives body's packets to c's reader, holding its read turn, as a
// read worker does with a socket's bytes: a batch goes to the rules when
// it is full (maxBatchBytes) or the owner is behind taking the pongs and
// acks, and the rest waits for the turn to come back, as the rest of a
// socket's bytes waits in the kernel.
func (s *pollSession) feed(ctx context.Context, c *conn, body []byte) error {
	e := s.e
	var packets []sio.Packet
	malformed := sio.SplitPayload(body, func(pkt sio.Packet) error {
		packets = append(packets, pkt)
		return nil
	})
	if malformed != nil {
		packets = append(packets[:0:0], sio.Packet{Type: 255}) // the reader closes 1002
	}
	for len(packets) > 0 {
		if !c.takeTurn(ctx) {
			return errPollEnded
		}
		r := e.readers.Get().(*reader)
		c.readyAt = 0 // the client's own pause between POSTs is not forgiven
		r.begin(c)
		c.lastRead.Store(uint32(r.now))
		for len(packets) > 0 && !r.stop && !r.full && !r.mailFull {
			pkt := packets[0]
			packets = packets[1:]
			switch {
			case pkt.Type == 255:
				r.stopWith(ws.StatusProtocolError, "malformed Engine.IO payload")
			case pkt.Binary:
				r.OnMessage(ws.OpBinary, nil)
			default:
				r.OnMessage(ws.OpText, sio.AppendPacket(nil, pkt))
			}
		}
		if r.stop {
			packets = nil
		}
		handed := r.handOff(c)
		r.reset()
		e.readers.Put(r)
		if !handed {
			// The read workers end the turn (readTurn), checking on the
			// way whether the session has ended.
			c.readyAt = time.Now().UnixNano()
			e.resumeRead(c)
		}
	}
	return malformed
}

// takeTurn waits until c's read turn is free and takes it, for as long as
// ctx allows.
func (c *conn) takeTurn(ctx context.Context) bool {
	for d := 50 * time.Microsecond; ; d = min(2*d, 20*time.Millisecond) {
		if c.sched.CompareAndSwap(schedIdle, schedRunning) {
			return true
		}
		if c.sched.Load() == schedDead || ctx.Err() != nil {
			return false
		}
		time.Sleep(d)
	}
}

// pollTransport is a polling conn's transport: its frames' payloads wait
// in the session for a GET.
type pollTransport struct{ s *pollSession }

var _ transport = (*pollTransport)(nil)

// write takes whole frames while the session holds less than the
// outbound queue's cap; the WebSocket control frames (the close frame)
// are dropped: the Engine.IO close packet before it says it all.
func (t *pollTransport) write(frames [][]byte, _ *[maxIovecs]unix.Iovec) (int, error) {
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return 0, unix.EPIPE
	}
	limit := s.e.limits.OutboundQueueBytes
	n := 0
	for _, f := range frames {
		if s.bytes >= limit {
			break
		}
		if op, payload := splitServerFrame(f); op == ws.OpText {
			s.pending = append(s.pending, payload)
			s.bytes += len(payload)
		}
		n += len(f)
	}
	if n == 0 {
		s.blocked = true
		return 0, unix.EAGAIN
	}
	s.signal()
	return n, nil
}

// closeWrite: what was written is the last; the next GET takes it and the
// session is gone.
func (t *pollTransport) closeWrite() { t.s.end() }

func (t *pollTransport) abort() { t.s.end() }

// released: whatever ended the conn (the client's own close, a malformed
// packet), its session ends too.
func (t *pollTransport) released() { t.s.end() }

// splitServerFrame splits a complete server frame (unmasked, as the codecs
// make them) into its opcode and payload.
func splitServerFrame(f []byte) (ws.OpCode, []byte) {
	if len(f) < 2 {
		return 0, nil
	}
	h := 2
	switch f[1] & 0x7f {
	case 126:
		h = 4
	case 127:
		h = 10
	}
	if len(f) < h {
		return 0, nil
	}
	return ws.OpCode(f[0] & 0x0f), f[h:]
}
