package engine

import (
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/sidecar/sidecar/engine/auth"
	"github.com/sidecar/sidecar/engine/sio"
)

// Engine.IO long-polling, socket.io-client's first transport.
//
// GET /socket.io/?EIO=4&transport=polling opens a session (pollSession):
// the answer is the open packet, with upgrades ["websocket"]. The packets
// for the client wait in the session until a GET takes them, all at once,
// joined by the record separator; a GET with nothing to take waits (the
// server's ping comes within ping_interval). A POST carries the client's
// packets. At most one GET and one POST are outstanding per session; a
// second of either ends the session (400), as engine.io does.
//
// Before the CONNECT the session is handled here alone. The CONNECT (its
// token checked as on the WebSocket transport) makes it a conn like any
// other, with no descriptor: its transport is the session
// (pollTransport), and the POST handler feeds the client's packets to the
// conn's reader holding its read turn, as a read worker feeds a socket's.
// A goroutine is held only by a request in flight.
//
// The upgrade (a WebSocket to the same sid, `2probe`, `3probe`, the noop
// that releases the waiting GET, `5`) gives the conn the WebSocket's
// descriptor: the packets the session still held go first on it, and from
// then on it is a Socket.IO WebSocket conn, on the epoll engine.
//
// Here: the sessions and their HTTP requests. pollio.go: a polling conn's
// reads and writes. pollupgrade.go: the upgrade.

// pollSession is one long-polling Engine.IO session.
type pollSession struct {
	e   *Engine
	sid string
	req *http.Request // the opening GET: its query and headers may carry the token

	opened time.Time

	mu         sync.Mutex
	pending    [][]byte // packets for the next GET
	bytes      int
	wake       chan struct{} // cap 1: a waiting GET has something, or the session ended
	getting    bool
	posting    bool
	upgrading  bool // a WebSocket has claimed the session's upgrade
	connecting bool // connect is running the open rules: the session is neither waiting nor a conn
	ended      bool // no more packets: a GET takes what is left, then the session is gone
	gone       bool // removed: every request gets "Session ID unknown"
	blocked    bool // the transport refused frames: the owner is told when a GET takes
	c          *conn
	timer      *time.Timer // the connect timeout, until the CONNECT; then the linger after the end
	slot       bool        // holds a place under limits.max_connections until its conn takes it
	pre        bool        // counted in Engine.preConnect: not connected yet
	beat       *time.Timer // the heartbeat before the CONNECT (then the conn's partition pings)
	lastPost   time.Time   // before the CONNECT: the last POST, for the ping timeout
}

// pollLinger is how long an ended session waits for the GET that takes
// its last packets (socket.io-client polls again at once), before it is
// gone. Tests shorten it (Config.pollLinger).
const pollLinger = 5 * time.Second

// pollSessions is the node's sessions by sid.
type pollSessions struct {
	mu     sync.Mutex
	m      map[string]*pollSession
	closed bool // shutting down: no new session
}

func (ps *pollSessions) get(sid string) *pollSession {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.m[sid]
}

func (ps *pollSessions) put(s *pollSession) bool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.closed {
		return false
	}
	if ps.m == nil {
		ps.m = make(map[string]*pollSession)
	}
	ps.m[s.sid] = s
	return true
}

func (ps *pollSessions) remove(s *pollSession) {
	ps.mu.Lock()
	if ps.m[s.sid] == s {
		delete(ps.m, s.sid)
	}
	ps.mu.Unlock()
}

// close refuses new sessions and returns every session, for shutdown.
func (ps *pollSessions) close() []*pollSession {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.closed = true
	out := make([]*pollSession, 0, len(ps.m))
	for _, s := range ps.m {
		out = append(out, s)
	}
	return out
}

