package engine

import (
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// A partition owns the connections of the users that hash to it: their
// index (by user and by room), their outbound queues, their timers and the
// way they close. One goroutine runs it and is the only one to touch that
// state, so the hub needs no locks, and every connection receives its
// frames in the order its partition handled them.
//
// Jobs come in through one bounded channel. A full channel makes publishers
// wait: backpressure, never unbounded memory.
type partition struct {
	e    *Engine
	id   int
	jobs chan job

	conns []*conn            // every indexed conn; conn.idx is its position
	users map[string][]*conn // by user id
	rooms map[string][]*conn // by room name
	dirty []*conn            // conns with queued frames, flushed after each batch
	// closing holds conns taken out of the index whose close is still in
	// flight: a close frame to flush, or a peer to wait for.
	closing []*conn
	seq     uint64 // delivery sequence, to send a frame once to a conn that several targets name
	iov     [maxIovecs]unix.Iovec

	// Counters written by the partition, read by stats and metrics.
	nConns    atomic.Int64
	nUsers    atomic.Int64
	delivered atomic.Int64
	bytesOut  atomic.Int64
}

type jobKind uint8

const (
	jobAdd        jobKind = iota + 1 // index c and start its timers
	jobDeliver                       // d to its targets in this partition
	jobSend                          // frame to c alone (pong, ack)
	jobFlush                         // c's socket became writable
	jobClose                         // close c with code and reason
	jobReaderGone                    // c's reader ended; close with code unless closing already
	jobJoin                          // c, or user's conns, join rooms
	jobLeave                         // c, or user's conns, leave rooms
	jobCount                         // report user's connection count on done
	jobDrain                         // close every conn with 1001; report on done
	jobStop                          // return
)

// job is passed by value through the channel: sending one allocates nothing.
type job struct {
	kind   jobKind
	code   ws.StatusCode
	c      *conn
	d      *delivery
	frame  []byte
	reason string
	user   string
	rooms  []string
	done   chan<- int
}

func newPartition(e *Engine, id, queue int) *partition {
	return &partition{
		e:     e,
		id:    id,
		jobs:  make(chan job, queue),
		users: make(map[string][]*conn),
		rooms: make(map[string][]*conn),
	}
}

// run handles jobs until jobStop. After each batch of jobs it flushes every
// conn that got frames, so under load one write carries several frames.
// Engine.Serve starts it and stops it with jobStop.
func (p *partition) run(tick time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case j := <-p.jobs:
			if !p.handle(j) {
				return
			}
			for i := 0; i < 256 && len(p.jobs) > 0; i++ {
				if !p.handle(<-p.jobs) {
					return
				}
			}
		case now := <-t.C:
			p.tick(now)
		}
		p.flushDirty()
	}
}

func (p *partition) handle(j job) bool {
	switch j.kind {
	case jobAdd:
		p.add(j.c)
		if j.frame != nil {
			p.enqueue(j.c, j.frame) // the 101 answer: first on the wire
		}
	case jobDeliver:
		n := p.deliver(j.d)
		j.d.delivered.Add(int64(n))
		p.delivered.Add(int64(n))
		if j.d.done != nil && j.d.pending.Add(-1) == 0 {
			close(j.d.done)
		}
	case jobSend:
		p.enqueue(j.c, j.frame)
	case jobFlush:
		if len(j.c.out) > 0 {
			p.flush(j.c)
		}
	case jobClose:
		p.close(j.c, j.code, j.reason)
	case jobReaderGone:
		p.readerGone(j.c, j.code, j.reason)
	case jobJoin:
		p.forConns(j.c, j.user, func(c *conn) { p.join(c, j.rooms) })
		if j.done != nil {
			j.done <- 0
		}
	case jobLeave:
		p.forConns(j.c, j.user, func(c *conn) { p.leave(c, j.rooms) })
		if j.done != nil {
			j.done <- 0
		}
	case jobCount:
		j.done <- len(p.users[j.user])
	case jobDrain:
		for len(p.conns) > 0 {
			p.close(p.conns[len(p.conns)-1], ws.StatusGoingAway, "server shutting down")
		}
		j.done <- len(p.closing)
	case jobStop:
		p.flushDirty()
		return false
	}
	return true
}

// add indexes c. Its reader may already be running; the first frame for c
// can only come after this job, so nothing is delivered before it is known.
func (p *partition) add(c *conn) {
	if c.closed {
		return
	}
	c.idx = int32(len(p.conns))
	p.conns = append(p.conns, c)
	list := p.users[c.user]
	if list == nil {
		p.nUsers.Add(1)
	}
	p.users[c.user] = append(list, c)
	p.nConns.Add(1)
}

// unindex removes c from the index; frames for it are no longer accepted.
func (p *partition) unindex(c *conn) {
	if c.idx < 0 {
		return
	}
	last := p.conns[len(p.conns)-1]
	p.conns[c.idx] = last
	last.idx = c.idx
	p.conns[len(p.conns)-1] = nil
	p.conns = p.conns[:len(p.conns)-1]
	c.idx = -1
	if list := removeConn(p.users[c.user], c); len(list) == 0 {
		delete(p.users, c.user)
		p.nUsers.Add(-1)
	} else {
		p.users[c.user] = list
	}
	for _, r := range c.rooms {
		if list := removeConn(p.rooms[r], c); len(list) == 0 {
			delete(p.rooms, r)
		} else {
			p.rooms[r] = list
		}
	}
	c.rooms = nil
	p.nConns.Add(-1)
}

