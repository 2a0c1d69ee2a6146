package engine

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/golang-jwt/jwt/v5"
)

func TestBroadcastAndTargetedThroughTestAPI(t *testing.T) {
	n := startNode(t)
	a1, a2, b := n.dial("alice"), n.dial("alice"), n.dial("bob")
	waitFor(t, 2*time.Second, "3 connections", func() bool { return n.e.Stats().Connections == 3 })

	status, resp := n.api("POST", "/api/socket-test/broadcast", map[string]any{"title": "Hi", "message": "all", "type": "info", "extra": 7})
	if status != http.StatusAccepted || resp["delivered"] != float64(3) {
		t.Fatalf("broadcast = %d %v, want 202 delivered 3", status, resp)
	}
	for _, c := range []*client{a1, a2, b} {
		m := c.mustEvent("newNotification")
		data := m["data"].(map[string]any)
		if data["title"] != "Hi" || data["extra"] != float64(7) || m["id"] == "" {
			t.Fatalf("broadcast frame = %v", m)
		}
	}

	status, resp = n.api("POST", "/api/socket-test/send/alice", map[string]any{"title": "Just you"})
	if status != http.StatusAccepted || resp["delivered"] != float64(2) {
		t.Fatalf("send = %d %v, want 202 delivered 2", status, resp)
	}
	a1.mustEvent("newNotification")
	a2.mustEvent("newNotification")
	b.noEvent(200 * time.Millisecond)

	status, resp = n.api("POST", "/api/socket-test/send/nobody", map[string]any{"title": "x"})
	if status != http.StatusAccepted || resp["delivered"] != float64(0) {
		t.Fatalf("send to absent user = %d %v, want 202 delivered 0", status, resp)
	}

	status, resp = n.api("GET", "/api/socket-test/stats", nil)
	if status != 200 || resp["connections"] != float64(3) || resp["users"] != float64(2) || resp["uptime_seconds"] == nil {
		t.Fatalf("stats = %d %v", status, resp)
	}
}

func TestTokenSources(t *testing.T) {
	n := startNode(t)
	tok := userToken(t, "carol")
	// Authorization header.
	d, err := dialWS("ws://"+n.addr+"/ws", http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		t.Fatalf("bearer header: %v", err)
	}
	d.conn.Close()
	// Subprotocol pair: the server must answer sidecar.v1, never the token.
	dialer := ws.Dialer{Protocols: []string{"sidecar.v1", "bearer." + tok}}
	conn, _, hs, err := dialer.Dial(t.Context(), "ws://"+n.addr+"/ws")
	if err != nil {
		t.Fatalf("subprotocol: %v", err)
	}
	conn.Close()
	if hs.Protocol != "sidecar.v1" {
		t.Fatalf("negotiated protocol %q, want sidecar.v1", hs.Protocol)
	}
}

