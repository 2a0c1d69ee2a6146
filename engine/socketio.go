package engine

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/sidecar/sidecar/engine/auth"
	"github.com/sidecar/sidecar/engine/sio"
)

// Socket.IO v5 over Engine.IO v4 at /socket.io/, for socket.io-client v4.
//
// The WebSocket transport: the handshake is answered with the 101 and the
// Engine.IO open packet, then the handler's goroutine reads the client's
// frames, blocking, until the Socket.IO CONNECT `40{"token":...}` arrives
// (or socketio.connect_timeout passes). Only then is the token checked, the
// connection.open rules run and the socket handed to the epoll engine as a
// conn speaking sioCodec, like a native one: from there on no goroutine
// and no buffer is parked on it. A CONNECT to another namespace is
// answered CONNECT_ERROR "Invalid namespace"; a bad token
// `44{"message":"unauthorized","data":{"reason":...}}`, and the session
// waits for another CONNECT, as socket.io's does.

// SocketIOOptions are the Engine.IO timers and limit (the socketio section).
type SocketIOOptions struct {
	PingInterval   time.Duration // default 25s; at least 1s (the conns' timers tick each second)
	PingTimeout    time.Duration // default 20s; at least 1s
	MaxPayload     int           // bytes of one message from the client; default 1,000,000
	ConnectTimeout time.Duration // from the open packet to the CONNECT; default 45s
}

// DefaultSocketIO are socket.io's own defaults.
func DefaultSocketIO() SocketIOOptions {
	return SocketIOOptions{PingInterval: 25 * time.Second, PingTimeout: 20 * time.Second, MaxPayload: 1_000_000, ConnectTimeout: 45 * time.Second}
}

func (o *SocketIOOptions) setDefaults() {
	d := DefaultSocketIO()
	for _, f := range []struct{ v, d *time.Duration }{
		{&o.PingInterval, &d.PingInterval}, {&o.PingTimeout, &d.PingTimeout}, {&o.ConnectTimeout, &d.ConnectTimeout},
	} {
		if *f.v <= 0 {
			*f.v = *f.d
		}
	}
	if o.MaxPayload <= 0 {
		o.MaxPayload = d.MaxPayload
	}
	o.PingInterval = max(o.PingInterval, time.Second)
	o.PingTimeout = max(o.PingTimeout, time.Second)
}

// Engine.IO's error answers (engine.io's Server.errorMessages), sent with
// 400 (403 for forbidden) as {"code":n,"message":...}.
const (
	eioUnknownTransport = 0
	eioUnknownSID       = 1
	eioBadMethod        = 2
	eioBadRequest       = 3
	eioForbidden        = 4
	eioBadVersion       = 5
)

var eioMessages = [...]string{
	eioUnknownTransport: "Transport unknown",
	eioUnknownSID:       "Session ID unknown",
	eioBadMethod:        "Bad handshake method",
	eioBadRequest:       "Bad request",
	eioForbidden:        "Forbidden",
	eioBadVersion:       "Unsupported protocol version",
}

func eioError(w http.ResponseWriter, code int) {
	status := http.StatusBadRequest
	if code == eioForbidden {
		status = http.StatusForbidden
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}{code, eioMessages[code]})
	w.Write(b)
}

// serveSocketIO serves /socket.io/.
func (e *Engine) serveSocketIO(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodOptions {
		e.servePreflight(w, r)
		return
	}
	q := r.URL.Query()
	if q.Get("EIO") != "4" {
		e.corsOK(w, r)
		eioError(w, eioBadVersion)
		return
	}
	sid := q.Get("sid")
	if e.relayed(w, r, sid) {
		return
	}
	switch q.Get("transport") {
	case "websocket":
		if sid != "" {
			e.upgradePolling(w, r, sid)
			return
		}
		e.serveSocketIOWebSocket(w, r)
	case "polling":
		e.servePolling(w, r, sid)
	default:
		e.corsOK(w, r)
		eioError(w, eioUnknownTransport)
	}
}