// corsOK sets the CORS answer for a polling request from a page on
// another origin (auth.origins: empty allows every origin), and reports
// false, having answered 403, for an origin not allowed.
func (e *Engine) corsOK(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if !e.originAllowed(origin) {
		eioError(w, eioForbidden)
		return false
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Credentials", "true")
	h.Add("Vary", "Origin")
	return true
}

// servePreflight answers a CORS preflight for /socket.io/.
func (e *Engine) servePreflight(w http.ResponseWriter, r *http.Request) {
	if !e.corsOK(w, r) {
		return
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Methods", "GET, POST")
	if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
		h.Set("Access-Control-Allow-Headers", req)
	}
	h.Set("Access-Control-Max-Age", "86400")
	w.WriteHeader(http.StatusNoContent)
}

// servePolling serves transport=polling.
func (e *Engine) servePolling(w http.ResponseWriter, r *http.Request, sid string) {
	if !e.corsOK(w, r) {
		return
	}
	if sid == "" {
		if r.Method != http.MethodGet {
			eioError(w, eioBadMethod)
			return
		}
		e.openPolling(w, r)
		return
	}
	s := e.polls.get(sid)
	if s == nil {
		eioError(w, eioUnknownSID)
		return
	}
	switch r.Method {
	case http.MethodGet:
		s.serveGet(w, r)
	case http.MethodPost:
		s.servePost(w, r)
	default:
		eioError(w, eioBadRequest)
	}
}

// openPolling opens a session: the limits a WebSocket handshake gets
// (but its Origin, checked by corsOK), then the open packet.
func (e *Engine) openPolling(w http.ResponseWriter, r *http.Request) {
	if !e.admitPreConnect(w) {
		return
	}
	if !e.admit() {
		e.preConnect.Add(-1)
		e.metrics.refused.Inc()
		w.Header().Set("Retry-After", retryAfterSec)
		httpError(w, http.StatusServiceUnavailable, "overloaded", "connection limit reached")
		return
	}
	if !e.ipRate.allow(remoteIP(r.RemoteAddr), time.Now().Unix()) || e.stopping.Load() {
		e.slots.Add(-1)
		e.preConnect.Add(-1)
		e.metrics.refused.Inc()
		w.Header().Set("Retry-After", retryAfterSec)
		if e.stopping.Load() {
			httpError(w, http.StatusServiceUnavailable, "shutting_down", "the server is shutting down")
		} else {
			httpError(w, http.StatusTooManyRequests, "rate_limited", "too many connections from this address")
		}
		return
	}
	opt := &e.cfg.SocketIO
	s := &pollSession{e: e, sid: e.newPollSID(), req: r, opened: time.Now(), wake: make(chan struct{}, 1), slot: true, pre: true}
	s.lastPost = s.opened
	s.mu.Lock()
	s.timer = time.AfterFunc(opt.ConnectTimeout, func() { s.end() })
	s.beat = time.AfterFunc(opt.PingInterval, s.heartbeat)
	s.mu.Unlock()
	if !e.polls.put(s) { // shutting down
		s.end()
		httpError(w, http.StatusServiceUnavailable, "shutting_down", "the server is shutting down")
		return
	}
	writePayload(w, [][]byte{sio.AppendOpen(nil, s.sid, []string{"websocket"}, opt.PingInterval, opt.PingTimeout, opt.MaxPayload)})
}

func writePayload(w http.ResponseWriter, packets [][]byte) {
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	for i, p := range packets {
		if i > 0 {
			w.Write([]byte{sio.Separator})
		}
		w.Write(p)
	}
}

// heartbeat pings a session waiting for its CONNECT every ping_interval,
// as Engine.IO does from the open packet on, and ends it when no POST has
// come for ping_interval + ping_timeout.
func (s *pollSession) heartbeat() {
	opt := &s.e.cfg.SocketIO
	s.mu.Lock()
	if s.ended || s.c != nil {
		s.mu.Unlock()
		return
	}
	if time.Since(s.lastPost) > opt.PingInterval+opt.PingTimeout {
		s.mu.Unlock()
		s.end()
		return
	}
	s.beat.Reset(opt.PingInterval)
	s.mu.Unlock()
	s.push(sio.AppendPing(nil, ""))
}

// push queues packets for the next GET, before the CONNECT (the conn's
// own go through pollTransport). A client that makes them pile up past
// maxPreConnect (pings, refused CONNECTs, and no GET) ends its session.
func (s *pollSession) push(packets ...[]byte) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	for _, p := range packets {
		s.pending = append(s.pending, p)
		s.bytes += len(p)
	}
	over := s.bytes > maxPreConnect && s.c == nil
	s.signal()
	s.mu.Unlock()
	if over {
		s.end()
	}
}