func TestHandshakeRefusals(t *testing.T) {
	n := startNode(t, func(c *Config) { c.Origins = []string{"https://app.example"} })
	valid := userToken(t, "u1")
	expired := token(t, map[string]any{"sub": "u1", "exp": time.Now().Add(-time.Hour).Unix()})
	noExp, _ := signRaw(map[string]any{"sub": "u1"})
	none := "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1MSIsImV4cCI6OTk5OTk5OTk5OX0."
	wsHeaders := "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	cases := []struct {
		name    string
		request string
		want    int
	}{
		{"plain GET", "GET /ws?token=" + valid + " HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"POST", "POST /ws?token=" + valid + " HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n" + wsHeaders + "\r\n", 400},
		{"version 8", "GET /ws?token=" + valid + " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 426},
		{"bad key", "GET /ws?token=" + valid + " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n", 400},
		{"no token", "GET /ws HTTP/1.1\r\nHost: x\r\n" + wsHeaders + "\r\n", 401},
		{"garbage token", "GET /ws?token=abc HTTP/1.1\r\nHost: x\r\n" + wsHeaders + "\r\n", 401},
		{"expired", "GET /ws?token=" + expired + " HTTP/1.1\r\nHost: x\r\n" + wsHeaders + "\r\n", 401},
		{"no exp", "GET /ws?token=" + noExp + " HTTP/1.1\r\nHost: x\r\n" + wsHeaders + "\r\n", 401},
		{"alg none", "GET /ws?token=" + none + " HTTP/1.1\r\nHost: x\r\n" + wsHeaders + "\r\n", 401},
		{"bad origin", "GET /ws?token=" + valid + " HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\n" + wsHeaders + "\r\n", 403},
		{"good origin", "GET /ws?token=" + valid + " HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n" + wsHeaders + "\r\n", 101},
		{"deflate offered, not negotiated", "GET /ws?token=" + valid + " HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" + wsHeaders + "\r\n", 101},
		{"huge headers", "GET /ws?token=" + valid + " HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 20<<10) + "\r\n" + wsHeaders + "\r\n", 431},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", n.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := conn.Write([]byte(tc.request)); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
			if tc.want == 426 && resp.Header.Get("Sec-WebSocket-Version") != "13" {
				t.Errorf("426 without Sec-WebSocket-Version: 13")
			}
			if tc.want == 101 && resp.Header.Get("Sec-WebSocket-Extensions") != "" {
				t.Errorf("extension negotiated: %q", resp.Header.Get("Sec-WebSocket-Extensions"))
			}
		})
	}
	if got := n.e.Stats().Connections; got > 2 { // the two 101 cases
		t.Fatalf("%d connections after refusals, want at most 2", got)
	}
}

// signRaw signs claims as they are, without adding exp.
func signRaw(claims map[string]any) (string, error) {
	return jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(claims)).SignedString([]byte(testSecret))
}

func TestSlowlorisHandshake(t *testing.T) {
	n := startNode(t, func(c *Config) { c.Limits.HandshakeTimeout = 500 * time.Millisecond })
	var conns []net.Conn
	for i := 0; i < 20; i++ {
		conn, err := net.Dial("tcp", n.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		conn.Write([]byte("GET /ws HTTP/1.1\r\nHost: x\r\n")) // and never the rest
	}
	silent, err := net.Dial("tcp", n.addr) // sends nothing at all
	if err != nil {
		t.Fatal(err)
	}
	conns = append(conns, silent)
	// A normal client still gets in meanwhile.
	c := n.dial("normal")
	// The 101 leaves before the conn is indexed: wait for it, as the other
	// tests do, or the broadcast may reach nobody.
	waitFor(t, 2*time.Second, "1 connection", func() bool { return n.e.Stats().Connections == 1 })
	n.api("POST", "/api/socket-test/broadcast", map[string]any{"title": "x"})
	c.mustEvent("newNotification")
	for i, conn := range conns {
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := io.ReadAll(conn)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("conn %d still open after the handshake timeout", i)
		}
		conn.Close()
	}
}