// serveSocketIOWebSocket takes a WebSocket straight to /socket.io/
// (socket.io-client with transports: ["websocket"]). The refusals before
// the 101 are the native ones (admitHandshake), but not the token's: it
// comes with the CONNECT.
func (e *Engine) serveSocketIOWebSocket(w http.ResponseWriter, r *http.Request) {
	if !e.admitPreConnect(w) {
		return
	}
	defer e.preConnect.Add(-1)
	if !e.admitHandshake(w, r, func() { eioError(w, eioForbidden) }) {
		return
	}
	admitted := true // this handshake holds a place until its connection takes it
	defer func() {
		if admitted {
			e.slots.Add(-1)
		}
	}()
	if e.stopping.Load() {
		w.Header().Set("Retry-After", retryAfterSec)
		httpError(w, http.StatusServiceUnavailable, "shutting_down", "the server is shutting down")
		return
	}
	nc, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		httpError(w, http.StatusInternalServerError, "internal", "connection cannot be upgraded")
		return
	}
	hs := &sioHandshake{e: e, nc: nc, br: rw.Reader, r: r, sid: newSID()}
	if !e.handshakes.add(nc) {
		nc.Close() // shutting down
		return
	}
	defer e.handshakes.remove(nc)
	ident, hello, ok := hs.run()
	if !ok {
		nc.Close()
		return
	}
	if e.connectWebSocket(hs, ident, hello) {
		admitted = false
	}
}

// connectWebSocket makes an authenticated Socket.IO WebSocket a conn: the
// open rules, then the socket handed to the epoll engine. It reports
// whether the conn took the handshake's place under the connection limit.
func (e *Engine) connectWebSocket(hs *sioHandshake, ident auth.Identity, hello *sioHello) bool {
	r, nc := hs.r, hs.nc
	e.upgradeMu.RLock()
	defer e.upgradeMu.RUnlock()
	if e.stopping.Load() {
		hs.closeWith(ws.StatusGoingAway, "server shutting down")
		return false
	}
	open := e.runOpen(r.Context(), &ident, time.Now())
	var leftover []byte
	if n := hs.br.Buffered(); n > 0 {
		leftover, _ = hs.br.Peek(n)
		leftover = append([]byte(nil), leftover...)
	}
	nc.SetDeadline(time.Time{})
	fd, err := detach(nc)
	if err != nil {
		e.publishOpen(open)
		e.closeEvent(&ident, ws.StatusAbnormalClosure)
		e.log.Error("detach socket", "err", err)
		return true
	}
	e.attach(fd, &ident, open, nil, leftover, hello.replay, hello.since, hello)
	return true
}

// sioHandshake is a Socket.IO WebSocket before its CONNECT: read by the
// HTTP handler's goroutine, with deadlines.
type sioHandshake struct {
	e   *Engine
	nc  net.Conn
	br  *bufio.Reader
	r   *http.Request
	alt *http.Request // the polling session's opening request, for the token; nil: none
	sid string

	wmu      sync.Mutex // the read loop and the heartbeat both write
	stopped  bool       // guarded by wmu: the heartbeat writes no more
	lastRead atomic.Int64
	timedOut atomic.Bool // the heartbeat ended the wait: no pong in time
}

// heartbeat pings a handshake waiting for its CONNECT every
// socketio.ping_interval, as Engine.IO does from the open packet on, and
// ends the wait when nothing has come for ping_interval + ping_timeout.
// The returned func stops it; no write of its own follows.
func (hs *sioHandshake) heartbeat() (stop func()) {
	opt := &hs.e.cfg.SocketIO
	hs.lastRead.Store(time.Now().UnixNano())
	var t *time.Timer
	beat := func() {
		hs.wmu.Lock()
		defer hs.wmu.Unlock()
		if hs.stopped {
			return
		}
		if time.Now().UnixNano()-hs.lastRead.Load() > int64(opt.PingInterval+opt.PingTimeout) {
			hs.timedOut.Store(true)
			hs.nc.SetReadDeadline(time.Now()) // the read loop wakes and closes
			return
		}
		hs.nc.SetWriteDeadline(time.Now().Add(hs.e.limits.HandshakeTimeout))
		hs.nc.Write(sioPing)
		t.Reset(opt.PingInterval)
	}
	hs.wmu.Lock()
	t = time.AfterFunc(opt.PingInterval, beat)
	hs.wmu.Unlock()
	return func() {
		hs.wmu.Lock()
		hs.stopped = true
		t.Stop()
		hs.wmu.Unlock()
	}
}

// maxPreConnect bounds what a client that has not connected may send in
// one message or POST, or have queued for it: a CONNECT with a token fits
// (auth.max_token_bytes is 8 KiB by default).
const maxPreConnect = 16 << 10

// admitPreConnect counts one more Socket.IO session or handshake waiting
// for its CONNECT, under a cap of a tenth of limits.max_connections (at
// least 64): clients that open and never connect cannot hold every place
// for socketio.connect_timeout. Over it: 503. The caller gives the count
// back (e.preConnect.Add(-1)) when the wait ends.
func (e *Engine) admitPreConnect(w http.ResponseWriter) bool {
	if e.preConnect.Add(1) > int64(max(e.limits.MaxConnections/10, 64)) {
		e.preConnect.Add(-1)
		e.metrics.refused.Inc()
		w.Header().Set("Retry-After", retryAfterSec)
		httpError(w, http.StatusServiceUnavailable, "overloaded", "too many Socket.IO sessions waiting for their CONNECT")
		return false
	}
	return true
}

