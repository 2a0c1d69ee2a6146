package engine

import (
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/sidecar/sidecar/engine/store"
)

// A partition is one shard of the hub: it owns the connections of the users
// that hash to it, their index (by user and by room), their outbound
// queues, their timers and the way they close (outq.go). One goroutine runs
// it and is the only one to touch that state, so the hub needs no locks,
// and every connection receives its frames in the order its partition
// handled them.
//
// Work comes in two ways. Publishers and the pipeline send jobs through one
// bounded channel: a full channel makes them wait, backpressure, never
// unbounded memory. The poller and the read workers, which must never wait
// on a partition, post to a conn's mailbox (mailbox.go) instead.
type partition struct {
	e    *Engine
	id   int
	jobs chan job
	wake wakeList

	conns []*conn            // every indexed conn; conn.idx is its position
	users map[string][]*conn // by user id
	rooms map[string][]*conn // by room name
	dirty []*conn            // conns with queued frames, flushed after each batch
	// closing holds conns taken out of the index whose close is still in
	// flight: a close frame to flush, or a peer to wait for.
	closing []*conn
	seq     uint64 // delivery sequence, to send a frame once to a conn that several targets name
	iov     [maxIovecs]unix.Iovec
	pres    partPresence // its users' presence (presence.go)
	// replayed holds, for conns replayed recently, what they were sent, and
	// replayHorizon the newest id of them all (replay.go).
	replayed      map[*conn]*replayed
	replayHorizon store.StreamID

	// Counters written by the partition, read by stats and metrics.
	nConns    atomic.Int64
	nUsers    atomic.Int64
	delivered atomic.Int64
	bytesOut  atomic.Int64
}

type jobKind uint8

const (
	jobAdd     jobKind = iota + 1 // index c with rooms, queue frame (its 101) first, start its timers
	jobDeliver                    // d to its targets in this partition
	jobRooms                      // c, or user's conns, join (or leave) rooms
	jobCall                       // run fn on the partition's goroutine
	jobDrain                      // close every conn with 1001; signal done
	jobStop                       // return
)

// job is passed by value through the channel: sending one allocates nothing.
type job struct {
	kind  jobKind
	leave bool // jobRooms: leave instead of join; jobAdd: replay what the conn missed after user (since)
	c     *conn
	d     *delivery
	frame []byte
	user  string
	rooms []string
	fn    func()
	done  chan<- struct{}
	hello *sioHello // jobAdd: a Socket.IO connection's CONNECT, answered instead of frame
}

func newPartition(e *Engine, id, queue int) *partition {
	p := &partition{
		e:     e,
		id:    id,
		jobs:  make(chan job, queue),
		users: make(map[string][]*conn),
		rooms: make(map[string][]*conn),
	}
	p.wake.init()
	p.pres.init()
	return p
}

// run handles jobs and mail until jobStop. After each batch it flushes every
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
		case <-p.wake.ch:
		case now := <-t.C:
			p.tick(now)
		case <-p.pres.timer.C:
			p.graceDue(time.Now())
		}
		p.handleMail()
		p.flushDirty()
	}
}

func (p *partition) handle(j job) bool {
	switch j.kind {
	case jobAdd:
		p.add(j.c, j.rooms, j.frame, j.leave, j.user, j.hello)
	case jobDeliver:
		n := p.deliver(j.d)
		j.d.delivered.Add(int64(n))
		p.delivered.Add(int64(n))
		if j.d.done != nil && j.d.pending.Add(-1) == 0 {
			close(j.d.done)
		}
	case jobRooms:
		p.forConns(j.c, j.user, func(c *conn) {
			if j.leave {
				p.leave(c, j.rooms)
			} else {
				p.join(c, j.rooms)
			}
		})
	case jobCall:
		j.fn()
	case jobDrain:
		// The users whose last connection closes now are handed to the
		// next start, not sent offline, however long the drain takes.
		p.pres.frozen = true
		for len(p.conns) > 0 {
			p.close(p.conns[len(p.conns)-1], ws.StatusGoingAway, "server shutting down")
		}
		j.done <- struct{}{}
	case jobStop:
		p.handleMail()
		p.flushDirty()
		return false
	}
	return true
}