func TestClientFrameViolations(t *testing.T) {
	mask := [4]byte{1, 2, 3, 4}
	masked := func(op ws.OpCode, fin bool, p []byte) []byte {
		return ws.MustCompileFrame(ws.MaskFrameWith(ws.NewFrame(op, fin, p), mask))
	}
	unmasked := func(op ws.OpCode, p []byte) []byte { return ws.MustCompileFrame(ws.NewFrame(op, true, p)) }
	hugeHeader := []byte{0x81, 0xff, 0, 0, 1, 0, 0, 0, 0, 0, 1, 2, 3, 4} // 1 TiB, masked
	var fragments []byte
	fragments = append(fragments, masked(ws.OpText, false, []byte(strings.Repeat("a", 100)))...)
	for i := 0; i < 1000; i++ {
		fragments = append(fragments, masked(ws.OpContinuation, false, []byte(strings.Repeat("a", 100)))...)
	}
	cases := []struct {
		name  string
		bytes []byte
		want  ws.StatusCode
	}{
		{"binary frame", masked(ws.OpBinary, true, []byte("abc")), ws.StatusInvalidFramePayloadData},
		{"invalid utf-8", masked(ws.OpText, true, []byte{'{', 0xff, '}'}), ws.StatusInvalidFramePayloadData},
		{"invalid JSON", masked(ws.OpText, true, []byte("{not json")), ws.StatusInvalidFramePayloadData},
		{"oversized", masked(ws.OpText, true, make([]byte, 70000)), ws.StatusMessageTooBig},
		{"huge length header", hugeHeader, ws.StatusMessageTooBig},
		{"many small fragments", fragments, ws.StatusMessageTooBig},
		{"unmasked", unmasked(ws.OpText, []byte(`{"event":"x"}`)), ws.StatusProtocolError},
		{"fragmented ping", masked(ws.OpPing, false, []byte("p")), ws.StatusProtocolError},
		{"long ping", masked(ws.OpPing, true, make([]byte, 126)), ws.StatusProtocolError},
		{"reserved opcode", masked(ws.OpCode(0x3), true, nil), ws.StatusProtocolError},
		{"rsv1", append([]byte{0xc1}, masked(ws.OpText, true, []byte("{}"))[1:]...), ws.StatusProtocolError},
		{"bad close code", masked(ws.OpClose, true, []byte{0x03, 0xe7}), ws.StatusProtocolError},
		{"close echoes", masked(ws.OpClose, true, []byte{0x0f, 0xa0}), 4000},
		{"empty close", masked(ws.OpClose, true, nil), ws.StatusNormalClosure},
	}
	n := startNode(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := n.rawConn("raw")
			c.sendRaw(tc.bytes)
			if got := c.closeCode(5 * time.Second); got != tc.want {
				t.Fatalf("close code %d, want %d", got, tc.want)
			}
			// Then the server closes TCP.
			c.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			if _, err := io.ReadAll(c.br); err != nil && !isClosedErr(err) {
				t.Fatalf("after close: %v", err)
			}
		})
	}
	waitFor(t, 5*time.Second, "all descriptors closed", func() bool { return n.e.openFDs.Load() == 0 })
}

func TestPingAnsweredAndMessageAcrossPing(t *testing.T) {
	n := startNode(t)
	n.router.route = func(ev *Event) []Command {
		if ev.Type == "client.echo" {
			return []Command{{Op: OpEmit, Rule: "echo", Event: "echoed", To: Target{Users: []string{ev.Sender.UserID}}, Data: ev.Data}}
		}
		return nil
	}
	c := n.rawConn("pinger")
	mask := [4]byte{9, 8, 7, 6}
	f := func(op ws.OpCode, fin bool, p string) []byte {
		return ws.MustCompileFrame(ws.MaskFrameWith(ws.NewFrame(op, fin, []byte(p)), mask))
	}
	var b []byte
	b = append(b, f(ws.OpText, false, `{"event":"echo",`)...)
	b = append(b, f(ws.OpPing, true, "hello")...)
	b = append(b, f(ws.OpContinuation, true, `"data":{"n":1}}`)...)
	c.sendRaw(b)
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	h, err := ws.ReadHeader(c.br)
	if err != nil || h.OpCode != ws.OpPong {
		t.Fatalf("first frame %v %v, want pong", h.OpCode, err)
	}
	p := make([]byte, h.Length)
	io.ReadFull(c.br, p)
	if string(p) != "hello" {
		t.Fatalf("pong payload %q", p)
	}
	m := c.mustEvent("echoed")
	if m["data"].(map[string]any)["n"] != float64(1) {
		t.Fatalf("echo %v", m)
	}
}