// sioAuth is the CONNECT payload: socket.io-client's auth option, with the
// recovery fields it adds.
type sioAuth struct {
	Token  string `json:"token"`
	PID    string `json:"pid"`
	Offset string `json:"offset"`
}

// run answers the handshake and reads until a CONNECT to "/" with a good
// token. It reports false when the session ended (closed, timed out, bad
// frames); it has closed the socket politely where it could.
func (hs *sioHandshake) run() (auth.Identity, *sioHello, bool) {
	opt := &hs.e.cfg.SocketIO
	out := switchingProtocols(hs.r.Header.Get("Sec-WebSocket-Key"), "")
	out = append(out, textFrame(sio.AppendOpen(nil, hs.sid, []string{}, opt.PingInterval, opt.PingTimeout, opt.MaxPayload))...)
	if !hs.write(out) {
		return auth.Identity{}, nil, false
	}
	return hs.await(time.Now().Add(opt.ConnectTimeout))
}

// await reads until a CONNECT to "/" with a good token, or deadline,
// with the Engine.IO heartbeat running.
func (hs *sioHandshake) await(deadline time.Time) (auth.Identity, *sioHello, bool) {
	e := hs.e
	hs.nc.SetReadDeadline(deadline)
	if e.stopping.Load() { // shutdown's deadline may have come before ours
		hs.closeWith(ws.StatusGoingAway, "server shutting down")
		return auth.Identity{}, nil, false
	}
	stop := hs.heartbeat()
	defer stop()
	for {
		op, p, err := hs.readFrame()
		if err != nil {
			var ne net.Error
			stop()
			switch {
			case e.stopping.Load():
				hs.closeWith(ws.StatusGoingAway, "server shutting down")
			case hs.timedOut.Load():
				hs.closeWith(ws.StatusPolicyViolation, "ping timeout")
			case errors.As(err, &ne) && ne.Timeout():
				hs.closeWith(ws.StatusPolicyViolation, "no CONNECT in time")
			}
			return auth.Identity{}, nil, false
		}
		hs.lastRead.Store(time.Now().UnixNano())
		if op != ws.OpText {
			hs.closeWith(ws.StatusUnsupportedData, "binary data is not supported")
			return auth.Identity{}, nil, false
		}
		pkt, err := sio.ParsePacket(p)
		if err != nil {
			hs.closeWith(ws.StatusProtocolError, "malformed Engine.IO packet")
			return auth.Identity{}, nil, false
		}
		switch pkt.Type {
		case sio.Message:
		case sio.Ping:
			if !hs.write(textFrame(sio.AppendPong(nil, string(pkt.Data)))) {
				return auth.Identity{}, nil, false
			}
			continue
		case sio.Close:
			hs.closeWith(ws.StatusNormalClosure, "")
			return auth.Identity{}, nil, false
		case sio.Pong, sio.Noop:
			continue
		default: // open, upgrade: never from a client on this transport
			hs.closeWith(ws.StatusProtocolError, "malformed Engine.IO packet")
			return auth.Identity{}, nil, false
		}
		m, err := sio.ParseSIO(pkt.Data)
		switch {
		case errors.Is(err, sio.ErrBinary):
			hs.closeWith(ws.StatusUnsupportedData, "binary data is not supported")
			return auth.Identity{}, nil, false
		case err != nil:
			hs.closeWith(ws.StatusProtocolError, "malformed Socket.IO packet")
			return auth.Identity{}, nil, false
		}
		if m.Type == sio.Disconnect && m.Namespace == "/" {
			hs.closeWith(ws.StatusNormalClosure, "")
			return auth.Identity{}, nil, false
		}
		if m.Type != sio.Connect {
			continue // nothing is connected yet: ignored, as socket.io does
		}
		if m.Namespace != "/" {
			if !hs.write(sioInvalidNamespace(m.Namespace)) {
				return auth.Identity{}, nil, false
			}
			continue
		}
		a := decodeSIOAuth(m.Data)
		token := a.Token
		if token == "" {
			token = tokenFromRequest(hs.r)
		}
		if token == "" && hs.alt != nil {
			token = tokenFromRequest(hs.alt)
		}
		ident, err := e.authenticateSIO(token, hs.r.RemoteAddr)
		if err != nil {
			if !hs.write(textFrame(sioConnectError(err))) {
				return auth.Identity{}, nil, false
			}
			continue
		}
		return ident, a.hello(), true
	}
}

