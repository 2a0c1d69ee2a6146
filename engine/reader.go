package engine

import (
	"math"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/sidecar/sidecar/engine/wsframe"
)

// maxBatchBytes bounds the client messages one read turn collects before it
// hands them to the rule pool; a bigger message goes alone.
const maxBatchBytes = 64 << 10

// reader is a read worker's state: a scratch buffer, the frame handler and
// the batch of client messages being collected. One per worker, reused for
// every conn it reads.
//
// A read turn reads a conn until the socket is drained, then ends (the conn
// is idle until the next readable edge). When the turn found client
// messages, it hands them with the turn itself to the rule pool: the conn
// is not read again until its messages have been through the rules, so
// they run in order, one connection cannot queue more than a batch, and a
// slow rule holds up only its own connection's reads while the kernel's
// buffer and TCP push back on the client. The pool gives the turn back.
type reader struct {
	e       *Engine
	buf     []byte
	c       *conn
	now     int64 // unix seconds of the last read
	nowNano int64

	batch      []clientEvent
	batchBytes int
	full       bool // the batch reached maxBatchBytes: read no more this turn
	mailFull   bool // the owner is behind taking this conn's pongs: read no more this turn

	// Outcome of the current Feed, set by the handler callbacks.
	stop      bool
	closeCode ws.StatusCode // what the owner should send; 0: nothing (peer gone)
	reason    string
}

// readTurn reads c for the turn the caller holds. It ends the turn, passes
// it on through the ready queue or to the rule pool, or, when the
// connection is finished, ends the reader side.
func (r *reader) readTurn(c *conn) {
	r.begin(c)
	defer r.reset()
	if r.e.pool.park(c, r.nowNano) {
		return // the rule pool is over its byte cap: read nothing until it drains
	}
	for {
		more := r.drain(c)
		if r.handOff(c) {
			return
		}
		if more { // still more after a full round: let other conns have the worker
			c.readyAt = r.nowNano
			if !r.e.ready.push(c) {
				r.finishWith(c, 0, "")
			}
			return
		}
		// The turn's forgiveness ends with it; cleared before endTurn, after
		// which the bucket belongs to the next turn's holder.
		c.bucket.extra = 0
		if c.endTurn() {
			return
		}
	}
}

// begin starts a turn on c: input that waited on the server (since the
// readable edge, or since its last messages went to the rules) is forgiven
// by the rate limit.
func (r *reader) begin(c *conn) {
	r.c = c
	now := time.Now()
	r.now, r.nowNano = now.Unix(), now.UnixNano()
	if c.readyAt != 0 {
		c.bucket.forgive(r.nowNano-c.readyAt, r.e.limits.ClientEventsPerSecond)
	}
}

func (r *reader) reset() {
	r.c = nil
	r.batch, r.batchBytes, r.full, r.mailFull = nil, 0, false, false
	r.stop, r.closeCode, r.reason = false, 0, ""
}

// drain reads until the socket has nothing more (false), the connection
// ends or the batch is full, or a round of reads is used up with data left
// (true).
func (r *reader) drain(c *conn) bool {
	if c.fd < 0 {
		// A long-polling conn: its messages come with POSTs (pollio.go).
		// The turn's holder may touch c.tr: it changes only at the
		// upgrade, which holds the turn.
		if t, ok := c.tr.(*pollTransport); ok && t.s.isEnded() {
			r.stopWith(0, "")
		}
		return false
	}
	for i := 0; i < 16; i++ {
		n, err := unix.Read(c.fd, r.buf)
		if n > 0 {
			now := time.Now()
			r.now, r.nowNano = now.Unix(), now.UnixNano()
			c.lastRead.Store(uint32(r.now))
			r.feed(c, r.buf[:n])
			// A short read drained the socket: any later byte raises a new
			// edge, which marks the turn "again". Not so a FIN or reset that
			// came with the last bytes: it raised no edge of its own, so
			// after a hang-up, read on until EOF.
			if r.stop || r.full || r.mailFull || (n < len(r.buf) && !c.hup.Load()) {
				return false
			}
			continue
		}
		if err == unix.EAGAIN || err == unix.EINTR {
			return false
		}
		// 0 bytes is EOF; any other error is a dead socket. Either way the
		// peer is gone and there is nobody to send a close frame to.
		r.stopWith(0, "")
		return false
	}
	return true
}

// handOff gives the turn away if the batch holds messages or the reader
// side ended, and reports whether it did.
func (r *reader) handOff(c *conn) bool {
	switch {
	case len(r.batch) > 0:
		c.readyAt = r.nowNano
		t := ruleTask{c: c, events: r.batch, bytes: int64(r.batchBytes), stop: r.stop, code: r.closeCode, reason: r.reason}
		r.batch = nil
		if !r.e.pool.submit(t) { // shutdown's deadline has passed
			r.finishWith(c, 0, "")
		}
		return true
	case r.stop:
		r.finishWith(c, r.closeCode, r.reason)
		return true
	case r.mailFull:
		r.mailFull = false
		if c.holdRead(r.e.limits.OutboundQueueBytes) {
			c.readyAt = r.nowNano // the server's delay, forgiven by the rate limit
			return true
		}
	}
	return false
}

