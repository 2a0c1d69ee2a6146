package engine

import (
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// A conn's outbound queue and its close sequence, run by its owner.

// enqueue adds frame to c's queue and marks c for the batch's flush. Over
// the queue limit, c is a slow consumer: it is closed, never allowed to
// hold the memory or the broadcast.
func (p *partition) enqueue(c *conn, frame []byte) bool {
	if c.closed {
		return false
	}
	// A frame larger than the whole queue still goes to a conn with nothing
	// queued: memory stays bounded by the cap plus one frame, and one big
	// event does not close every recipient.
	if c.outBytes > 0 && c.outBytes+len(frame) > p.e.limits.OutboundQueueBytes {
		p.e.metrics.slowConsumers.Inc()
		p.close(c, CloseSlowConsumer, "slow consumer")
		return false
	}
	c.out = append(c.out, frame)
	c.outBytes += len(frame)
	if !c.dirty {
		c.dirty = true
		p.dirty = append(p.dirty, c)
	}
	return true
}

func (p *partition) flushDirty() {
	for i, c := range p.dirty {
		c.dirty = false
		if len(c.out) > 0 {
			p.flush(c)
		}
		p.dirty[i] = nil
	}
	p.dirty = p.dirty[:0]
}

// flush writes as much of c's queue as the transport takes, without
// blocking.
func (p *partition) flush(c *conn) {
	progressed := false
	for len(c.out) > 0 {
		n, err := c.tr.write(c.out, &p.iov)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			if err == unix.EAGAIN {
				if c.wantOut.Load() {
					break // the poller will ask for a flush at the next edge
				}
				// Ask for writable edges, then try once more: the poller
				// drops an edge that comes while wantOut is false, so one
				// that came between the failed write and this store would
				// be lost, and the backlog would sit until the write
				// timeout closed a healthy conn. Stores happen only here,
				// not on every flush.
				c.wantOut.Store(true)
				continue
			}
			// The peer is gone (EPIPE, ECONNRESET): nothing more can be sent.
			c.out = c.out[:0]
			c.outBytes = 0
			c.partialHead = false
			c.wantOut.Store(false)
			c.finOnFlush = false
			if !c.closed {
				p.close(c, 0, "")
			} else {
				p.finishClose(c)
			}
			return
		}
		p.bytesOut.Add(int64(n))
		p.advance(c, n)
		progressed = true
	}
	if len(c.out) > 0 {
		// The write timeout is time without progress: a client reading
		// slowly through a backlog is not stalled (the byte cap bounds its
		// memory); one that takes nothing for write_timeout is.
		if c.blockedAt == 0 || progressed {
			c.blockedAt = time.Now().UnixNano()
		}
		return // wantOut stays set: the poller asks for a flush when writable
	}
	c.blockedAt = 0
	if c.wantOut.Load() {
		c.wantOut.Store(false)
	}
	if cap(c.out) > 8 { // do not keep a big backlog array on an idle conn
		c.out = c.outInline[:0]
	}
	if c.finOnFlush {
		c.finOnFlush = false
		p.finishClose(c)
	}
}

// advance drops n written bytes from the front of c's queue.
func (p *partition) advance(c *conn, n int) {
	c.outBytes -= n
	i := 0
	for i < len(c.out) && n >= len(c.out[i]) {
		n -= len(c.out[i])
		c.out[i] = nil
		i++
	}
	c.partialHead = n > 0
	if i > 0 {
		rest := copy(c.out, c.out[i:])
		for j := rest; j < len(c.out); j++ {
			c.out[j] = nil
		}
		c.out = c.out[:rest]
	}
	if n > 0 {
		c.out[0] = c.out[0][n:] // a partly written frame: its tail must go first
	}
}

// dropQueue forgets every queued frame except the unwritten tail of a frame
// already started, which must be finished for the stream to stay valid.
func (p *partition) dropQueue(c *conn) {
	keep := 0
	if len(c.out) > 0 && c.partialHead {
		keep = 1
	}
	for i := keep; i < len(c.out); i++ {
		c.outBytes -= len(c.out[i])
		c.out[i] = nil
	}
	c.out = c.out[:keep]
}

