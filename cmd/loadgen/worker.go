//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// worker holds its share of the connections as raw non-blocking descriptors in
// one epoll set, read by one goroutine (loop), which owns every field below:
// dialers and the command reader reach it only through channels.
type worker struct {
	epfd   int
	conns  []conn // indexed by file descriptor
	buf    []byte // shared read buffer
	out    []byte // control frame scratch
	events []unix.EpollEvent
	batch  time.Duration // pause after a non-empty epoll_wait, to read in batches
	nodes  int           // servers the connections are spread over: connection i is on node i mod nodes

	wakeups, nevents int64 // epoll_wait returns with events, and the events

	// Connecting.
	want, dialed, failed, retried int
	dialErrs                      map[string]int
	dialStart                     time.Time
	dialTook                      time.Duration
	onReady                       func(readyMsg)

	// Lifetime counters.
	open         int
	pings        int64 // pings answered
	writeErrs    int64 // pongs or close echoes that could not be written
	serverCloses int64 // close frames received
	readErrs     int64 // connections lost without a close frame
	protoErrs    int64 // malformed frames

	phase phase
}

// conn is one connection's state; it is reused when its descriptor number is.
type conn struct {
	open     bool
	armed    bool  // open when the current phase was armed
	fragging bool  // a fragmented message is being collected in frag
	recv     int32 // phase broadcasts received
	user     int32 // global index: the connection is user <prefix><user>
	node     uint8 // the server it is connected to: user mod nodes
	last     int64 // last phase seq received
	partial  []byte
	frag     []byte
}

// phase is what one measurement counts: broadcasts seq in [base, base+count).
type phase struct {
	base, count int64
	late        int64 // ns; a delivery slower than this is late
	seqs        []seqStat
	hist        hist
	frames      int64 // phase broadcasts received
	other       int64 // other text frames
	lateN       int64
	gaps        int64 // out-of-order or repeated seq on a connection
	armed       int
	closed      int // armed connections lost since arming
	firstRecv   int64
	lastRecv    int64

	// webhooks: each seq goes to one user, named in the frame's bookingId
	// ("<seq>-<user>-<sentAt>"); no per-connection order is expected.
	webhooks bool
	// targeted: each seq goes to one user, named in the frame's data as
	// "lgUser" beside seq and sentAt; no per-connection order is expected.
	targeted  bool
	misrouted int64 // webhooks, targeted: delivered to a connection of another user

	// With several nodes: per node, the armed connections, the phase
	// frames they received and (broadcasts only) each seq's deliveries.
	nodeArmed  []int
	nodeClosed []int
	nodeFrames []int64
	nodeSeqs   [][]seqStat
}

// seqStat is one broadcast's deliveries in this worker: how many, and the
// slowest and fastest, from the sentAt in its body to the receipt (ns).
type seqStat struct {
	N   int32 `json:"n"`
	Min int64 `json:"min"`
	Max int64 `json:"max"`
}

// observe takes one delivery's latency into s, whose N already counts it.
func (s *seqStat) observe(lat int64) {
	if lat > s.Max {
		s.Max = lat
	}
	if s.N == 1 || lat < s.Min {
		s.Min = lat
	}
}

func newWorker() (*worker, error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return nil, err
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	return &worker{
		epfd:     epfd,
		conns:    make([]conn, lim.Cur),
		buf:      make([]byte, 64<<10),
		out:      make([]byte, 0, 256),
		events:   make([]unix.EpollEvent, 512),
		dialErrs: map[string]int{},
	}, nil
}

// command is a request from the coordinator, answered on reply by loop.
type command struct {
	Op     string  `json:"op"` // arm, count, report, quit
	Base   int64   `json:"base,omitempty"`
	Count  int64   `json:"count,omitempty"`
	Expect int64   `json:"expect,omitempty"` // report: broadcasts each connection should have
	LateMs float64 `json:"late_ms,omitempty"`
	Mode   string  `json:"mode,omitempty"` // arm: "webhooks", "targeted", or empty for broadcasts
	reply  chan any
}

// loop runs until ctx is done or a quit command arrives. results carries
// every dial outcome; the loop counts them and calls onReady when all of
// want are in.
func (w *worker) loop(ctx context.Context, results <-chan dialResult, cmds <-chan command) error {
	defer unix.Close(w.epfd)
	for {
		n, err := unix.EpollWait(w.epfd, w.events, 10)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		now := time.Now().UnixNano()
		for i := 0; i < n; i++ {
			w.readable(int(w.events[i].Fd), now)
		}
		if n > 0 {
			w.wakeups++
			w.nevents += int64(n)
		}
		if n > 0 && w.batch > 0 {
			// In a burst, let frames pile up rather than sleep in epoll_wait:
			// a thread asleep there must be woken for every frame, and on a
			// VM that wake-up (an IPI) is charged to the server that wrote.
			// Receipt times are late by up to batch.
			time.Sleep(w.batch)
		}
		for more := true; more; {
			select {
			case r := <-results:
				w.added(r)
			case c := <-cmds:
				if w.do(c) {
					return nil
				}
			case <-ctx.Done():
				return nil
			default:
				more = false
			}
		}
	}
}

