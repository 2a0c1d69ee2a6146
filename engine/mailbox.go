package engine

import (
	"sync"

	"github.com/gobwas/ws"
)

// The mailbox is how the poller, the read workers and the rule pool ask a
// conn's owner for something without ever blocking on it: a saturated
// partition must not stall the poller or the reads of every other
// connection. A request sets a bit in conn.mail; the first bit set puts the
// conn on its partition's wake list, and the partition handles the bits
// after its current batch of jobs.
const (
	mailFlush      uint32 = 1 << iota // the socket became writable
	mailFrames                        // frames wait in mailOut
	mailReaderGone                    // the reader side ended with goneCode
)

// mailbox is what goes with a conn's mail bits: the frames posted for it
// and why its reader side ended. An idle connection never has one; it is
// made on first use and kept.
type mailbox struct {
	mu     sync.Mutex
	frames [][]byte // guarded by mu: frames to queue (pongs, acks)
	bytes  int      // guarded by mu
	// goneCode and goneReason are written before mailReaderGone is
	// posted, once.
	goneCode   ws.StatusCode
	goneReason string
}

// mailbox returns c's mailbox, making it on first use.
func (c *conn) mailbox() *mailbox {
	if b := c.box.Load(); b != nil {
		return b
	}
	c.box.CompareAndSwap(nil, new(mailbox))
	return c.box.Load()
}

// wakeList is a partition's list of conns with mail. Posters append under
// mu; the partition swaps the list out whole.
type wakeList struct {
	mu    sync.Mutex
	conns []*conn // guarded by mu
	spare []*conn // the partition's: the previous list, reused
	ch    chan struct{}
}

func (w *wakeList) init() { w.ch = make(chan struct{}, 1) }

// post asks c's owner to handle bits. It never blocks.
func (c *conn) post(bits uint32) {
	if c.mail.Or(bits) != 0 {
		return // already on the wake list
	}
	w := &c.part.wake
	w.mu.Lock()
	w.conns = append(w.conns, c)
	w.mu.Unlock()
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// postFrame queues frame for c alone (a pong, an ack). It reports false
// when c already has more than limit bytes waiting for its owner: the
// caller treats it as a slow consumer.
func (c *conn) postFrame(frame []byte, limit int) bool {
	b := c.mailbox()
	b.mu.Lock()
	if b.bytes > 0 && b.bytes+len(frame) > limit {
		b.mu.Unlock()
		return false
	}
	b.frames = append(b.frames, frame)
	b.bytes += len(frame)
	b.mu.Unlock()
	c.post(mailFrames)
	return true
}

// postReaderGone tells the owner that the reader side ended, with the code
// to close with (0: the peer is gone).
func (c *conn) postReaderGone(code ws.StatusCode, reason string) {
	b := c.mailbox()
	b.goneCode, b.goneReason = code, reason
	c.post(mailReaderGone)
}

// takeWoken returns the conns posted since the last call. The slice is the
// partition's until the next call.
func (w *wakeList) takeWoken() []*conn {
	w.mu.Lock()
	list := w.conns
	w.conns = w.spare[:0]
	w.mu.Unlock()
	w.spare = list
	return list
}

// handleMail runs on the owner for every conn on the wake list. A conn not
// yet indexed keeps its bits: add handles them, so nothing can be queued
// ahead of its 101.
func (p *partition) handleMail() {
	list := p.wake.takeWoken()
	for i, c := range list {
		list[i] = nil
		if c.added {
			p.readMail(c)
		}
	}
}

func (p *partition) readMail(c *conn) {
	bits := c.mail.Swap(0)
	if bits&mailFrames != 0 {
		b := c.box.Load() // set before the bit was posted
		b.mu.Lock()
		frames := b.frames
		b.frames, b.bytes = nil, 0
		b.mu.Unlock()
		for _, f := range frames {
			p.enqueue(c, f)
		}
	}
	if bits&mailFlush != 0 && len(c.out) > 0 {
		p.flush(c)
	}
	if bits&mailReaderGone != 0 {
		b := c.box.Load()
		p.readerGone(c, b.goneCode, b.goneReason)
	}
}