// close takes c out of the index and starts its close: a close frame with
// code (none when code is 0, the peer being gone), flushed after what was
// already started, then the write side shut. c's close event goes to the
// rules now. The transport is released when the peer has gone too, or
// after limits.close_timeout for the frames to leave and a short linger.
func (p *partition) close(c *conn, code ws.StatusCode, reason string) {
	if c.closed {
		return
	}
	c.closed = true
	c.closing.Store(true)
	p.unindex(c)
	p.e.connClosed(c, code)
	if code == 0 { // the peer is gone: nothing can reach it
		c.out = c.out[:0]
		c.outBytes = 0
		c.wantOut.Store(false)
		p.finishClose(c)
		return
	}
	if code == CloseSlowConsumer {
		p.dropQueue(c) // what it could not take is dropped; the rest flushes first
	}
	if f := p.e.hub.codecs[c.proto].closing(); f != nil {
		c.out = append(c.out, f)
		c.outBytes += len(f)
	}
	c.out = append(c.out, closeFrame(code, reason))
	c.outBytes += len(c.out[len(c.out)-1])
	c.finOnFlush = true
	// A slow reader may take a while to drain the frame it had started and
	// the close frame; its own deadline, not the write timeout.
	c.lingerUntil = time.Now().Add(p.e.limits.CloseTimeout).UnixNano()
	p.addClosing(c)
	p.flush(c)
}

// finishClose runs once c's close frame is written (or cannot be): shut the
// write side, then wait for the peer to answer, briefly.
func (p *partition) finishClose(c *conn) {
	if c.readerGone {
		p.release(c)
		return
	}
	c.tr.closeWrite()
	c.lingerUntil = time.Now().Add(closeLinger).UnixNano()
	p.addClosing(c)
}

// closeLinger is how long a closed conn waits for the peer's close frame or
// FIN, once its own close frame is out, before the socket is torn down.
const closeLinger = 2 * time.Second

// release drops the owner's reference. If the reader is still there, shut
// the transport down so that it wakes, reads EOF and drops its own.
func (p *partition) release(c *conn) {
	if c.lingerUntil == -1 {
		return // released already
	}
	if !c.readerGone {
		c.tr.abort()
	}
	c.lingerUntil = -1
	c.out = nil
	c.outBytes = 0
	p.removeClosing(c)
	c.tr.released()
	c.release(p.e)
}

// readerGone: the reader side of c ended with code (0: the peer vanished;
// otherwise the code to answer with).
func (p *partition) readerGone(c *conn, code ws.StatusCode, reason string) {
	c.readerGone = true
	if !c.closed {
		p.close(c, code, reason)
		return
	}
	if c.lingerUntil != -1 && !c.finOnFlush {
		p.release(c) // the close frame is out and the peer has answered
	}
}

// tick runs the timers of every conn here: ping, idle, token expiry,
// write timeout, and lingering closes.
func (p *partition) tick(now time.Time) {
	l := &p.e.limits
	sec, nano := now.Unix(), now.UnixNano()
	s := &p.e.cfg.SocketIO
	ping := [numProtocols]int64{int64(l.PingInterval / time.Second), int64(s.PingInterval / time.Second)}
	idle := [numProtocols]int64{int64(l.IdleTimeout / time.Second), int64((s.PingInterval + s.PingTimeout) / time.Second)}
	for i := 0; i < len(p.conns); i++ {
		c := p.conns[i]
		var code ws.StatusCode
		var reason string
		switch {
		case c.blockedAt != 0 && nano-c.blockedAt > int64(l.WriteTimeout):
			p.e.metrics.slowConsumers.Inc()
			code, reason = CloseSlowConsumer, "slow consumer"
		case sec-int64(c.lastRead.Load()) > idle[c.proto] && c.sched.Load() == schedIdle:
			// Silent, and nothing of it waits to be read or to be run
			// (a turn held by the rule pool or a parked one is not idle).
			code, reason = ws.StatusGoingAway, "idle timeout"
		case c.expires.Load() != 0 && sec > int64(c.expires.Load()):
			code, reason = CloseTokenExpired, "token expired"
		case sec-int64(c.lastPing) >= ping[c.proto]:
			c.lastPing = uint32(sec)
			if !p.enqueue(c, p.e.hub.codecs[c.proto].ping()) && c.idx < 0 {
				i-- // closed as a slow consumer: its slot holds another conn
			}
		}
		if code != 0 {
			p.close(c, code, reason)
			i-- // c's slot now holds another conn
		}
	}
	for i := 0; i < len(p.closing); i++ {
		c := p.closing[i]
		if c.lingerUntil > 0 && nano > c.lingerUntil {
			p.release(c) // swaps the last closing conn into slot i
			i--
		}
	}
}

// addClosing puts c in p.closing unless it is there; c.cidx is its place.
func (p *partition) addClosing(c *conn) {
	if c.cidx >= 0 {
		return
	}
	c.cidx = int32(len(p.closing))
	p.closing = append(p.closing, c)
}

// removeClosing takes c out of p.closing in constant time: a drain of a
// whole partition is linear, not quadratic.
func (p *partition) removeClosing(c *conn) {
	i := c.cidx
	if i < 0 {
		return
	}
	last := p.closing[len(p.closing)-1]
	p.closing[i] = last
	last.cidx = i
	p.closing[len(p.closing)-1] = nil
	p.closing = p.closing[:len(p.closing)-1]
	c.cidx = -1
}
