package engine

import (
	"context"
	"net/http"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/sidecar/sidecar/engine/sio"
)

// upgradePolling takes the WebSocket that upgrades a polling session:
// `2probe` is answered `3probe` and the waiting GET released with a noop;
// at `5` the session's conn moves to the WebSocket (switchToWebSocket),
// or, not connected yet, the WebSocket waits for the CONNECT itself.
func (e *Engine) upgradePolling(w http.ResponseWriter, r *http.Request, sid string) {
	s := e.polls.get(sid)
	if s == nil {
		eioError(w, eioUnknownSID)
		return
	}
	if status, msg := checkHandshake(r); status != 0 {
		httpError(w, status, "bad_handshake", msg)
		return
	}
	if !e.originAllowed(r.Header.Get("Origin")) {
		eioError(w, eioForbidden)
		return
	}
	// One upgrade per session, as engine.io: a second one is refused.
	s.mu.Lock()
	claimed := !s.ended && !s.upgrading
	s.upgrading = s.upgrading || claimed
	s.mu.Unlock()
	if !claimed {
		eioError(w, eioBadRequest)
		return
	}
	nc, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		s.end()
		return
	}
	hs := &sioHandshake{e: e, nc: nc, br: rw.Reader, r: r, sid: sid}
	if !e.handshakes.add(nc) {
		nc.Close()
		s.end()
		return
	}
	defer e.handshakes.remove(nc)
	if !hs.write(switchingProtocols(r.Header.Get("Sec-WebSocket-Key"), "")) || !hs.probe(s) {
		nc.Close()
		s.mu.Lock()
		s.upgrading = false // the client may try again, or go on polling
		s.mu.Unlock()
		return
	}
	s.mu.Lock()
	for s.connecting && !s.ended { // the CONNECT's open rules are running: wait for its conn
		s.mu.Unlock()
		time.Sleep(time.Millisecond)
		s.mu.Lock()
	}
	c, slot, pre, ended := s.c, s.slot, s.pre, s.ended
	var pending [][]byte
	if c == nil && !ended {
		// Not connected yet: the WebSocket carries on the wait for the
		// CONNECT, with the session's place and its count of those
		// waiting; what the session held goes first on it.
		pending = s.pending
		s.pending, s.bytes = nil, 0
		s.slot, s.pre, s.ended = false, false, true
		s.timer.Stop()
		s.beat.Stop()
		s.signal()
	}
	s.mu.Unlock()
	switch {
	case ended:
		hs.closeWith(ws.StatusPolicyViolation, "the session has ended")
		return
	case c != nil:
		e.switchToWebSocket(s, c, hs)
		return
	}
	s.remove()
	defer func() {
		if pre {
			e.preConnect.Add(-1)
		}
	}()
	admitted := slot
	defer func() {
		if admitted {
			e.slots.Add(-1)
		}
	}()
	var out []byte
	for _, p := range pending {
		if !isNoop(p) {
			out = append(out, textFrame(p)...)
		}
	}
	if len(out) > 0 && !hs.write(out) {
		nc.Close()
		return
	}
	hs.alt = s.req // the token may be in the opening request
	ident, hello, ok := hs.await(s.opened.Add(e.cfg.SocketIO.ConnectTimeout))
	if !ok {
		nc.Close()
		return
	}
	if e.connectWebSocket(hs, ident, hello) {
		admitted = false
	}
}

// probe answers the client's probe and waits for its upgrade packet.
func (hs *sioHandshake) probe(s *pollSession) bool {
	hs.nc.SetReadDeadline(time.Now().Add(hs.e.cfg.SocketIO.PingTimeout))
	for {
		op, p, err := hs.readFrame()
		if err != nil {
			return false
		}
		if op != ws.OpText {
			hs.closeWith(ws.StatusUnsupportedData, "binary data is not supported")
			return false
		}
		switch string(p) {
		case "2probe":
			if !hs.write(textFrame(sio.AppendPong(nil, "probe"))) {
				return false
			}
			s.push(sio.AppendNoop(nil)) // the waiting GET returns: the client pauses polling
		case "5":
			return true
		default:
			hs.closeWith(ws.StatusProtocolError, "want 2probe, then 5")
			return false
		}
	}
}

// switchToWebSocket gives c, a polling conn, the WebSocket's descriptor.
// Holding c's read turn, so that no reader looks at c.fd, it has c's
// owner queue first what the session held, as WebSocket frames, then
// point c at the descriptor; the read workers take the socket from there.
func (e *Engine) switchToWebSocket(s *pollSession, c *conn, hs *sioHandshake) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if !c.takeTurn(ctx) {
		hs.closeWith(ws.StatusGoingAway, "connection closed")
		s.mu.Lock()
		s.upgrading = false // the client may try again, or go on polling
		s.mu.Unlock()
		return
	}
	var leftover []byte
	if n := hs.br.Buffered(); n > 0 {
		leftover, _ = hs.br.Peek(n)
		leftover = append([]byte(nil), leftover...)
	}
	hs.nc.SetDeadline(time.Time{})
	fd, err := detach(hs.nc)
	if err != nil {
		e.log.Error("detach socket", "err", err)
		s.end()
		e.endReader(c, 0, "") // the turn is held: the reader side ends here
		return
	}
	moved := make(chan bool, 1)
	ok := e.hub.send(c.part, job{kind: jobCall, fn: func() {
		p := c.part
		if t, ok := c.tr.(*pollTransport); !ok || t.s != s || c.closed {
			moved <- false // closed meanwhile, or moved already
			return
		}
		s.mu.Lock()
		if s.ended { // ended meanwhile (a second GET or POST): nothing to move
			s.mu.Unlock()
			moved <- false
			return
		}
		pending := s.pending
		s.pending, s.bytes, s.ended = nil, 0, true
		s.signal()
		s.mu.Unlock()
		frames := make([][]byte, 0, len(pending)+len(c.out))
		for _, pl := range pending {
			if isNoop(pl) {
				continue // it was for a GET
			}
			f := textFrame(pl)
			frames = append(frames, f)
			c.outBytes += len(f)
		}
		c.out = append(frames, c.out...)
		c.fd = fd
		c.tr = (*fdTransport)(&c.fd)
		if n := e.limits.SendBufferBytes; n > 0 {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, n)
		}
		e.openFDs.Add(1)
		e.fds.set(fd, c)
		if !c.dirty && len(c.out) > 0 {
			c.dirty = true
			p.dirty = append(p.dirty, c)
		}
		moved <- true
	}})
	s.remove()
	if !ok || !<-moved {
		unix.Close(fd)
		e.endReader(c, 0, "")
		return
	}
	if err := e.poller.Add(fd); err != nil {
		e.log.Error("register connection", "err", err)
		e.endReader(c, ws.StatusInternalServerError, "internal error")
		return
	}
	e.startReading(c, leftover, time.Now().UnixNano())
}

// isNoop reports the Engine.IO noop: it releases a GET, and means nothing
// on a WebSocket.
func isNoop(p []byte) bool { return len(p) == 1 && p[0] == '6' }