// signal wakes a waiting GET. Called with mu held.
func (s *pollSession) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// serveGet answers with the packets waiting, or waits for some.
func (s *pollSession) serveGet(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if s.gone {
		s.mu.Unlock()
		eioError(w, eioUnknownSID)
		return
	}
	if s.getting {
		s.mu.Unlock()
		s.end()
		eioError(w, eioBadRequest)
		return
	}
	s.getting = true
	hold := s.e.cfg.SocketIO.PingInterval + s.e.cfg.SocketIO.PingTimeout
	// The server's read timeout would end a long poll: net/http's watch
	// for the client going away reads with it. This GET may wait longer.
	http.NewResponseController(w).SetReadDeadline(time.Now().Add(hold + 10*time.Second))
	wait := time.NewTimer(hold)
	defer wait.Stop()
	for len(s.pending) == 0 && !s.ended {
		s.mu.Unlock()
		select {
		case <-s.wake:
		case <-wait.C:
			s.mu.Lock()
			s.pending = append(s.pending, sio.AppendNoop(nil))
			continue
		case <-r.Context().Done():
		}
		s.mu.Lock()
		if r.Context().Err() != nil {
			s.getting = false
			ended := s.ended
			s.mu.Unlock()
			if ended {
				s.remove()
			}
			return
		}
	}
	packets := s.pending
	s.pending, s.bytes = nil, 0
	if len(packets) == 0 { // ended with nothing left
		packets = [][]byte{sio.AppendClose(nil)}
	}
	s.getting = false
	last := s.ended
	blocked, c := s.blocked, s.c
	s.blocked = false
	s.mu.Unlock()
	writePayload(w, packets)
	if blocked && c != nil {
		c.post(mailFlush) // the owner writes what the session refused
	}
	if last {
		s.remove()
	}
}