func (w *worker) added(r dialResult) {
	w.retried += r.tries - 1
	if r.err != nil {
		w.failed++
		w.dialErrs[errorKind(r.err)]++
	} else {
		w.dialed++
		c := &w.conns[r.fd]
		*c = conn{open: true, user: int32(r.index), node: uint8(r.index % max(1, w.nodes)), partial: c.partial[:0], frag: c.frag[:0]}
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(r.fd)}
		if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, r.fd, &ev); err != nil {
			unix.Close(r.fd)
			c.open = false
			w.dialed--
			w.failed++
			w.dialErrs["epoll_ctl"]++
		} else {
			w.open++
			if len(r.leftover) > 0 {
				w.data(r.fd, c, r.leftover, time.Now().UnixNano())
			}
		}
	}
	if w.dialed+w.failed == w.want && w.onReady != nil {
		w.dialTook = time.Since(w.dialStart)
		w.onReady(w.ready())
		w.onReady = nil
	}
}

// readable reads once from fd; level-triggered epoll reports it again if
// more is waiting.
func (w *worker) readable(fd int, now int64) {
	c := &w.conns[fd]
	if !c.open {
		return
	}
	n, err := unix.Read(fd, w.buf)
	if n <= 0 {
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			return
		}
		w.readErrs++
		w.drop(fd, c)
		return
	}
	w.data(fd, c, w.buf[:n], now)
}

// data parses what arrived on c, carrying an incomplete frame to the next
// read in c.partial (rare: a frame split across reads).
func (w *worker) data(fd int, c *conn, b []byte, now int64) {
	if len(c.partial) > 0 {
		c.partial = append(c.partial, b...)
		b = c.partial
	}
	used, err := w.frames(fd, c, b, now)
	if err != nil {
		if !errors.Is(err, errServerClose) {
			w.protoErrs++
		}
		w.drop(fd, c)
		return
	}
	rest := b[used:]
	switch {
	case len(rest) == 0:
		c.partial = c.partial[:0]
	case len(c.partial) > 0: // rest lies inside c.partial
		c.partial = c.partial[:copy(c.partial, rest)]
	default:
		c.partial = append(c.partial[:0], rest...)
	}
}

var (
	errServerClose = errors.New("server sent close")
	errFragment    = errors.New("continuation without a first fragment")
)

// frames handles every whole frame at the start of b and returns how many
// bytes they took.
func (w *worker) frames(fd int, c *conn, b []byte, now int64) (int, error) {
	off := 0
	for {
		f, n, err := nextFrame(b[off:])
		if err != nil || n == 0 {
			return off, err
		}
		off += n
		switch f.op {
		case opText, opBinary:
			if f.fin {
				w.message(fd, c, f.payload, now)
			} else {
				c.frag = append(c.frag[:0], f.payload...)
				c.fragging = true
			}
		case opContinuation:
			if !c.fragging {
				return off, errFragment
			}
			c.frag = append(c.frag, f.payload...)
			if f.fin {
				c.fragging = false
				w.message(fd, c, c.frag, now)
			}
		case opPing:
			w.pings++
			w.control(fd, opPong, f.payload)
		case opClose:
			w.serverCloses++
			code := f.payload
			if len(code) > 2 {
				code = code[:2]
			}
			w.control(fd, opClose, code)
			return off, errServerClose
		}
	}
}

