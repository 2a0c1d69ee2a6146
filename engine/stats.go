package engine

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sidecar/sidecar/engine/forward"
)

// Stats is the node's state for /api/socket-test/stats.
type Stats struct {
	Connections   int64            `json:"connections"`
	Users         int64            `json:"users"`
	UptimeSeconds int64            `json:"uptime_seconds"`
	Events        map[string]int64 `json:"events"`
	Delivered     int64            `json:"delivered"`
	SlowConsumers int64            `json:"slow_consumers"`
	Forward       *ForwardStats    `json:"forward,omitempty"`
	// Rooms is the members (connections) of each room on this node, the
	// largest maxStatsRooms; RoomsTotal counts them all.
	Rooms      map[string]int `json:"rooms"`
	RoomsTotal int            `json:"rooms_total"`
	// Cluster is the cluster's figures (Config.ClusterStats), absent alone.
	Cluster any `json:"cluster,omitempty"`
}

// Counts are the node's connections and users (with a connection here),
// read without asking the partitions.
func (e *Engine) Counts() (connections, users int64) {
	return e.hub.sum(func(p *partition) *atomic.Int64 { return &p.nConns }),
		e.hub.sum(func(p *partition) *atomic.Int64 { return &p.nUsers })
}

// maxStatsRooms caps the rooms the stats answer lists.
const maxStatsRooms = 1000

// ForwardStats is the outbox's forward.Stats as the stats answer shows it:
// snake_case keys, like every JSON answer of the API. engine/forward keeps
// its own field names; this is the one place that maps them.
type ForwardStats struct {
	Pending   int64 `json:"pending"`   // queued now, including those waiting for a retry
	Delivered int64 `json:"delivered"` // answered 2xx
	Retried   int64 `json:"retried"`   // attempts that failed and were rescheduled
	Failed    int64 `json:"failed"`    // dropped: the retry horizon passed
	Gone      int64 `json:"gone"`      // dropped: the app answered 410
	// PendingBytes is what the queued requests count against
	// forward.max_pending_bytes. A field that forward.Stats gains goes
	// here too, with its snake_case name, and in forwardStats.
	PendingBytes int64 `json:"pending_bytes"`
}

func forwardStats(s forward.Stats) *ForwardStats {
	return &ForwardStats{
		Pending:   s.Pending,
		Delivered: s.Delivered,
		Retried:   s.Retried,
		Failed:    s.Failed,
		Gone:      s.Gone,

		PendingBytes: s.PendingBytes,
	}
}

// Stats returns the node's counters now.
func (e *Engine) Stats() Stats {
	s := Stats{
		UptimeSeconds: int64(time.Since(e.started).Seconds()),
		Events:        e.events.snapshot(),
		SlowConsumers: int64(counterValue(e.metrics.slowConsumers)),
		Connections:   e.hub.sum(func(p *partition) *atomic.Int64 { return &p.nConns }),
		Users:         e.hub.sum(func(p *partition) *atomic.Int64 { return &p.nUsers }),
		Delivered:     e.hub.sum(func(p *partition) *atomic.Int64 { return &p.delivered }),
	}
	if e.cfg.Forwarder != nil {
		s.Forward = forwardStats(e.cfg.Forwarder.Stats())
	}
	s.Rooms, s.RoomsTotal = e.roomSizes()
	if e.cfg.ClusterStats != nil {
		s.Cluster = e.cfg.ClusterStats()
	}
	return s
}

// roomSizes asks every partition for its rooms' members and adds them up:
// a room has members in the partitions of each of its users.
func (e *Engine) roomSizes() (map[string]int, int) {
	sizes := make(map[string]int)
	var mu sync.Mutex
	done := make(chan struct{}, len(e.hub.parts))
	asked := 0
	for _, p := range e.hub.parts {
		if !e.hub.send(p, job{kind: jobCall, fn: func() {
			mu.Lock()
			for r, list := range p.rooms {
				sizes[r] += len(list)
			}
			mu.Unlock()
			done <- struct{}{}
		}}) {
			break
		}
		asked++
	}
	for range asked {
		select {
		case <-done:
		case <-e.hub.stopped:
			return map[string]int{}, 0
		}
	}
	total := len(sizes)
	if total > maxStatsRooms {
		names := make([]string, 0, total)
		for r := range sizes {
			names = append(names, r)
		}
		slices.SortFunc(names, func(a, b string) int { return cmp.Compare(sizes[b], sizes[a]) })
		for _, r := range names[maxStatsRooms:] {
			delete(sizes, r)
		}
	}
	return sizes, total
}

// fdTable maps a descriptor to its conn for the poller.
type fdTable struct {
	mu    sync.RWMutex
	conns []*conn // guarded by mu
}

func (t *fdTable) get(fd int) *conn {
	t.mu.RLock()
	var c *conn
	if fd < len(t.conns) {
		c = t.conns[fd]
	}
	t.mu.RUnlock()
	return c
}

func (t *fdTable) set(fd int, c *conn) {
	t.mu.Lock()
	if fd >= len(t.conns) {
		n := 2 * len(t.conns)
		if n <= fd {
			n = fd + 1024
		}
		grown := make([]*conn, n)
		copy(grown, t.conns)
		t.conns = grown
	}
	t.conns[fd] = c
	t.mu.Unlock()
}

// closeAll closes every descriptor still in the table and returns the
// conns they were; only for the end of Serve, when nothing else runs.
func (t *fdTable) closeAll() []*conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	var left []*conn
	for fd, c := range t.conns {
		if c != nil {
			unix.Close(fd)
			c.rd.Release()
			t.conns[fd] = nil
			left = append(left, c)
		}
	}
	return left
}

// remove clears fd's slot if it still holds c; the descriptor is closed
// right after, and only then may the number be reused.
func (t *fdTable) remove(fd int, c *conn) {
	t.mu.Lock()
	if fd < len(t.conns) && t.conns[fd] == c {
		t.conns[fd] = nil
	}
	t.mu.Unlock()
}

// eventCounts counts published events by name, for stats. Names come from
// rules and API callers; past maxEventNames the rest count as "other".
type eventCounts struct {
	mu sync.Mutex
	m  map[string]int64 // guarded by mu
}

const maxEventNames = 1000

func (c *eventCounts) init() { c.m = make(map[string]int64) }

func (c *eventCounts) add(name string) {
	c.mu.Lock()
	if _, ok := c.m[name]; !ok && len(c.m) >= maxEventNames {
		name = "other"
	}
	c.m[name]++
	c.mu.Unlock()
}

func (c *eventCounts) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string]int64, len(c.m))
	for k, v := range c.m {
		m[k] = v
	}
	return m
}
