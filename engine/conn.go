package engine

import (
	"encoding/json"
	"math"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sidecar/sidecar/engine/auth"
	"github.com/sidecar/sidecar/engine/wsframe"
)

// A conn is one client session: today an upgraded WebSocket held as a bare
// non-blocking file descriptor, registered once with the edge-triggered
// poller.
//
// Who touches what:
//   - the reader: whoever holds the read turn (sched is running or again)
//     owns rd, bucket and readyAt and reads the socket. The turn is held by
//     a read worker, or travels with the conn's messages through the rule
//     pool and comes back (see reader.go);
//   - the owner: the partition goroutine the user hashes to owns every field
//     under "owner side": the outbound queue, the index, timers and the close
//     sequence. Only the owner writes to the transport;
//   - everyone else posts to the conn's mailbox (mailbox.go), which never
//     blocks, or sends the owner a job.
//
// The descriptor is closed when the last of refs is released: one ref for
// the reader side, one for the owner side. Nobody else touches fd.
type conn struct {
	fd   int
	tr   transport // where the owner writes: fd itself, as an fdTransport
	user string
	part *partition
	// claims is the token's claims as compact JSON, swapped by a token
	// refresh. A decoded map costs several times more and is only needed
	// when a client or lifecycle event goes to the rules; identity()
	// decodes it then.
	claims atomic.Pointer[[]byte]

	// Reader side.
	rd     wsframe.Reader
	bucket bucket // client event rate
	// readyAt is when the conn's input began to wait on the server (unix
	// nanos): the readable edge that started the turn, or the hand-off of
	// its messages to the rule pool. Written before the conn is queued,
	// read by whoever takes it from the queue.
	readyAt  int64
	sched    atomic.Int32  // schedIdle, schedRunning, schedAgain, schedDead
	refs     atomic.Int32  // the reader's and the owner's; the last release closes fd
	lastRead atomic.Uint32 // unix seconds of the last byte received
	// expires is when the token stops being accepted, unix seconds: its exp
	// plus the verifier's leeway, as at the handshake. 0: never.
	expires atomic.Uint32
	mail    atomic.Uint32 // mail* bits not yet handled (mailbox.go)
	closing atomic.Bool   // the owner has started closing: ignore further messages
	wantOut atomic.Bool   // the owner has a backlog: a writable edge should flush it
	hup     atomic.Bool   // the poller saw a hang-up: read to EAGAIN or EOF, not to a short read
	// box is what goes with the mail bits; nil until first used.
	box atomic.Pointer[mailbox]

	// Owner side. The fields a delivery touches come first, together.
	lastSeq     uint64
	out         [][]byte // queued frames, shared and immutable; out[0] may be a partly written tail
	outBytes    int
	idx         int32     // position in part.conns; -1 when not indexed
	cidx        int32     // position in part.closing; -1 when not there
	lastPing    uint32    // unix seconds
	proto       protocol  // set before the conn is visible; read-only after
	dirty       bool      // in part.dirty, waiting for a flush
	closed      bool      // removed from the index; a close may still be in flight
	partialHead bool      // out[0] is the unwritten tail of a frame already started
	added       bool      // the owner has indexed it (jobAdd handled)
	finOnFlush  bool      // shut down writing once the queue is empty
	readerGone  bool      // the owner learned that the reader side ended
	dedup       bool      // replayed recently: skip live events it was replayed (partition.replayed)
	outInline   [1][]byte // the queue's storage while it holds one frame, the usual case
	blockedAt   int64     // unix nanos when a write first fell behind; 0: not behind
	lingerUntil int64     // unix nanos; 0: not lingering; -1: released
	rooms       []string
}

// Read scheduling states. The poller moves idle→running (and queues the
// conn for a worker) or running→again; the turn's holder loops while it
// finds again.
const (
	schedIdle int32 = iota
	schedRunning
	schedAgain
	schedDead
)

func newConn(fd int, ident *auth.Identity, leeway time.Duration, now time.Time) *conn {
	c := &conn{fd: fd, user: ident.UserID, idx: -1, cidx: -1}
	c.tr = (*fdTransport)(&c.fd)
	c.setIdentity(ident, leeway)
	c.lastRead.Store(uint32(now.Unix()))
	c.lastPing = uint32(now.Unix())
	c.out = c.outInline[:0]
	c.refs.Store(2)
	return c
}

// setIdentity keeps what c needs of a (new) token: its claims, compactly,
// and when it stops being accepted.
func (c *conn) setIdentity(ident *auth.Identity, leeway time.Duration) {
	raw, err := json.Marshal(ident.Claims)
	if err != nil || ident.Claims == nil {
		raw = []byte("{}") // claims decoded from JSON always encode
	}
	c.claims.Store(&raw)
	var exp uint32
	if !ident.Expires.IsZero() {
		// Seconds fit 32 bits until 2106; a token valid beyond is valid.
		exp = uint32(min(max(ident.Expires.Add(leeway).Unix(), 1), math.MaxUint32))
	}
	c.expires.Store(exp)
}

// identity is who c is, for the rules: the user id and the token's claims.
func (c *conn) identity() *auth.Identity {
	var claims map[string]any
	if raw := c.claims.Load(); raw != nil {
		json.Unmarshal(*raw, &claims)
	}
	return &auth.Identity{UserID: c.user, Claims: claims}
}

// release drops one reference; the last one closes the descriptor.
func (c *conn) release(e *Engine) {
	if c.refs.Add(-1) == 0 {
		if c.fd >= 0 { // else a long-polling conn: no descriptor
			e.fds.remove(c.fd, c)
			unix.Close(c.fd)
			e.openFDs.Add(-1)
		}
		c.rd.Release()
	}
}

// schedule gives the conn a read turn, or notes that more arrived while one
// is under way. It reports whether the caller must queue the conn.
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
