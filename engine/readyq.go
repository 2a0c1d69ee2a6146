package engine

import "sync"

// readyQueue holds the conns whose read turn waits for a read worker. A
// conn is in it at most once, since it has at most one read turn, so it
// never holds more than the node's connections, and push never blocks: the
// poller must never wait on the workers.
type readyQueue struct {
	mu     sync.Mutex
	cond   sync.Cond
	q      []*conn // guarded by mu; q[head:] is the queue
	head   int
	closed bool
}

func (q *readyQueue) init() { q.cond.L = &q.mu }

// push queues c's read turn. It reports false once the queue is closed: the
// caller still holds the turn and must end it.
func (q *readyQueue) push(c *conn) bool {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return false
	}
	if q.head > 0 && q.head == len(q.q) {
		q.q, q.head = q.q[:0], 0
	}
	q.q = append(q.q, c)
	q.mu.Unlock()
	q.cond.Signal()
	return true
}

// pop waits for a conn; nil means the queue is closed.
func (q *readyQueue) pop() *conn {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.head == len(q.q) && !q.closed {
		q.cond.Wait()
	}
	if q.closed {
		return nil
	}
	c := q.q[q.head]
	q.q[q.head] = nil
	q.head++
	if q.head > 1024 && q.head*2 > len(q.q) { // reclaim the consumed front
		n := copy(q.q, q.q[q.head:])
		clear(q.q[n:])
		q.q, q.head = q.q[:n], 0
	}
	return c
}

// close wakes every worker to return and hands back the conns still
// queued; their turns are the caller's to end.
func (q *readyQueue) close() []*conn {
	q.mu.Lock()
	q.closed = true
	left := append([]*conn(nil), q.q[q.head:]...)
	q.q, q.head = nil, 0
	q.mu.Unlock()
	q.cond.Broadcast()
	return left
}