// servePost takes the client's packets.
func (s *pollSession) servePost(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if s.gone || s.ended {
		s.mu.Unlock()
		eioError(w, eioUnknownSID)
		return
	}
	if s.posting {
		s.mu.Unlock()
		s.end()
		eioError(w, eioBadRequest)
		return
	}
	s.posting = true
	c := s.c
	s.lastPost = time.Now()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.posting = false
		s.mu.Unlock()
	}()
	max := s.e.cfg.SocketIO.MaxPayload
	if c == nil {
		max = min(max, maxPreConnect) // nobody yet: a CONNECT fits
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(max)+1))
	if err != nil {
		s.end()
		eioError(w, eioBadRequest)
		return
	}
	if len(body) > max {
		s.end()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		w.Write([]byte(`{"code":3,"message":"payload over maxPayload"}`))
		return
	}
	if c == nil {
		if err = s.beforeConnect(r, body); err != nil {
			s.end() // a payload that does not parse ends the session, as engine.io does
		}
	} else {
		err = s.feed(r.Context(), c, body)
	}
	if err != nil {
		eioError(w, eioBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	w.Write([]byte("ok"))
}

var errPollEnded = errors.New("the session ended")

// beforeConnect handles the packets of a session not connected yet: as
// the WebSocket handshake does (sioHandshake.run), with the answers
// queued for the next GET.
func (s *pollSession) beforeConnect(r *http.Request, body []byte) error {
	var rest []byte // what follows a CONNECT in this body: the conn's, fed at once
	err := sio.SplitPayload(body, func(pkt sio.Packet) error {
		s.mu.Lock()
		connected := s.c != nil
		s.mu.Unlock()
		if connected {
			if len(rest) > 0 {
				rest = append(rest, sio.Separator)
			}
			rest = sio.AppendPacket(rest, pkt)
			return nil
		}
		switch pkt.Type {
		case sio.Message:
		case sio.Ping:
			s.push(sio.AppendPong(nil, string(pkt.Data)))
			return nil
		case sio.Pong, sio.Noop:
			return nil
		default: // close, or what a client never sends
			s.end()
			return errPollEnded
		}
		if pkt.Binary {
			s.end()
			return errPollEnded
		}
		m, err := sio.ParseSIO(pkt.Data)
		if err != nil {
			s.end()
			return err
		}
		switch {
		case m.Type == sio.Disconnect && m.Namespace == "/":
			s.end()
			return nil
		case m.Type != sio.Connect:
			return nil
		case m.Namespace != "/":
			s.push(sio.AppendConnectError(nil, m.Namespace, "Invalid namespace", nil))
			return nil
		}
		a := decodeSIOAuth(m.Data)
		token := a.Token
		if token == "" {
			token = tokenFromRequest(r)
		}
		if token == "" && s.req != nil {
			token = tokenFromRequest(s.req)
		}
		ident, err := s.e.authenticateSIO(token, r.RemoteAddr)
		if err != nil {
			s.push(sioConnectError(err))
			return nil
		}
		s.connect(r, ident, a.hello())
		return nil
	})
	if err != nil || len(rest) == 0 {
		return err
	}
	s.mu.Lock()
	c := s.c
	s.mu.Unlock()
	return s.feed(r.Context(), c, rest)
}

// connect makes the session a conn: the open rules, then the conn indexed
// by its partition, which answers the CONNECT.
func (s *pollSession) connect(r *http.Request, ident auth.Identity, hello *sioHello) {
	e := s.e
	e.upgradeMu.RLock()
	defer e.upgradeMu.RUnlock()
	s.mu.Lock()
	if e.stopping.Load() || s.ended || !s.timer.Stop() {
		s.mu.Unlock()
		s.end()
		return
	}
	s.beat.Stop()  // the conn's partition pings from now on
	s.slot = false // the conn takes it; its close event gives it back
	s.req = nil    // it may hold the token
	pre := s.pre
	s.pre = false
	s.connecting = true
	s.mu.Unlock()
	if pre {
		e.preConnect.Add(-1)
	}
	open := e.runOpen(r.Context(), &ident, time.Now())
	now := time.Now()
	c := newConn(-1, &ident, e.cfg.Auth.Leeway(), now)
	c.tr = &pollTransport{s: s}
	c.proto = protoSocketIO
	c.part = e.hub.partFor(c.user)
	c.rd.MaxMessage = e.cfg.SocketIO.MaxPayload
	c.bucket.fill(now.UnixNano(), e.limits.ClientEventsBurst)
	s.mu.Lock()
	s.connecting = false
	if s.ended {
		// Ended while the open rules ran (a second POST or GET): no conn.
		// The close event gives the place back, as for a failed upgrade.
		s.mu.Unlock()
		e.publishOpen(open)
		e.closeEvent(&ident, ws.StatusGoingAway)
		return
	}
	s.c = c
	s.mu.Unlock()
	e.metrics.accepted.Inc()
	c.part.jobs <- job{kind: jobAdd, c: c, rooms: open.rooms, leave: hello.replay, user: hello.since, hello: hello}
	e.publishOpen(open)
}

// end ends the session: a waiting GET takes what is left (the close
// packet), and its conn's reader side ends.
func (s *pollSession) end() {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	if n := len(s.pending); n > 0 && string(s.pending[n-1]) != "1" {
		s.pending = append(s.pending, sio.AppendClose(nil)) // the client is told, after the rest
	}
	s.signal()
	c, slot, pre := s.c, s.slot, s.pre
	s.slot, s.pre = false, false
	waiting := s.getting
	if s.timer != nil {
		s.timer.Stop()
	}
	if s.beat != nil {
		s.beat.Stop()
	}
	if !waiting {
		// The next GET takes what is left and the close packet; past
		// pollLinger nobody came for them.
		s.timer = time.AfterFunc(s.e.cfg.pollLinger, s.remove)
	}
	s.mu.Unlock()
	if slot {
		s.e.slots.Add(-1)
	}
	if pre {
		s.e.preConnect.Add(-1)
	}
	if c != nil && c.schedule() {
		c.readyAt = time.Now().UnixNano()
		s.e.resumeRead(c) // readTurn sees the session ended
	}
}

func (s *pollSession) remove() {
	s.mu.Lock()
	s.gone = true
	s.mu.Unlock()
	s.e.polls.remove(s)
}

func (s *pollSession) isEnded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended
}

// endPolling ends every session at shutdown, before the HTTP server waits
// for the requests in flight, and refuses new ones: a connected session's
// conn is closed by its partition with 1001, its queue flushed first into
// the session, so that a waiting GET returns it with the close packet;
// the others end now. socket.io-client reconnects after either.
func (e *Engine) endPolling() {
	for _, s := range e.polls.close() {
		s.mu.Lock()
		c := s.c
		s.mu.Unlock()
		if c == nil {
			s.end()
			continue
		}
		p := c.part
		e.hub.send(p, job{kind: jobCall, fn: func() { p.close(c, ws.StatusGoingAway, "server shutting down") }})
	}
}