func TestClientEventsReachRulesWithAck(t *testing.T) {
	n := startNode(t)
	n.router.route = func(ev *Event) []Command {
		if ev.Type != "client.typing" {
			return nil
		}
		to := ev.Data.(map[string]any)["to"].(string)
		return []Command{{Op: OpEmit, Rule: "typing", Event: "userTyping", To: Target{Users: []string{to}},
			Data: map[string]any{"from": ev.Sender.UserID, "isTyping": true}}}
	}
	a, b := n.dial("alice"), n.dial("bob")
	waitFor(t, 2*time.Second, "2 connections", func() bool { return n.e.Stats().Connections == 2 })
	a.send(map[string]any{"event": "typing", "data": map[string]any{"to": "bob"}, "ack": 7})
	ack, err := a.event(5 * time.Second)
	if err != nil || ack["ack"] != float64(7) || ack["ok"] != true {
		t.Fatalf("ack = %v %v", ack, err)
	}
	m := b.mustEvent("userTyping")
	if d := m["data"].(map[string]any); d["from"] != "alice" {
		t.Fatalf("userTyping = %v", m)
	}
	ev := n.router.seen("client.typing")[0]
	if ev.Source != SourceClient || ev.Sender.UserID != "alice" {
		t.Fatalf("event = %+v", ev)
	}
	// register can only confirm the token's own user.
	a.send(map[string]any{"event": "register", "data": map[string]any{"userId": "alice"}, "ack": 1})
	if m, _ := a.event(5 * time.Second); m["ok"] != true {
		t.Fatalf("register self = %v", m)
	}
	a.send(map[string]any{"event": "register", "data": "bob", "ack": 2})
	if m, _ := a.event(5 * time.Second); m["error"].(map[string]any)["code"] != "forbidden" {
		t.Fatalf("register other = %v", m)
	}
	a.send(map[string]any{"data": 1, "ack": 3})
	if m, _ := a.event(5 * time.Second); m["error"].(map[string]any)["code"] != "bad_request" {
		t.Fatalf("no event name = %v", m)
	}
}

func TestRoomsFromLifecycleRules(t *testing.T) {
	n := startNode(t)
	n.router.route = func(ev *Event) []Command {
		if ev.Type == "connection.open" {
			return []Command{{Op: OpJoin, Rule: "rooms", Rooms: []string{"role:" + fmt.Sprint(ev.Sender.Claims["role"])}}}
		}
		return nil
	}
	p1 := n.dialURL("ws://" + n.addr + "/ws?token=" + token(t, map[string]any{"sub": "p1", "role": "provider"}))
	c1 := n.dialURL("ws://" + n.addr + "/ws?token=" + token(t, map[string]any{"sub": "c1", "role": "customer"}))
	waitFor(t, 2*time.Second, "joins", func() bool { return len(n.router.seen("connection.open")) == 2 })
	// The join job is queued behind the open; a published event is queued
	// behind the join on the same partition.
	time.Sleep(50 * time.Millisecond)
	status, resp := n.api("POST", "/api/events", map[string]any{"event": "announce", "to": map[string]any{"rooms": []string{"role:provider"}}, "data": map[string]any{"m": 1}})
	if status != http.StatusAccepted || resp["delivered"] != float64(1) {
		t.Fatalf("events = %d %v", status, resp)
	}
	p1.mustEvent("announce")
	c1.noEvent(200 * time.Millisecond)
}

func TestEventsAPIValidation(t *testing.T) {
	n := startNode(t)
	a := n.dial("a")
	b := n.dial("b")
	waitFor(t, 2*time.Second, "2 connections", func() bool { return n.e.Stats().Connections == 2 })
	cases := []struct {
		name string
		body any
		want int
	}{
		{"no event", map[string]any{"to": map[string]any{"all": true}}, 400},
		{"no target", map[string]any{"event": "x"}, 400},
		{"not json", "nope", 400},
		{"batch with a bad one", []any{map[string]any{"event": "x", "to": map[string]any{"all": true}}, map[string]any{"event": "y"}}, 400},
	}
	for _, tc := range cases {
		if status, _ := n.api("POST", "/api/events", tc.body); status != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, status, tc.want)
		}
	}
	a.noEvent(100 * time.Millisecond) // nothing of a rejected batch went out
	status, resp := n.api("POST", "/api/events", []any{
		map[string]any{"event": "one", "to": map[string]any{"users": []any{"a", 42}}},
		map[string]any{"event": "two", "to": map[string]any{"all": true, "except": []any{"a"}}},
	})
	if status != http.StatusAccepted || len(resp["results"].([]any)) != 2 {
		t.Fatalf("batch = %d %v", status, resp)
	}
	a.mustEvent("one")
	b.mustEvent("two")
	a.noEvent(100 * time.Millisecond)
}

