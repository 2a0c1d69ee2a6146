package engine

import (
	"encoding/json"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/sidecar/sidecar/engine/auth"
	"github.com/sidecar/sidecar/engine/wsframe"
)

// A conn is one upgraded WebSocket connection, held as a bare non-blocking
// file descriptor registered once with the edge-triggered poller.
//
// Who touches what:
//   - the reader: whichever read worker holds the read turn (sched ==
//     schedRunning) owns rd, rateWin and rateN, and reads the socket;
//   - the owner: the partition goroutine the user hashes to owns every field
//     below "owner side": the outbound queue, the index position, timers and
//     the close sequence. Only the owner writes to the socket;
//   - everyone else sends the owner a job.
//
// The descriptor is closed when the last of refs is released: one ref for
// the reader side, one for the owner side. Nobody else touches fd.
type conn struct {
	fd   int
	id   uint64
	user string
	part *partition
	// claims is the token's claims as compact JSON, swapped by a token
	// refresh. A decoded map costs several times more and is only needed
	// when a client or lifecycle event goes to the rules; identity()
	// decodes it then.
	claims atomic.Pointer[[]byte]

	// Reader side.
	sched    atomic.Int32 // schedIdle, schedRunning, schedAgain, schedDead
	lastRead atomic.Int64 // unix seconds of the last byte received
	expires  atomic.Int64 // token exp, unix seconds; 0: none
	closing  atomic.Bool  // the owner has started closing: ignore further messages
	wantOut  atomic.Bool  // the owner has a backlog: a writable edge should flush it
	hup      atomic.Bool  // the poller saw a hang-up: read to EAGAIN or EOF, not to a short read
	rd       wsframe.Reader
	rateWin  int64 // unix second of the current rate window
	rateN    int32 // client events in it
	refs     atomic.Int32

	// Owner side.
	out         [][]byte  // queued frames, shared and immutable; out[0] may be a partly written tail
	outInline   [1][]byte // the queue's storage while it holds one frame, the usual case
	outBytes    int
	partialHead bool  // out[0] is the unwritten tail of a frame already started
	blockedAt   int64 // unix nanos when a write first fell behind; 0: not behind
	lastPing    int64 // unix seconds
	idx         int32 // position in part.conns; -1 when not indexed
	cidx        int32 // position in part.closing; -1 when not there
	dirty       bool  // in part.dirty, waiting for a flush
	closed      bool  // removed from the index; a close may still be in flight
	finOnFlush  bool  // shut down writing once the queue is empty
	lingerUntil int64 // unix nanos; 0: not lingering
	readerGone  bool  // the owner learned that the reader side ended
	lastSeq     uint64
	rooms       []string
}

// Read scheduling states. The poller moves idle→running (and hands the conn
// to a worker) or running→again; the worker loops while it finds again.
const (
	schedIdle int32 = iota
	schedRunning
	schedAgain
	schedDead
)

func newConn(fd int, id uint64, ident *auth.Identity, now time.Time) *conn {
	c := &conn{fd: fd, id: id, user: ident.UserID, idx: -1, cidx: -1}
	c.setIdentity(ident)
	c.lastRead.Store(now.Unix())
	c.lastPing = now.Unix()
	c.out = c.outInline[:0]
	c.refs.Store(2)
	return c
}

// setIdentity keeps what c needs of a (new) token: its claims, compactly,
// and its expiry.
func (c *conn) setIdentity(ident *auth.Identity) {
	raw, err := json.Marshal(ident.Claims)
	if err != nil || ident.Claims == nil {
		raw = []byte("{}") // claims decoded from JSON always encode
	}
	c.claims.Store(&raw)
	var exp int64
	if !ident.Expires.IsZero() {
		exp = ident.Expires.Unix()
	}
	c.expires.Store(exp)
}