// message accounts one text message: ours if it carries a seq in the armed
// window.
func (w *worker) message(fd int, c *conn, msg []byte, now int64) {
	if len(msg) == 1 && msg[0] == '2' { // an Engine.IO ping (Socket.IO): the pong is "3"
		w.pings++
		w.control(fd, opText, pong3)
		return
	}
	p := &w.phase
	var seq, sentAt, user int64
	var ok bool
	if p.webhooks {
		seq, user, sentAt, ok = bookingFields(msg)
	} else {
		seq, sentAt, ok = benchFields(msg)
		if ok && p.targeted {
			user, ok = intField(msg, keyLgUser)
		}
	}
	if !ok || seq < p.base || seq >= p.base+p.count {
		p.other++
		return
	}
	if p.webhooks || p.targeted {
		if user != int64(c.user) {
			p.misrouted++
		}
	} else if seq != c.last+1 {
		p.gaps++
	}
	c.last = seq
	c.recv++
	p.frames++
	if p.firstRecv == 0 {
		p.firstRecv = now
	}
	p.lastRecv = now
	s := &p.seqs[seq-p.base]
	s.N++
	var ns *seqStat // this seq's deliveries on c's node
	if p.nodeFrames != nil {
		p.nodeFrames[c.node]++
		if p.nodeSeqs != nil {
			ns = &p.nodeSeqs[c.node][seq-p.base]
			ns.N++
		}
	}
	if sentAt <= 0 {
		return
	}
	lat := now - sentAt
	s.observe(lat)
	if ns != nil {
		ns.observe(lat)
	}
	p.hist.add(time.Duration(lat))
	if lat > p.late {
		p.lateN++
	}
}

var pong3 = []byte("3")

// control writes a masked control frame (or a short text frame, the
// Engine.IO pong); a full socket buffer drops it.
func (w *worker) control(fd int, op byte, payload []byte) {
	w.out = clientControl(w.out[:0], op, payload)
	if n, err := unix.Write(fd, w.out); err != nil || n != len(w.out) {
		w.writeErrs++
	}
}

func (w *worker) drop(fd int, c *conn) {
	unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	unix.Close(fd)
	c.open = false
	c.fragging = false
	w.open--
	if c.armed {
		w.phase.closed++
		if w.phase.nodeClosed != nil {
			w.phase.nodeClosed[c.node]++
		}
	}
}

// do runs one command; it reports whether the loop should stop.
func (w *worker) do(c command) bool {
	switch c.Op {
	case "arm":
		w.arm(c.Base, c.Count, time.Duration(c.LateMs*float64(time.Millisecond)), c.Mode)
		c.reply <- map[string]any{"type": "armed", "conns": w.phase.armed}
	case "count":
		c.reply <- countMsg{Type: "count", Frames: w.phase.frames, Open: w.open, LastRecv: w.phase.lastRecv}
	case "report":
		c.reply <- w.report(c.Expect)
	case "quit":
		c.reply <- map[string]any{"type": "bye"}
		return true
	default:
		c.reply <- map[string]any{"type": "error", "error": "unknown op " + c.Op}
	}
	return false
}

func (w *worker) arm(base, count int64, late time.Duration, mode string) {
	p := phase{base: base, count: count, late: int64(late), seqs: make([]seqStat, count),
		webhooks: mode == "webhooks", targeted: mode == "targeted"}
	if w.nodes > 1 {
		p.nodeArmed = make([]int, w.nodes)
		p.nodeClosed = make([]int, w.nodes)
		p.nodeFrames = make([]int64, w.nodes)
		if mode == "" { // a broadcast reaches every node: its last receipt on each
			p.nodeSeqs = make([][]seqStat, w.nodes)
			for i := range p.nodeSeqs {
				p.nodeSeqs[i] = make([]seqStat, count)
			}
		}
	}
	w.phase = p
	for i := range w.conns {
		c := &w.conns[i]
		c.armed = c.open
		c.recv = 0
		c.last = base - 1
		if c.open {
			w.phase.armed++
			if w.phase.nodeArmed != nil {
				w.phase.nodeArmed[c.node]++
			}
		}
	}
}

type countMsg struct {
	Type     string `json:"type"`
	Frames   int64  `json:"frames"`
	Open     int    `json:"open"`
	LastRecv int64  `json:"last_recv"`
}

type readyMsg struct {
	Type    string         `json:"type"`
	Want    int            `json:"want"`
	Open    int            `json:"open"`
	PerNode []int          `json:"open_per_node,omitempty"` // with several nodes: open, by node
	Failed  int            `json:"failed"`
	Retried int            `json:"retried"`
	Errors  map[string]int `json:"errors,omitempty"`
	TookMs  int64          `json:"took_ms"`
}

func (w *worker) ready() readyMsg {
	return readyMsg{Type: "ready", Want: w.want, Open: w.open, PerNode: w.openPerNode(), Failed: w.failed,
		Retried: w.retried, Errors: w.dialErrs, TookMs: w.dialTook.Milliseconds()}
}

// openPerNode counts the open connections by node; nil with one node.
func (w *worker) openPerNode() []int {
	if w.nodes <= 1 {
		return nil
	}
	per := make([]int, w.nodes)
	for i := range w.conns {
		if c := &w.conns[i]; c.open {
			per[c.node]++
		}
	}
	return per
}