func removeConn(list []*conn, c *conn) []*conn {
	for i, x := range list {
		if x == c {
			list[i] = list[len(list)-1]
			list[len(list)-1] = nil
			return list[:len(list)-1]
		}
	}
	return list
}

// forConns calls f for c if set, else for every conn of user here.
func (p *partition) forConns(c *conn, user string, f func(*conn)) {
	if c != nil {
		if c.idx >= 0 {
			f(c)
		}
		return
	}
	for _, c := range p.users[user] {
		f(c)
	}
}

func (p *partition) join(c *conn, rooms []string) {
	for _, r := range rooms {
		if containsString(c.rooms, r) {
			continue
		}
		c.rooms = append(c.rooms, r)
		p.rooms[r] = append(p.rooms[r], c)
	}
}

func (p *partition) leave(c *conn, rooms []string) {
	for _, r := range rooms {
		if !containsString(c.rooms, r) {
			continue
		}
		c.rooms = removeString(c.rooms, r)
		if list := removeConn(p.rooms[r], c); len(list) == 0 {
			delete(p.rooms, r)
		} else {
			p.rooms[r] = list
		}
	}
}

// deliver queues d's frame for every conn here that d targets, once each,
// and returns how many. It allocates nothing per recipient.
func (p *partition) deliver(d *delivery) int {
	p.seq++
	seq, n := p.seq, 0
	to := &d.to
	send := func(c *conn) {
		if c.lastSeq == seq || (len(to.Except) > 0 && containsString(to.Except, c.user)) {
			return
		}
		c.lastSeq = seq
		if p.enqueue(c, d.frame) {
			n++
		}
	}
	if to.All {
		// Iterate over a snapshot bound: a slow consumer closed during the
		// loop is swapped out of p.conns.
		for i := 0; i < len(p.conns); i++ {
			c := p.conns[i]
			send(c)
			if c.idx < 0 { // closed as a slow consumer: its slot now holds another conn
				i--
			}
		}
		return n
	}
	// Walk the lists backwards: a slow consumer closed during the walk is
	// swapped out of its lists by their last element, already visited.
	for _, u := range to.Users {
		list := p.users[u]
		for i := len(list) - 1; i >= 0; i-- {
			send(list[i])
		}
	}
	for _, r := range to.Rooms {
		list := p.rooms[r]
		for i := len(list) - 1; i >= 0; i-- {
			send(list[i])
		}
	}
	return n
}

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

// flush writes as much of c's queue as the socket takes, without blocking.
func (p *partition) flush(c *conn) {
	progressed := false
	for len(c.out) > 0 {
		n, err := send(c.fd, c.out, &p.iov)
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
				// that came between the failed send and this store would
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
// already started, then the write side shut. The descriptor is released
// when the peer has gone too, or after a short linger.
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
	c.out = append(c.out, closeFrame(code, reason))
	c.outBytes += len(c.out[len(c.out)-1])
	c.finOnFlush = true
	// Give the close frame the write timeout to leave; then give up.
	c.lingerUntil = time.Now().Add(p.e.limits.WriteTimeout).UnixNano()
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
	unix.Shutdown(c.fd, unix.SHUT_WR)
	c.lingerUntil = time.Now().Add(closeLinger).UnixNano()
	p.addClosing(c)
}

// closeLinger is how long a closed conn waits for the peer's close frame or
// FIN before the socket is torn down.
const closeLinger = 2 * time.Second

// release drops the owner's reference. If the reader is still there, shut
// the socket down so that it wakes, reads EOF and drops its own.
func (p *partition) release(c *conn) {
	if c.lingerUntil == -1 {
		return // released already
	}
	if !c.readerGone {
		unix.Shutdown(c.fd, unix.SHUT_RDWR)
	}
	c.lingerUntil = -1
	c.out = nil
	c.outBytes = 0
	p.removeClosing(c)
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
	ping := int64(l.PingInterval / time.Second)
	idle := int64(l.IdleTimeout / time.Second)
	for i := 0; i < len(p.conns); i++ {
		c := p.conns[i]
		var code ws.StatusCode
		var reason string
		switch {
		case c.blockedAt != 0 && nano-c.blockedAt > int64(l.WriteTimeout):
			p.e.metrics.slowConsumers.Inc()
			code, reason = CloseSlowConsumer, "slow consumer"
		case sec-c.lastRead.Load() > idle:
			code, reason = ws.StatusGoingAway, "idle timeout"
		case c.expires.Load() != 0 && sec > c.expires.Load():
			code, reason = CloseTokenExpired, "token expired"
		case sec-c.lastPing >= ping:
			c.lastPing = sec
			if !p.enqueue(c, framePing) && c.idx < 0 {
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

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func removeString(list []string, s string) []string {
	for i, x := range list {
		if x == s {
			return append(list[:i], list[i+1:]...)
		}
	}
	return list
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

// delivery is one event's frame on its way to its targets, shared by the
// partitions that handle it.
type delivery struct {
	frame     []byte
	to        Target
	delivered atomic.Int64
	// Set when the publisher waits for the count: the partitions still to
	// handle it, and closed when the last one has.
	pending atomic.Int32
	done    chan struct{}
}
