package engine

import (
	"hash/fnv"
	"sync"
	"sync/atomic"
	"time"
)

// The hub is this node's index of sessions, by user and by room, and what
// delivers to them. It is split into partitions by user (partition.go),
// each run by one goroutine that alone owns its users' connections: a
// targeted event goes to the one partition that owns the user, a room or
// broadcast event to every partition, and none of it takes a lock.
type hub struct {
	parts  []*partition
	codecs [numProtocols]codec
	// stopped is closed when the partitions stop: whoever would still send
	// them a job, or wait on one, gives up instead of blocking forever.
	stopped chan struct{}

	// pubMu orders publishes: a message gets its stream id, is kept for
	// replay and is queued to its partitions under it, so every partition
	// receives messages in id order and the store holds them in that order
	// (replay.go relies on both). Waiting for the partitions to handle a
	// message is done outside it.
	pubMu sync.Mutex
	// lastMs is the newest stream id's time: ids never go back, whatever
	// the clock. Raised by publishes under pubMu, and by position(), which
	// a partition calls and so must not take pubMu (a publisher holds it
	// while it waits on a full partition).
	lastMs atomic.Int64
	// stamp gives m its stream id and keeps it for replay, under pubMu.
	stamp func(m *Message, ms int64)
	// sawStamp is told the id of another node's message that a cluster's
	// streams stamped (Engine.sawStamp).
	sawStamp func(id string)
}

var _ Hub = (*hub)(nil)

// partFor is the partition that owns user's connections.
func (h *hub) partFor(user string) *partition {
	if len(h.parts) == 1 {
		return h.parts[0]
	}
	f := fnv.New32a()
	f.Write([]byte(user))
	return h.parts[f.Sum32()%uint32(len(h.parts))]
}

// Deliver gives m its stream id (if it has none), keeps it for replay, and
// hands it to the partitions that own a recipient. With wait, it returns
// after each has queued it, with the number of connections reached.
func (h *hub) Deliver(m *Message, wait bool) (int, error) {
	h.pubMu.Lock()
	locked := true
	defer func() {
		if locked {
			h.pubMu.Unlock()
		}
	}()
	switch {
	case !m.Remote && h.stamp != nil:
		h.stamp(m, h.raiseMs(time.Now().UnixMilli()))
	case m.Remote && m.Stamped && h.sawStamp != nil:
		h.sawStamp(m.ID)
	}
	if m.To.Empty() {
		return 0, nil
	}
	d := &delivery{msg: m, codecs: &h.codecs}
	var mask uint64
	if m.To.All || len(m.To.Rooms) > 0 {
		mask = 1<<uint(len(h.parts)) - 1
	} else {
		for _, u := range m.To.Users {
			mask |= 1 << uint(h.partFor(u).id)
		}
	}
	if wait {
		d.done = make(chan struct{})
		for i := range h.parts {
			if mask&(1<<uint(i)) != 0 {
				d.pending.Add(1)
			}
		}
	}
	for i, p := range h.parts {
		if mask&(1<<uint(i)) != 0 && !h.send(p, job{kind: jobDeliver, d: d}) {
			return 0, ErrStopped
		}
	}
	h.pubMu.Unlock()
	locked = false
	if !wait {
		return 0, nil
	}
	select {
	case <-d.done:
	case <-h.stopped:
		return 0, ErrStopped
	}
	return int(d.delivered.Load()), nil
}

// Rooms makes user's connections on this node join or leave rooms.
func (h *hub) Rooms(user string, leave bool, rooms []string) error {
	if !h.send(h.partFor(user), job{kind: jobRooms, leave: leave, user: user, rooms: rooms}) {
		return ErrStopped
	}
	return nil
}

// send hands j to p, or gives up if the partitions have stopped.
func (h *hub) send(p *partition, j job) bool {
	select {
	case p.jobs <- j:
		return true
	case <-h.stopped:
		return false
	}
}

// sum adds up a partition counter, for stats and metrics.
func (h *hub) sum(f func(p *partition) *atomic.Int64) int64 {
	var n int64
	for _, p := range h.parts {
		n += f(p).Load()
	}
	return n
}

// delivery is one message on its way through the partitions that hold a
// recipient, with its frames: one per protocol, encoded by the first
// partition that needs it and shared, read-only, by all.
type delivery struct {
	msg       *Message
	codecs    *[numProtocols]codec
	frames    [numProtocols]lazyFrame
	delivered atomic.Int64
	// Set when the publisher waits for the count: the partitions still to
	// handle it, and closed when the last one has.
	pending atomic.Int32
	done    chan struct{}
}

type lazyFrame struct {
	once sync.Once
	b    []byte
}

// frame returns d's frame in protocol p, encoding it on first use.
func (d *delivery) frame(p protocol) []byte {
	f := &d.frames[p]
	f.once.Do(func() {
		m := d.msg
		f.b = d.codecs[p].encodeEvent(m.Event, m.Data, m.ID)
	})
	return f.b
}

// raiseMs makes lastMs at least ms and returns it.
func (h *hub) raiseMs(ms int64) int64 {
	for {
		cur := h.lastMs.Load()
		if cur >= ms {
			return cur
		}
		if h.lastMs.CompareAndSwap(cur, ms) {
			return ms
		}
	}
}