// reportMsg is one worker's account of a phase.
type reportMsg struct {
	Type       string      `json:"type"`
	Armed      int         `json:"armed"`      // connections open at arm
	Open       int         `json:"open"`       // open now
	Closed     int         `json:"closed"`     // armed connections lost since
	Frames     int64       `json:"frames"`     // phase broadcasts received
	Other      int64       `json:"other"`      // other text frames
	Late       int64       `json:"late"`       // deliveries slower than late_ms
	Gaps       int64       `json:"gaps"`       // out-of-order or repeated seq
	Misrouted  int64       `json:"misrouted"`  // webhooks: frames for another user
	Incomplete int         `json:"incomplete"` // armed connections short of expect
	Missing    int64       `json:"missing"`    // sum over armed connections of expect-recv
	FirstRecv  int64       `json:"first_recv"`
	LastRecv   int64       `json:"last_recv"`
	Seqs       []seqStat   `json:"seqs"`
	Hist       [][2]uint64 `json:"hist"`
	HistMaxUs  int64       `json:"hist_max_us"`
	Pings      int64       `json:"pings"`
	WriteErrs  int64       `json:"write_errs"`
	Closes     int64       `json:"server_closes"`
	ReadErrs   int64       `json:"read_errs"`
	ProtoErrs  int64       `json:"proto_errs"`
	Wakeups    int64       `json:"wakeups"` // epoll_wait returns with events, since start
	Events     int64       `json:"events"`

	// With several nodes, each by node (index as in --url).
	NodeArmed   []int       `json:"node_armed,omitempty"`
	NodeOpen    []int       `json:"node_open,omitempty"`
	NodeClosed  []int       `json:"node_closed,omitempty"`
	NodeFrames  []int64     `json:"node_frames,omitempty"`
	NodeMissing []int64     `json:"node_missing,omitempty"`
	NodeSeqs    [][]seqStat `json:"node_seqs,omitempty"` // broadcasts
}

func (w *worker) report(expect int64) reportMsg {
	p := &w.phase
	r := reportMsg{
		Type: "report", Armed: p.armed, Open: w.open, Closed: p.closed,
		Frames: p.frames, Other: p.other, Late: p.lateN, Gaps: p.gaps, Misrouted: p.misrouted,
		FirstRecv: p.firstRecv, LastRecv: p.lastRecv,
		Seqs: p.seqs, Hist: p.hist.sparse(), HistMaxUs: p.hist.max,
		Pings: w.pings, WriteErrs: w.writeErrs, Closes: w.serverCloses,
		ReadErrs: w.readErrs, ProtoErrs: w.protoErrs,
		Wakeups: w.wakeups, Events: w.nevents,
		NodeArmed: p.nodeArmed, NodeOpen: w.openPerNode(), NodeClosed: p.nodeClosed,
		NodeFrames: p.nodeFrames, NodeSeqs: p.nodeSeqs,
	}
	if w.nodes > 1 {
		r.NodeMissing = make([]int64, w.nodes)
	}
	for i := range w.conns {
		c := &w.conns[i]
		if c.armed && int64(c.recv) < expect {
			r.Incomplete++
			r.Missing += expect - int64(c.recv)
			if r.NodeMissing != nil {
				r.NodeMissing[c.node] += expect - int64(c.recv)
			}
		}
	}
	return r
}

// dialAll opens want connections, global indexes first.., paced at rate per
// second by up to workers goroutines, and sends every outcome on results.
func dialAll(ctx context.Context, d *dialer, srcs []net.IP, prefix string, first, want, rate, workers, retries int, results chan<- dialResult) {
	jobs := make(chan int)
	for range workers {
		// Each dialing goroutine stops when jobs is closed.
		go func() {
			for i := range jobs {
				results <- dialOne(ctx, d, srcs[i%len(srcs)], fmt.Sprintf("%s%d", prefix, i), i, retries)
			}
		}()
	}
	defer close(jobs)
	start := time.Now()
	t := time.NewTimer(0)
	defer t.Stop()
	for k := range want {
		if due := start.Add(time.Duration(k) * time.Second / time.Duration(rate)); time.Until(due) > 0 {
			t.Reset(time.Until(due))
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
		select {
		case jobs <- first + k:
		case <-ctx.Done():
			return
		}
	}
}

func dialOne(ctx context.Context, d *dialer, src net.IP, user string, index, retries int) dialResult {
	r := dialResult{index: index}
	backoff := 100 * time.Millisecond
	for r.tries = 1; ; r.tries++ {
		r.fd, r.leftover, r.err = d.dial(ctx, src, user, index)
		if r.err == nil || r.tries > retries || ctx.Err() != nil {
			return r
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return r
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}
