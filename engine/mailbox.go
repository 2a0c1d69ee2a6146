package engine

import (
	"sync"
	"sync/atomic"

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
	// readWaits is set, under mu, when the reader stopped reading because
	// frames piled up here (the owner is behind): the owner gives the
	// read turn back once it has taken them.
	readWaits bool
	// goneCode and goneReason are written before mailReaderGone is
	// posted, once.
	goneCode   ws.StatusCode
	goneReason string
	// The connection.close event waits for both sides to finish: the owner
	// makes it when it closes the conn, and the reader side may still have
	// client events in the rules. Whichever of the two comes second (gate
	// reaching 2) queues it, so it runs after the conn's last events.
	closeEv *Event // written by the owner before its gate step
	gate    atomic.Int32
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

// postFrame queues frame for c alone (a pong, an ack). It reports whether
// more than limit bytes now wait for c's owner: its partition is behind,
// and c's reader should stop reading (holdRead) rather than pile up more.
// This is the server's back-pressure, not the client's fault: a client
// that does not read is caught by its outbound queue.
func (c *conn) postFrame(frame []byte, limit int) (full bool) {
	b := c.mailbox()
	b.mu.Lock()
	b.frames = append(b.frames, frame)
	b.bytes += len(frame)
	full = b.bytes > limit
	b.mu.Unlock()
	c.post(mailFrames)
	return full
}

// holdRead parks c's read turn until its owner has taken the frames
// waiting for it, and reports whether it did; false means they are taken
// already, and the caller goes on reading. The caller holds the turn.
func (c *conn) holdRead(limit int) bool {
	b := c.mailbox()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.bytes <= limit {
		return false
	}
	b.readWaits = true
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
		resume := b.readWaits
		b.readWaits = false
		b.mu.Unlock()
		for _, f := range frames {
			p.enqueue(c, f)
		}
		if resume {
			p.e.resumeRead(c)
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