// authenticateSIO checks a CONNECT's token; the error says why, without
// the token.
func (e *Engine) authenticateSIO(token, remote string) (auth.Identity, error) {
	if token == "" {
		return auth.Identity{}, errors.New("missing token: send it as auth: {token}")
	}
	ident, err := e.cfg.Auth.Authenticate(token)
	if err != nil {
		e.metrics.authFailures.Inc()
		e.log.Debug("socket.io connect refused", "remote", remote, "err", err)
		return auth.Identity{}, errors.New(authMessage(err))
	}
	return ident, nil
}

// readFrame reads one whole client message, answering pings and closes
// on the way. Fragmented messages are refused: no socket.io client sends
// one before it is connected.
func (hs *sioHandshake) readFrame() (ws.OpCode, []byte, error) {
	max := int64(min(hs.e.cfg.SocketIO.MaxPayload, maxPreConnect))
	for {
		h, err := ws.ReadHeader(hs.br)
		if err != nil {
			return 0, nil, err
		}
		switch {
		case !h.Masked || h.Rsv != 0:
			hs.closeWith(ws.StatusProtocolError, "protocol error")
			return 0, nil, errHandshakeEnded
		case h.OpCode.IsControl() && (h.Length > 125 || !h.Fin):
			hs.closeWith(ws.StatusProtocolError, "protocol error")
			return 0, nil, errHandshakeEnded
		case h.Length > max:
			hs.closeWith(ws.StatusMessageTooBig, "message too big")
			return 0, nil, errHandshakeEnded
		case !h.Fin || h.OpCode == ws.OpContinuation:
			hs.closeWith(ws.StatusProtocolError, "fragmented messages are not accepted before the CONNECT")
			return 0, nil, errHandshakeEnded
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(hs.br, p); err != nil {
			return 0, nil, err
		}
		ws.Cipher(p, h.Mask, 0)
		switch h.OpCode {
		case ws.OpPing:
			if !hs.write(serverFrame(ws.OpPong, p)) {
				return 0, nil, errHandshakeEnded
			}
		case ws.OpPong:
		case ws.OpClose:
			hs.closeWith(ws.StatusNormalClosure, "")
			return 0, nil, errHandshakeEnded
		default:
			return h.OpCode, p, nil
		}
	}
}

var errHandshakeEnded = errors.New("socket.io handshake ended")

func (hs *sioHandshake) write(b []byte) bool {
	hs.wmu.Lock()
	defer hs.wmu.Unlock()
	hs.nc.SetWriteDeadline(time.Now().Add(hs.e.limits.HandshakeTimeout))
	_, err := hs.nc.Write(b)
	return err == nil
}

// closeWith sends the Engine.IO close packet and a close frame, then
// closes the socket.
func (hs *sioHandshake) closeWith(code ws.StatusCode, reason string) {
	hs.wmu.Lock()
	hs.stopped = true // no heartbeat after the close frame
	hs.wmu.Unlock()
	hs.write(append(append([]byte(nil), sioClose...), closeFrame(code, reason)...))
	hs.nc.Close()
}

// newSID is a random session id: 15 bytes, as 20 characters of base64url.
func newSID() string {
	var b [15]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// handshakes are the Socket.IO WebSockets waiting for their CONNECT, held
// by HTTP handlers that net/http's Shutdown no longer tracks (hijacked):
// shutdown ends them.
type handshakes struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func (h *handshakes) add(c net.Conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	if h.conns == nil {
		h.conns = make(map[net.Conn]struct{})
	}
	h.conns[c] = struct{}{}
	return true
}

func (h *handshakes) remove(c net.Conn) {
	h.mu.Lock()
	delete(h.conns, c)
	h.mu.Unlock()
}

// close ends every handshake waiting now, and refuses new ones.
func (h *handshakes) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for c := range h.conns {
		c.SetDeadline(time.Now())
	}
}

func decodeSIOAuth(data []byte) sioAuth {
	var a sioAuth
	if len(data) > 0 {
		json.Unmarshal(data, &a) // an object (ParseSIO); fields of other types stay empty
	}
	return a
}

// hello is what a CONNECT with a as its auth asks of its partition.
func (a sioAuth) hello() *sioHello {
	h := &sioHello{sid: newSID(), pid: a.PID}
	switch {
	case a.Offset != "":
		h.since, h.replay = a.Offset, true
	case a.PID != "":
		h.since, h.replay = a.PID, true
	}
	return h
}

func sioConnectError(err error) []byte {
	data, _ := json.Marshal(map[string]string{"code": "unauthorized", "reason": err.Error()})
	return sio.AppendConnectError(nil, "/", "unauthorized", data)
}