func TestAPIAuth(t *testing.T) {
	n := startNode(t)
	user := userToken(t, "u1")
	admin := token(t, map[string]any{"sub": "boss", "role": "admin"})
	cases := []struct {
		name, authz string
		want        int
	}{
		{"none", "", 401},
		{"garbage", "Bearer nope", 401},
		{"user jwt", "Bearer " + user, 403},
		{"admin jwt", "Bearer " + admin, 200},
		{"api key", "Bearer " + testAPIKey, 200},
	}
	for _, tc := range cases {
		if status, _ := n.request("GET", "/api/socket-test/stats", tc.authz, nil); status != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, status, tc.want)
		}
	}
}

func TestSlowConsumerIsClosedAndOthersGetEverything(t *testing.T) {
	const queue = 256 << 10
	n := startNode(t, func(c *Config) {
		c.Limits.OutboundQueueBytes = queue
		c.Limits.WriteTimeout = 2 * time.Second
	})
	// The slow client has a tiny receive buffer and never reads.
	d := net.Dialer{Control: func(network, address string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	raw, err := d.Dial("tcp", n.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, _, err := (ws.Dialer{}).Upgrade(raw, mustURL("ws://"+n.addr+"/ws?token="+userToken(t, "slow"))); err != nil {
		t.Fatal(err)
	}
	fast := n.dial("fast")
	waitFor(t, 2*time.Second, "2 connections", func() bool { return n.e.Stats().Connections == 2 })

	const messages = 300
	payload := strings.Repeat("x", 32<<10)
	var wg sync.WaitGroup
	wg.Add(1)
	received := 0
	go func() {
		defer wg.Done()
		for received < messages {
			if _, err := fast.event(10 * time.Second); err != nil {
				return
			}
			received++
		}
	}()
	for i := 0; i < messages; i++ {
		if status, _ := n.api("POST", "/api/socket-test/broadcast", map[string]any{"n": i, "pad": payload}); status != 202 {
			t.Fatalf("broadcast %d: %d", i, status)
		}
	}
	wg.Wait()
	if received != messages {
		t.Fatalf("fast client got %d of %d", received, messages)
	}
	waitFor(t, 10*time.Second, "slow consumer closed", func() bool { return n.e.Stats().SlowConsumers >= 1 })
	// The slow client, reading at last, finds the frames that fit and then 4008.
	sc := &client{t: t, conn: raw, br: bufio.NewReader(raw)}
	if code := sc.closeCode(10 * time.Second); code != CloseSlowConsumer {
		t.Fatalf("slow client close code %d, want 4008", code)
	}
}

func TestTokenExpiryCloses4001AndRefreshExtends(t *testing.T) {
	n := startNode(t, withLeeway(time.Second))
	short := func(user string) string {
		return token(t, map[string]any{"sub": user, "exp": time.Now().Add(2 * time.Second).Unix()})
	}
	expiring := n.dialURL("ws://" + n.addr + "/ws?token=" + short("e1"))
	refreshed := n.dialURL("ws://" + n.addr + "/ws?token=" + short("e2"))
	refreshed.send(map[string]any{"event": "refresh", "data": map[string]any{"token": userToken(t, "e2")}, "ack": 1})
	if m, err := refreshed.event(5 * time.Second); err != nil || m["ok"] != true {
		t.Fatalf("refresh ack = %v %v", m, err)
	}
	refreshed.send(map[string]any{"event": "refresh", "data": map[string]any{"token": userToken(t, "someone-else")}, "ack": 2})
	if m, _ := refreshed.event(5 * time.Second); m["error"].(map[string]any)["code"] != "forbidden" {
		t.Fatalf("refresh for another user = %v", m)
	}
	if code := expiring.closeCode(8 * time.Second); code != CloseTokenExpired { // exp + leeway
		t.Fatalf("close code %d, want 4001", code)
	}
	refreshed.noEvent(1500 * time.Millisecond)
}

func TestIdleConnectionIsPingedThenClosed(t *testing.T) {
	n := startNode(t, func(c *Config) {
		c.Limits.PingInterval = time.Second
		c.Limits.IdleTimeout = 3 * time.Second
	})
	c := n.rawConn("quiet")
	c.silent = true
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	h, err := ws.ReadHeader(c.br)
	if err != nil || h.OpCode != ws.OpPing {
		t.Fatalf("got %v %v, want a ping", h.OpCode, err)
	}
	// Never answer: closed at the idle timeout.
	if code := c.closeCode(8 * time.Second); code != ws.StatusGoingAway {
		t.Fatalf("close code %d, want 1001", code)
	}
}

func TestConnectionLimit(t *testing.T) {
	n := startNode(t, func(c *Config) { c.Limits.MaxConnections = 2 })
	n.dial("a")
	n.dial("b")
	_, err := dialWS("ws://"+n.addr+"/ws?token="+userToken(t, "c"), nil)
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("third connection: %v, want 503", err)
	}
}

func TestClientRateLimit(t *testing.T) {
	n := startNode(t, func(c *Config) { c.Limits.ClientEventsPerSecond = 5 })
	c := n.dial("chatty")
	for i := 0; i < 20; i++ {
		b, _ := json.Marshal(map[string]any{"event": "typing", "data": map[string]any{"to": "x"}})
		if err := wsutil.WriteClientMessage(c.conn, ws.OpText, b); err != nil {
			break
		}
	}
	if code := c.closeCode(5 * time.Second); code != CloseRateLimited {
		t.Fatalf("close code %d, want 4029", code)
	}
}

func TestGracefulShutdown(t *testing.T) {
	n := startNode(t)
	var clients []*client
	for i := 0; i < 20; i++ {
		clients = append(clients, n.dial(fmt.Sprintf("u%d", i)))
	}
	waitFor(t, 2*time.Second, "20 connections", func() bool { return n.e.Stats().Connections == 20 })
	n.api("POST", "/api/socket-test/broadcast", map[string]any{"title": "last words"})
	errc := make(chan error, 1)
	go func() { errc <- n.stop() }()
	for i, c := range clients {
		// Queued messages are flushed before the close.
		c.mustEvent("newNotification")
		if code := c.closeCode(5 * time.Second); code != ws.StatusGoingAway {
			t.Fatalf("client %d close code %d, want 1001", i, code)
		}
		c.conn.Close()
	}
	if err := <-errc; err != nil {
		t.Fatalf("Serve returned %v", err)
	}
	if open := n.e.openFDs.Load(); open != 0 {
		t.Fatalf("%d descriptors left open", open)
	}
}

func TestConnectDisconnectCyclesLeaveNothing(t *testing.T) {
	n := startNode(t)
	for i := 0; i < 300; i++ {
		d, err := dialWS("ws://"+n.addr+"/ws?token="+userToken(t, fmt.Sprintf("c%d", i%7)), nil)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			wsutil.WriteClientMessage(d.conn, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
		}
		d.conn.Close()
	}
	waitFor(t, 5*time.Second, "every conn gone", func() bool {
		s := n.e.Stats()
		return s.Connections == 0 && s.Users == 0 && n.e.openFDs.Load() == 0
	})
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}
