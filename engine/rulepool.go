package engine

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// The rule pool runs the rules for client events and connection.close
// events on a few goroutines of their own (rules.workers), away from
// the read workers and the poller: a slow rule delays its own connection's
// next read, never the reads of others. Webhooks run their rules on their
// own request goroutine, and connection.open rules on the handshake's.
//
// Memory is bounded twice: a connection has at most one batch of messages
// here (its read turn comes with it), and when the queued messages pass
// maxQueuedBytes, read turns park until the queue has drained to half.
type rulePool struct {
	mu     sync.Mutex
	cond   sync.Cond
	q      []ruleTask // guarded by mu; q[head:] is the queue
	head   int
	bytes  int64   // guarded by mu: client message bytes queued or running
	parked []*conn // guarded by mu: turns waiting for room, with their readyAt set
	stop   bool    // guarded by mu: workers return once the queue is empty
	busy   int     // guarded by mu: tasks running
	idle   sync.Cond
	// overloaded is set when bytes reach maxQueuedBytes and cleared when
	// they are back at half: in between, every new read turn parks, so
	// that parked turns are not starved by others that keep coming.
	overloaded bool // guarded by mu
	// abandoned is set once drain's deadline has passed: tasks still
	// running stop between two events, and what is submitted after is
	// counted, not run.
	abandoned atomic.Bool
	dropped   atomic.Int64 // events not run because of it
}

// maxQueuedBytes is the rule pool's cap on queued client messages.
const maxQueuedBytes = 32 << 20

// ruleSlice is how long a worker spends on one connection's batch before
// it puts the rest at the back of the queue, so that one chatty or slow
// connection does not keep the others waiting.
const ruleSlice = 5 * time.Millisecond

// ruleTask is one unit of work: a connection's batch of client messages,
// holding its read turn, or a lifecycle event.
type ruleTask struct {
	c      *conn
	events []clientEvent
	next   int   // events before it are done
	bytes  int64 // what events count against maxQueuedBytes
	// After the events: end the reader side with code, instead of giving
	// the turn back.
	stop   bool
	code   ws.StatusCode
	reason string

	ev *Event // a lifecycle event (then c and events are unset)
}

func (p *rulePool) init() {
	p.cond.L = &p.mu
	p.idle.L = &p.mu
}

// submit queues t. After drain's deadline it runs nothing: it counts t's
// events and reports false, and the caller ends what t held.
func (p *rulePool) submit(t ruleTask) bool {
	if p.abandoned.Load() {
		p.dropped.Add(t.count())
		return false
	}
	p.mu.Lock()
	p.bytes += t.bytes
	p.pushLocked(t)
	p.mu.Unlock()
	p.cond.Signal()
	return true
}

// count is how many events t still holds.
func (t *ruleTask) count() int64 {
	if t.ev != nil {
		return 1
	}
	return int64(len(t.events) - t.next)
}

func (p *rulePool) pushLocked(t ruleTask) {
	if p.head > 0 && p.head == len(p.q) {
		p.q, p.head = p.q[:0], 0
	}
	p.q = append(p.q, t)
}

// take waits for a task. It reports false when the pool is stopped and
// nothing is left to run.
func (p *rulePool) take() (ruleTask, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.head == len(p.q) && !p.stop {
		p.cond.Wait()
	}
	if p.head == len(p.q) {
		return ruleTask{}, false
	}
	t := p.q[p.head]
	p.q[p.head] = ruleTask{}
	p.head++
	if p.head > 1024 && p.head*2 > len(p.q) {
		n := copy(p.q, p.q[p.head:])
		clear(p.q[n:])
		p.q, p.head = p.q[:n], 0
	}
	p.busy++
	return t, true
}

// finished ends a task taken with take: its bytes leave the cap, and
// parked turns resume once the queue has drained to half.
func (p *rulePool) finished(e *Engine, bytes int64) {
	p.mu.Lock()
	p.busy--
	p.bytes -= bytes
	var resume []*conn
	if p.bytes <= maxQueuedBytes/2 {
		p.overloaded = false
		resume, p.parked = p.parked, nil // in the order they parked
	}
	if p.busy == 0 && p.head == len(p.q) {
		p.idle.Broadcast()
	}
	p.mu.Unlock()
	for _, c := range resume {
		e.resumeRead(c)
	}
}

// requeue puts the rest of a running task at the back of the queue.
func (p *rulePool) requeue(t ruleTask) {
	p.mu.Lock()
	p.busy--
	p.pushLocked(t)
	p.mu.Unlock()
	p.cond.Signal()
}

// park holds c's read turn while the queue is over its cap, and reports
// whether it did; the turn resumes when the queue has drained to half.
func (p *rulePool) park(c *conn, now int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bytes >= maxQueuedBytes {
		p.overloaded = true
	}
	if !p.overloaded {
		return false
	}
	c.readyAt = now
	p.parked = append(p.parked, c)
	return true
}

// drain waits until every queued task has run, or ctx is done, then stops
// the workers. It returns what was left: tasks not run, and parked turns.
func (p *rulePool) drain(ctx context.Context) (left []ruleTask, parked []*conn) {
	stop := context.AfterFunc(ctx, func() {
		p.mu.Lock()
		p.idle.Broadcast()
		p.mu.Unlock()
	})
	defer stop()
	p.mu.Lock()
	for (p.busy > 0 || p.head < len(p.q)) && ctx.Err() == nil {
		p.idle.Wait()
	}
	if ctx.Err() != nil {
		p.abandoned.Store(true)
	}
	left = append(left, p.q[p.head:]...)
	p.q, p.head = nil, 0
	p.stop = true
	parked, p.parked = p.parked, nil
	p.mu.Unlock()
	p.cond.Broadcast()
	return left, parked
}

// ruleWorker runs tasks until the pool is stopped. Engine.Serve starts
// them and stops them with drain.
func (e *Engine) ruleWorker() {
	for {
		t, ok := e.pool.take()
		if !ok {
			return
		}
		e.runTask(&t)
	}
}

func (e *Engine) runTask(t *ruleTask) {
	if t.ev != nil {
		e.runLifecycle(t.ev)
		e.pool.finished(e, 0)
		return
	}
	c := t.c
	start := time.Now()
	// The client sent these: it is alive, however long its turn waited here.
	c.lastRead.Store(uint32(start.Unix()))
	for t.next < len(t.events) {
		if e.pool.abandoned.Load() { // shutdown's deadline has passed
			e.pool.dropped.Add(t.count())
			e.pool.finished(e, t.bytes)
			e.endReader(c, 0, "")
			return
		}
		ev := &t.events[t.next]
		t.next++
		e.clientMessage(c, ev)
		t.events[t.next-1] = clientEvent{} // done: let its data go
		if t.next < len(t.events) && time.Since(start) > ruleSlice {
			e.pool.requeue(*t)
			return
		}
	}
	e.pool.finished(e, t.bytes)
	if t.stop {
		e.endReader(c, t.code, t.reason)
		return
	}
	e.resumeRead(c)
}

// resumeRead gives c's read turn back to the read workers. c.readyAt
// still says when its input began to wait on the server.
func (e *Engine) resumeRead(c *conn) {
	if !e.ready.push(c) {
		e.endReader(c, 0, "") // the workers have stopped: shutdown
	}
}