// add indexes c in its rooms and queues response (the 101 answer) first,
// then, with replay, what it missed after since; for a Socket.IO conn,
// hello's answer instead (helloSIO). Its reader may already
// be running: mail that came before is handled now, after those, and no
// frame for c can come before this job. The user's first connection makes
// them online.
func (p *partition) add(c *conn, rooms []string, response []byte, replay bool, since string, hello *sioHello) {
	now := time.Now()
	c.added = true
	c.idx = int32(len(p.conns))
	p.conns = append(p.conns, c)
	list := p.users[c.user]
	if list == nil {
		p.nUsers.Add(1)
		p.userOnline(c, now)
	}
	p.users[c.user] = append(list, c)
	p.nConns.Add(1)
	p.join(c, rooms)
	switch {
	case hello != nil:
		p.helloSIO(c, hello)
	case response != nil:
		p.enqueue(c, response)
		fallthrough
	default:
		if replay && c.idx >= 0 {
			p.replay(c, since)
		}
	}
	if c.mail.Load() != 0 {
		p.readMail(c)
	}
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
	p.forgetReplayed(store.StreamID{}, c)
	if list := removeConn(p.users[c.user], c); len(list) == 0 {
		delete(p.users, c.user)
		p.nUsers.Add(-1)
		p.userLeft(c.user, c.claims.Load(), time.Now())
	} else {
		p.users[c.user] = list
	}
	for _, r := range c.rooms {
		if list := removeConn(p.rooms[r], c); len(list) == 0 {
			delete(p.rooms, r)
			p.roomHere(r, false)
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
		list := p.rooms[r]
		if list == nil {
			p.roomHere(r, true)
		}
		p.rooms[r] = append(list, c)
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
			p.roomHere(r, false)
		} else {
			p.rooms[r] = list
		}
	}
}

// deliver queues d's frame for every conn here that d targets, once each,
// and returns how many. Each protocol's frame is encoded at most once (the
// first partition to need it does) and the same bytes go to every
// recipient: nothing is allocated per recipient.
func (p *partition) deliver(d *delivery) int {
	p.seq++
	seq, n := p.seq, 0
	to := &d.msg.To
	var frames [numProtocols][]byte
	// Another node's message has an id in that node's order, unless the
	// cluster's streams stamped it: only then can it have been replayed
	// here, and it is skipped like this node's own. Either way it says
	// nothing of what is still on its way here, which only this node's
	// own messages, in its publish order, do.
	var id store.StreamID
	dedup := len(p.replayed) > 0 && (!d.msg.Remote || d.msg.Stamped)
	if dedup {
		id, _ = store.ParseStreamID(d.msg.ID)
		if !d.msg.Remote {
			defer p.forgetReplayed(id, nil)
		}
	}
	send := func(c *conn, room string) {
		if c.lastSeq == seq || (len(to.Except) > 0 && containsString(to.Except, c.user)) ||
			(dedup && c.dedup && p.wasReplayed(c, id, room)) {
			return
		}
		c.lastSeq = seq
		f := frames[c.proto]
		if f == nil {
			f = d.frame(c.proto)
			frames[c.proto] = f
		}
		if p.enqueue(c, f) {
			n++
		}
	}
	if to.All {
		// Iterate over a snapshot bound: a slow consumer closed during the
		// loop is swapped out of p.conns.
		for i := 0; i < len(p.conns); i++ {
			c := p.conns[i]
			send(c, "")
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
			send(list[i], "")
		}
	}
	for _, r := range to.Rooms {
		list := p.rooms[r]
		for i := len(list) - 1; i >= 0; i-- {
			send(list[i], r)
		}
	}
	return n
}

// roomHere tells a broker that routes by room that this partition's first
// member of room joined (here), or its last left.
func (p *partition) roomHere(room string, here bool) {
	if r := p.e.roomRouter; r != nil {
		r.RoomHere(room, p.id, here)
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
