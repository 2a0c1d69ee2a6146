package engine

import (
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/sidecar/sidecar/engine/auth"
)

// Subprotocols of the native protocol: a client may send its token as
// ["sidecar.v1", "bearer.<JWT>"]; the server answers "sidecar.v1".
const (
	subprotocol   = "sidecar.v1"
	bearerProto   = "bearer."
	retryAfterSec = "1"
)

// serveWS upgrades GET /ws. Every refusal is an HTTP answer before the
// upgrade: 400/426 for a request that is not a valid WebSocket handshake,
// 403 for a disallowed Origin, 401 for a missing or bad token, 503 at the
// connection limit, 429 over the per-IP connection rate.
func (e *Engine) serveWS(w http.ResponseWriter, r *http.Request) {
	if !e.admitHandshake(w, r, func() { httpError(w, http.StatusForbidden, "forbidden", "origin not allowed") }) {
		return
	}
	admitted := true // this handshake holds a place until its connection takes it
	defer func() {
		if admitted {
			e.slots.Add(-1)
		}
	}()
	token := tokenFromRequest(r)
	if token == "" {
		httpError(w, http.StatusUnauthorized, "unauthorized", "missing token: use ?token=, Authorization: Bearer, or the bearer.<JWT> subprotocol")
		return
	}
	ident, err := e.cfg.Auth.Authenticate(token)
	if err != nil {
		e.metrics.authFailures.Inc()
		// The error never contains the token; it says why (expired, bad signature, ...).
		e.log.Debug("handshake refused", "remote", r.RemoteAddr, "err", err)
		httpError(w, http.StatusUnauthorized, "unauthorized", authMessage(err))
		return
	}
	// Shutdown takes the write lock: it waits for upgrades in flight, and
	// none starts after it.
	e.upgradeMu.RLock()
	defer e.upgradeMu.RUnlock()
	if e.stopping.Load() {
		w.Header().Set("Retry-After", retryAfterSec)
		httpError(w, http.StatusServiceUnavailable, "shutting_down", "the server is shutting down")
		return
	}
	// connection.open, before the 101: from here on the place is freed by
	// the connection's close event, which follows whatever happens next.
	open := e.runOpen(r.Context(), &ident, time.Now())
	admitted = false
	nc, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		e.publishOpen(open)
		e.closeEvent(&ident, ws.StatusAbnormalClosure)
		httpError(w, http.StatusInternalServerError, "internal", "connection cannot be upgraded")
		return
	}
	var leftover []byte
	if n := rw.Reader.Buffered(); n > 0 {
		leftover, _ = rw.Reader.Peek(n)
		leftover = append([]byte(nil), leftover...)
	}
	fd, err := detach(nc)
	if err != nil {
		e.publishOpen(open)
		e.closeEvent(&ident, ws.StatusAbnormalClosure)
		e.log.Error("detach socket", "err", err)
		return
	}
	proto := ""
	if offersProtocol(r, subprotocol) {
		proto = subprotocol
	}
	since, replay := r.URL.Query()["since"]
	if replay {
		since = since[:1]
	}
	e.attach(fd, &ident, open, switchingProtocols(r.Header.Get("Sec-WebSocket-Key"), proto), leftover, replay, strings.Join(since, ""), nil)
}

// admitHandshake answers the refusals every WebSocket handshake gets
// before its token is looked at: 400/426 for a request that is not a
// valid handshake, forbidden() for a disallowed Origin, 503 at the
// connection limit, 429 over the per-IP connection rate. Cheap refusals
// first: a flood of connections costs no signature checks. When it
// reports true, the caller holds a place under limits.max_connections,
// until its connection takes it or it gives it back (e.slots.Add(-1)).
func (e *Engine) admitHandshake(w http.ResponseWriter, r *http.Request, forbidden func()) bool {
	if status, msg := checkHandshake(r); status != 0 {
		if status == http.StatusUpgradeRequired {
			w.Header().Set("Sec-WebSocket-Version", "13")
		}
		httpError(w, status, "bad_handshake", msg)
		return false
	}
	if !e.originAllowed(r.Header.Get("Origin")) {
		forbidden()
		return false
	}
	if !e.admit() {
		e.metrics.refused.Inc()
		w.Header().Set("Retry-After", retryAfterSec)
		httpError(w, http.StatusServiceUnavailable, "overloaded", "connection limit reached")
		return false
	}
	if !e.ipRate.allow(remoteIP(r.RemoteAddr), time.Now().Unix()) {
		e.slots.Add(-1)
		e.metrics.refused.Inc()
		w.Header().Set("Retry-After", retryAfterSec)
		httpError(w, http.StatusTooManyRequests, "rate_limited", "too many connections from this address")
		return false
	}
	return true
}

// admit takes a connection's place under limits.max_connections, or
// reports that none is free.
func (e *Engine) admit() bool {
	if e.slots.Add(1) > int64(e.limits.MaxConnections) {
		e.slots.Add(-1)
		return false
	}
	return true
}