// identity is who c is, for the rules: the user id and the token's claims.
func (c *conn) identity() *auth.Identity {
	var claims map[string]any
	if raw := c.claims.Load(); raw != nil {
		json.Unmarshal(*raw, &claims)
	}
	id := &auth.Identity{UserID: c.user, Claims: claims}
	if exp := c.expires.Load(); exp != 0 {
		id.Expires = time.Unix(exp, 0)
	}
	return id
}

// release drops one reference; the last one closes the descriptor.
func (c *conn) release(e *Engine) {
	if c.refs.Add(-1) == 0 {
		e.fds.remove(c.fd, c)
		unix.Close(c.fd)
		c.rd.Release()
		e.openFDs.Add(-1)
	}
}

// schedule gives the conn a read turn, or notes that more arrived while one
// is under way. It reports whether the caller must hand the conn to a worker.
func (c *conn) schedule() bool {
	for {
		switch s := c.sched.Load(); s {
		case schedIdle:
			if c.sched.CompareAndSwap(schedIdle, schedRunning) {
				return true
			}
		case schedRunning:
			if c.sched.CompareAndSwap(schedRunning, schedAgain) {
				return false
			}
		default: // again or dead: nothing to do
			return false
		}
	}
}

// endTurn ends a read turn. It reports false when more readiness arrived
// during the turn, in which case the caller keeps the turn and reads again.
func (c *conn) endTurn() bool {
	if c.sched.CompareAndSwap(schedRunning, schedIdle) {
		return true
	}
	c.sched.Store(schedRunning) // it was again
	return false
}

// reader is a read worker's state: a scratch buffer and the frame handler.
// One per worker, reused for every conn it reads.
type reader struct {
	e   *Engine
	buf []byte
	c   *conn
	now int64

	// Outcome of the current Feed, set by the handler callbacks.
	stop      bool
	closeCode ws.StatusCode // what the owner should send; 0: nothing (peer gone)
	reason    string
}

// readTurn reads c until the socket is drained, feeding the frame reader.
// The caller holds the read turn. It ends the turn, passes it on through the
// read queue, or, when the connection is finished, ends the reader side.
func (r *reader) readTurn(c *conn) {
	r.c = c
	for {
		more := r.drain(c)
		if r.stop {
			r.finish(c)
			return
		}
		// Still more after a full round: let other conns have the worker.
		// The turn stays with c and travels through the queue.
		if more && r.e.requeue(c) {
			return
		}
		if !more && c.endTurn() {
			return
		}
	}
}

// drain reads until the socket has nothing more (false), the connection
// ends (r.stop), or a round of reads is used up with data left (true).
func (r *reader) drain(c *conn) bool {
	for i := 0; i < 16; i++ {
		n, err := unix.Read(c.fd, r.buf)
		if n > 0 {
			r.now = time.Now().Unix()
			c.lastRead.Store(r.now)
			r.feed(c, r.buf[:n])
			// A short read drained the socket: any later byte raises a new
			// edge, which marks the turn "again". Not so a FIN or reset that
			// came with the last bytes: it raised no edge of its own, so
			// after a hang-up, read on until EOF.
			if r.stop || (n < len(r.buf) && !c.hup.Load()) {
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

// finish ends the reader side: the owner learns why and closes, and the
// reader's reference is dropped.
func (r *reader) finish(c *conn) {
	c.sched.Store(schedDead)
	r.e.readerGone(c, r.closeCode, r.reason)
	r.stop, r.closeCode, r.reason = false, 0, ""
	c.release(r.e)
}

// OnMessage implements wsframe.Handler.
func (r *reader) OnMessage(op ws.OpCode, p []byte) {
	if r.stop || r.c.closing.Load() {
		return
	}
	if op != ws.OpText {
		r.stopWith(ws.StatusInvalidFramePayloadData, "binary frames are not supported")
		return
	}
	r.e.clientMessage(r, r.c, p)
}

// OnPing implements wsframe.Handler: answer with a pong carrying p.
func (r *reader) OnPing(p []byte) {
	if r.stop {
		return
	}
	r.e.sendTo(r.c, serverFrame(ws.OpPong, p))
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