func (r *reader) feed(c *conn, p []byte) {
	if err := c.rd.Feed(p, r); err != nil {
		if ce, ok := err.(*wsframe.CloseError); ok {
			r.stopWith(ce.Code, ce.Reason)
		} else {
			r.stopWith(ws.StatusProtocolError, "protocol error")
		}
	}
}

func (r *reader) stopWith(code ws.StatusCode, reason string) {
	if r.stop {
		return
	}
	r.stop, r.closeCode, r.reason = true, code, reason
}

// finishWith ends c's reader side: the owner learns why and closes, and
// the reader's reference is dropped. The caller holds the turn.
func (r *reader) finishWith(c *conn, code ws.StatusCode, reason string) {
	r.e.endReader(c, code, reason)
}

// endReader ends c's reader side for whoever holds its turn.
func (e *Engine) endReader(c *conn, code ws.StatusCode, reason string) {
	c.sched.Store(schedDead)
	c.postReaderGone(code, reason)
	e.readerDone(c)
	c.release(e)
}

// OnMessage implements wsframe.Handler: rate-limit, decode and collect one
// client message.
func (r *reader) OnMessage(op ws.OpCode, p []byte) {
	c := r.c
	if r.stop || c.closing.Load() {
		return
	}
	if lim := r.e.limits.ClientEventsPerSecond; lim > 0 && !c.bucket.allow(r.nowNano, lim, r.e.limits.ClientEventsBurst) {
		r.e.metrics.rateLimited.Inc()
		r.stopWith(CloseRateLimited, "rate limited")
		return
	}
	ev, reply, err := r.e.hub.codecs[c.proto].decode(op, p)
	if err != nil {
		if ce, ok := err.(*wsframe.CloseError); ok {
			r.stopWith(ce.Code, ce.Reason)
		} else {
			r.stopWith(ws.StatusInvalidFramePayloadData, "invalid message")
		}
		return
	}
	if reply != nil && c.postFrame(reply, r.e.limits.OutboundQueueBytes) {
		r.mailFull = true
	}
	if ev.none {
		return // the protocol's own message
	}
	r.e.metrics.clientEvents.Inc()
	r.batch = append(r.batch, ev)
	r.batchBytes += ev.size
	if r.batchBytes >= maxBatchBytes {
		r.full = true
	}
}

// OnPing implements wsframe.Handler: answer with a pong carrying p.
func (r *reader) OnPing(p []byte) {
	if r.stop {
		return
	}
	if r.c.postFrame(serverFrame(ws.OpPong, p), r.e.limits.OutboundQueueBytes) {
		r.mailFull = true
	}
}

// OnPong implements wsframe.Handler. Any byte received already counts as
// liveness, so there is nothing more to do.
func (r *reader) OnPong(p []byte) {}

// OnClose implements wsframe.Handler: the peer closes; echo its code.
func (r *reader) OnClose(code ws.StatusCode, reason []byte) {
	if r.stop {
		return
	}
	if code == 0 || code == ws.StatusNoStatusRcvd {
		code = ws.StatusNormalClosure
	}
	r.stopWith(code, "")
}

// bucket is a connection's client event rate: a token bucket of burst
// events, refilled at the configured rate. Owned by the reader side.
type bucket struct {
	at     int64 // unix nanos of the last refill
	tokens int32 // thousandths of an event
	// extra raises the cap for the current turn by what the client could
	// have sent, at the rate, while its input waited on the server: events
	// that queued in the kernel while the server was busy arrive bunched,
	// and are not the client's fault. Thousandths of an event.
	extra int32
}

// maxTokens bounds a bucket's thousandths so that they fit an int32:
// about two million events.
const maxTokens = math.MaxInt32

// maxForgive bounds how much server delay one turn forgives.
const maxForgive = 60 * time.Second

func (b *bucket) fill(now int64, burst int) {
	b.tokens, b.at = int32(min(int64(burst)*1000, maxTokens)), now
}

// forgive raises this turn's cap by lag's worth of events at rate.
func (b *bucket) forgive(lag int64, rate int) {
	if lag <= 0 || rate <= 0 {
		return
	}
	lag = min(lag, int64(maxForgive))
	b.extra = int32(min(lag/1000*int64(rate)/1000, maxTokens)) // thousandths: lag/1e9 s × rate × 1000
}

// allow takes one event's token at now, refilling first.
func (b *bucket) allow(now int64, rate, burst int) bool {
	limit := min(int64(burst)*1000+int64(b.extra), maxTokens)
	tokens := int64(b.tokens)
	if d := now - b.at; d > 0 {
		d = min(d, int64(maxForgive))
		tokens += d / 1000 * int64(rate) / 1000
		b.at = now
	}
	tokens = min(tokens, limit)
	if tokens < 1000 {
		b.tokens = int32(tokens)
		return false
	}
	b.tokens = int32(tokens - 1000)
	return true
}