// switchingProtocols is the 101 answer to a handshake checkHandshake has
// validated (RFC 6455 section 4.2.2).
//
// The engine writes it itself rather than through gobwas/ws's upgrader,
// because the answer must leave through the connection's own queue: the
// conn is indexed first and the 101 is the first thing queued on it, so no
// event can precede it and none published after the client sees it is lost.
// The upgrader writes it before the conn can be indexed.
func switchingProtocols(key, proto string) []byte {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	var accept [28]byte
	base64.StdEncoding.Encode(accept[:], h[:])
	b := make([]byte, 0, 160)
	b = append(b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	b = append(b, accept[:]...)
	if proto != "" {
		b = append(b, "\r\nSec-WebSocket-Protocol: "...)
		b = append(b, proto...)
	}
	return append(b, "\r\n\r\n"...)
}

// attach makes the descriptor a conn: indexed by its owner in the rooms
// its open rules joined, with the 101 answer queued first (or, for a
// Socket.IO conn, hello's answer), then what those rules emitted, and
// registered with the poller. Bytes that
// came with the handshake are read here; the rest of the turn goes to the
// read workers.
func (e *Engine) attach(fd int, ident *auth.Identity, open *opening, response, leftover []byte, replay bool, since string, hello *sioHello) {
	now := time.Now()
	c := newConn(fd, ident, e.cfg.Auth.Leeway(), now)
	c.part = e.hub.partFor(c.user)
	c.rd.MaxMessage = e.limits.MaxMessageBytes
	if hello != nil {
		c.proto = protoSocketIO
		c.rd.MaxMessage = e.cfg.SocketIO.MaxPayload
	}
	c.bucket.fill(now.UnixNano(), e.limits.ClientEventsBurst)
	if n := e.limits.SendBufferBytes; n > 0 {
		// What a slow consumer holds in the kernel (Linux doubles it).
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, n)
	}
	e.openFDs.Add(1)
	e.metrics.accepted.Inc()
	// The handshake holds the read turn until the leftover bytes are read,
	// so the poller's first edge only marks the turn "again". Take it before
	// the conn is visible: a stale edge for a previous conn on the same fd
	// number would otherwise queue c while we read it here.
	c.sched.Store(schedRunning)
	e.fds.set(fd, c)
	c.part.jobs <- job{kind: jobAdd, c: c, rooms: open.rooms, frame: response, leave: replay, user: since, hello: hello}
	e.publishOpen(open) // after the index job: an emit to this user reaches c too
	if err := e.poller.Add(fd); err != nil {
		e.log.Error("register connection", "err", err)
		e.endReader(c, ws.StatusInternalServerError, "internal error")
		return
	}
	e.startReading(c, leftover, now.UnixNano())
}

// startReading reads the bytes that came with c's handshake, holding its
// read turn, then gives the turn to the read workers for whatever arrived
// since (unless the leftover's messages took it to the rule pool).
func (e *Engine) startReading(c *conn, leftover []byte, now int64) {
	if len(leftover) > 0 {
		r := e.readers.Get().(*reader)
		r.begin(c)
		r.feed(c, leftover)
		handed := r.handOff(c)
		r.reset()
		e.readers.Put(r)
		if handed {
			return
		}
	}
	c.readyAt = now
	e.resumeRead(c)
}

// detach takes the socket away from Go's network poller: it duplicates the
// descriptor (the copy stays non-blocking) and closes the net.Conn, so the
// connection costs no goroutine, no buffer and no runtime poll descriptor.
func detach(nc net.Conn) (int, error) {
	defer nc.Close()
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return -1, errors.New("connection has no descriptor")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := raw.Control(func(s uintptr) {
		fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, derr
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// checkHandshake validates a WebSocket opening handshake (RFC 6455 4.2.1)
// before anything else is looked at, so that a request that is not one
// gets 400 (or 426 for another version) whatever its token.
func checkHandshake(r *http.Request) (int, string) {
	switch {
	case r.Method != http.MethodGet:
		return http.StatusBadRequest, "a WebSocket handshake must be a GET"
	case !r.ProtoAtLeast(1, 1):
		return http.StatusBadRequest, "a WebSocket handshake needs HTTP/1.1"
	case !headerHasToken(r.Header, "Upgrade", "websocket"):
		return http.StatusBadRequest, `missing "Upgrade: websocket"`
	case !headerHasToken(r.Header, "Connection", "upgrade"):
		return http.StatusBadRequest, `missing "Connection: Upgrade"`
	}
	switch v := r.Header.Get("Sec-WebSocket-Version"); v {
	case "13":
	case "":
		return http.StatusBadRequest, "missing Sec-WebSocket-Version"
	default:
		return http.StatusUpgradeRequired, "unsupported Sec-WebSocket-Version; this server speaks 13"
	}
	key := r.Header.Get("Sec-WebSocket-Key")
	if b, err := base64.StdEncoding.DecodeString(key); err != nil || len(b) != 16 {
		return http.StatusBadRequest, "Sec-WebSocket-Key must be the base64 of 16 bytes"
	}
	return 0, ""
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// tokenFromRequest finds the JWT: ?token=, then Authorization: Bearer, then
// the bearer.<JWT> subprotocol.
func tokenFromRequest(r *http.Request) string {
	if t := r.URL.Query().Get("token"); t != "" {
		return t
	}
	if t, ok := bearer(r.Header.Get("Authorization")); ok {
		return t
	}
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); strings.HasPrefix(p, bearerProto) {
				return p[len(bearerProto):]
			}
		}
	}
	return ""
}

func offersProtocol(r *http.Request, want string) bool {
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if strings.TrimSpace(p) == want {
				return true
			}
		}
	}
	return false
}

// bearer returns the credential of an "Authorization: Bearer x" header.
func bearer(h string) (string, bool) {
	const prefix = "bearer "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return "", false
	}
	return strings.TrimSpace(h[len(prefix):]), true
}

// originAllowed applies auth.origins. A request without Origin is not from
// a browser page, so cross-site hijacking does not apply and it passes.
func (e *Engine) originAllowed(origin string) bool {
	if len(e.cfg.Origins) == 0 || origin == "" {
		return true
	}
	for _, o := range e.cfg.Origins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	return false
}

// authMessage says why a token was refused, without echoing it.
func authMessage(err error) string {
	switch {
	case errors.Is(err, auth.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, auth.ErrTokenTooLong):
		return "token too long"
	case errors.Is(err, auth.ErrNoUser):
		return "token names no user"
	}
	return "invalid token"
}

func remoteIP(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}
