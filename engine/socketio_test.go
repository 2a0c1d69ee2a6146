package engine

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/sidecar/sidecar/engine/store"
)

// A raw Socket.IO client over WebSocket: Engine.IO packets as text frames.

func withSocketIO(o SocketIOOptions) nodeOption {
	return func(c *Config) { c.SocketIO = o }
}

func (n *node) sioURL() string { return "ws://" + n.addr + "/socket.io/?EIO=4&transport=websocket" }

// sioDial opens the WebSocket and reads the Engine.IO open packet.
func (n *node) sioDial() (*client, map[string]any) {
	n.t.Helper()
	c := n.dialURL(n.sioURL())
	p := c.text()
	if !strings.HasPrefix(p, "0{") {
		n.t.Fatalf("first packet %q, want the open packet", p)
	}
	var open map[string]any
	if err := json.Unmarshal([]byte(p[1:]), &open); err != nil {
		n.t.Fatal(err)
	}
	return c, open
}

// sioConnect dials and connects as user with auth, returning the client
// and the CONNECT answer's payload.
func (n *node) sioConnect(auth map[string]any) (*client, map[string]any) {
	n.t.Helper()
	c, _ := n.sioDial()
	b, _ := json.Marshal(auth)
	c.sendText("40" + string(b))
	p := c.text()
	if !strings.HasPrefix(p, "40{") {
		n.t.Fatalf("CONNECT answered %q", p)
	}
	var m map[string]any
	json.Unmarshal([]byte(p[2:]), &m)
	return c, m
}

// text reads the next text frame, answering WebSocket pings.
func (c *client) text() string {
	c.t.Helper()
	f, err := c.next(5 * time.Second)
	if err != nil {
		c.t.Fatalf("want a packet: %v", err)
	}
	if f.op != ws.OpText {
		code, reason := ws.ParseCloseFrameData(f.payload)
		c.t.Fatalf("want a text frame, got op %v (close %d %q)", f.op, code, reason)
	}
	return string(f.payload)
}

func (c *client) sendText(s string) {
	c.t.Helper()
	if err := wsutil.WriteClientMessage(c.conn, ws.OpText, []byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

// sioEvent reads the next packet, which must be an EVENT, and returns its
// array.
func (c *client) sioEvent() []any {
	c.t.Helper()
	for {
		p := c.text()
		if p == "2" { // an Engine.IO ping
			c.sendText("3")
			continue
		}
		if !strings.HasPrefix(p, "42[") {
			c.t.Fatalf("packet %q, want an event", p)
		}
		var args []any
		if err := json.Unmarshal([]byte(p[2:]), &args); err != nil {
			c.t.Fatal(err)
		}
		return args
	}
}

// sioClosed reads until the close frame: it must be preceded by the
// Engine.IO close packet, and carry code.
func (c *client) sioClosed(code ws.StatusCode) {
	c.t.Helper()
	sawClose := false
	for {
		f, err := c.next(5 * time.Second)
		if err != nil {
			c.t.Fatalf("want close %d: %v", code, err)
		}
		if f.op == ws.OpClose {
			got, reason := ws.ParseCloseFrameData(f.payload)
			if got != code || !sawClose {
				c.t.Fatalf("closed %d %q (after the Engine.IO close packet: %v), want %d after it", got, reason, sawClose, code)
			}
			return
		}
		sawClose = sawClose || string(f.payload) == "1"
	}
}

func TestSocketIOHTTPErrors(t *testing.T) {
	n := startNode(t)
	tests := []struct {
		query string
		code  float64
	}{
		{"", 5},
		{"EIO=3&transport=websocket", 5},
		{"EIO=abc&transport=websocket", 5},
		{"EIO=4&transport=abc", 0},
		{"EIO=4", 0},
		{"EIO=4&transport=websocket&sid=nope", 1},
	}
	for _, tc := range tests {
		resp, err := http.Get("http://" + n.addr + "/socket.io/?" + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var m map[string]any
		json.Unmarshal(b, &m)
		if resp.StatusCode != 400 || m["code"] != tc.code || m["message"] == "" {
			t.Errorf("GET ?%s = %d %s, want 400 with code %v", tc.query, resp.StatusCode, b, tc.code)
		}
	}
}

// The open packet carries the configured timers; a CONNECT is refused
// with the reason until its token is good, and to another namespace
// always; then events flow both ways, acks included.
func TestSocketIOConnectEventsAndAcks(t *testing.T) {
	n := startNode(t, withStreams(100))
	n.router.handles = func(typ string) bool { return typ != "client.nope" }
	c, open := n.sioDial()
	if open["pingInterval"] != 25000.0 || open["pingTimeout"] != 20000.0 || open["maxPayload"] != 1e6 || open["sid"] == "" {
		t.Errorf("open packet %v", open)
	}
	c.sendText("40")
	if p := c.text(); !strings.HasPrefix(p, `44{"message":"unauthorized","data":{"code":"unauthorized","reason":"missing token`) {
		t.Errorf("CONNECT without a token answered %q", p)
	}
	c.sendText(`40{"token":"garbage"}`)
	if p := c.text(); p != `44{"message":"unauthorized","data":{"code":"unauthorized","reason":"invalid token"}}` {
		t.Errorf("CONNECT with a bad token answered %q", p)
	}
	c.sendText(`40/admin,{"token":"` + userToken(t, "u1") + `"}`)
	if p := c.text(); p != `44/admin,{"message":"Invalid namespace"}` {
		t.Errorf("CONNECT to /admin answered %q", p)
	}
	if p, _ := n.e.Presence([]string{"u1"}); p["u1"].Online {
		t.Fatal("u1 online before a good CONNECT")
	}
	c.sendText(`40{"token":"` + userToken(t, "u1") + `"}`)
	p := c.text()
	var hello map[string]string
	if !strings.HasPrefix(p, "40{") || json.Unmarshal([]byte(p[2:]), &hello) != nil || hello["sid"] == "" || hello["pid"] == "" {
		t.Fatalf("CONNECT answered %q", p)
	}
	waitFor(t, time.Second, "u1 online", func() bool {
		p, _ := n.e.Presence([]string{"u1"})
		return p["u1"].Online
	})

	n.e.Publish("newNotification", map[string]any{"title": "hi"}, Target{Users: []string{"u1"}}, false)
	args := c.sioEvent()
	if len(args) != 3 || args[0] != "newNotification" || args[1].(map[string]any)["title"] != "hi" {
		t.Fatalf("event %v", args)
	}
	if _, ok := store.ParseStreamID(args[2].(string)); !ok {
		t.Errorf("offset %v is not a stream id", args[2])
	}

	c.sendText(`421["typing",{"to":"u2"}]`)
	if p := c.text(); p != `431[{"ok":true}]` {
		t.Errorf("ack of typing = %q", p)
	}
	ev := n.router.seen("client.typing")
	if len(ev) != 1 || ev[0].Data.(map[string]any)["to"] != "u2" || ev[0].Sender.UserID != "u1" {
		t.Errorf("rules saw %+v", ev)
	}
	c.sendText(`422["nope"]`)
	if p := c.text(); !strings.HasPrefix(p, `432[{"error":{"code":"unknown_event"`) {
		t.Errorf("ack of an unknown event = %q", p)
	}
	// No ack id, no answer; a second CONNECT and a client ACK change nothing.
	c.sendText(`42["typing",{"to":"u3"}]`)
	c.sendText(`40{"token":"x"}`)
	c.sendText(`431["x"]`)
	c.sendText(`423["typing"]`)
	if p := c.text(); p != `433[{"ok":true}]` {
		t.Errorf("ack after the ignored packets = %q", p)
	}
	if ev := n.router.seen("client.typing"); len(ev) != 3 || ev[2].Data != nil {
		t.Errorf("rules saw %d typing events, the last with data %v", len(ev), ev[len(ev)-1].Data)
	}
}

// Malformed packets, binary data and a message over max_payload close the
// session, after the Engine.IO close packet; the node keeps serving.
func TestSocketIOBadInputCloses(t *testing.T) {
	n := startNode(t, withSocketIO(SocketIOOptions{MaxPayload: 1000}))
	tests := []struct {
		name string
		send func(c *client)
		code ws.StatusCode
	}{
		{"4abc", func(c *client) { c.sendText("4abc") }, ws.StatusProtocolError},
		{"42{}", func(c *client) { c.sendText("42{}") }, ws.StatusProtocolError},
		{"event name not a string", func(c *client) { c.sendText(`42[1,"x"]`) }, ws.StatusProtocolError},
		{"unknown packet type", func(c *client) { c.sendText(`49["x"]`) }, ws.StatusProtocolError},
		{"bad ack id", func(c *client) { c.sendText(`42abc["x"]`) }, ws.StatusProtocolError},
		{"not JSON", func(c *client) { c.sendText(`42["x",{]`) }, ws.StatusProtocolError},
		{"not a packet", func(c *client) { c.sendText("hello") }, ws.StatusProtocolError},
		{"open from a client", func(c *client) { c.sendText("0{}") }, ws.StatusProtocolError},
		{"attachments", func(c *client) { c.sendText(`451-["ev",{"_placeholder":true,"num":0}]`) }, ws.StatusUnsupportedData},
		{"binary frame", func(c *client) { wsutil.WriteClientMessage(c.conn, ws.OpBinary, []byte{1, 2}) }, ws.StatusUnsupportedData},
		{"over max_payload", func(c *client) { c.sendText(`42["x","` + strings.Repeat("a", 1000) + `"]`) }, ws.StatusMessageTooBig},
		{"disconnect", func(c *client) { c.sendText("41") }, ws.StatusNormalClosure},
		{"engine.io close", func(c *client) { c.sendText("1") }, ws.StatusNormalClosure},
	}
	for _, tc := range tests {
		for _, connected := range []bool{false, true} {
			t.Logf("%s, connected %v", tc.name, connected) // the client's failures are the test's
			var c *client
			if connected {
				c, _ = n.sioConnect(map[string]any{"token": userToken(t, "u1")})
			} else {
				c, _ = n.sioDial()
			}
			tc.send(c)
			c.sioClosed(tc.code)
		}
	}
	c, _ := n.sioConnect(map[string]any{"token": userToken(t, "u2")})
	c.sendText(`42["still","here"]`)
}

// The server pings every ping_interval; a client that does not answer is
// closed after ping_interval + ping_timeout, and goes offline; one that
// answers stays. No CONNECT within connect_timeout closes the socket.
func TestSocketIOPingAndConnectTimeouts(t *testing.T) {
	n := startNode(t, withGrace(0), withSocketIO(SocketIOOptions{PingInterval: time.Second, PingTimeout: time.Second, ConnectTimeout: 300 * time.Millisecond}))
	start := time.Now()
	idle, _ := n.sioDial()
	idle.sioClosedWithin(ws.StatusPolicyViolation, 2*time.Second)
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("closed %v after the open, before connect_timeout", d)
	}

	silent, _ := n.sioConnect(map[string]any{"token": userToken(t, "silent")})
	alive, _ := n.sioConnect(map[string]any{"token": userToken(t, "alive")})
	if p := silent.text(); p != "2" {
		t.Fatalf("want a ping, got %q", p)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if p := alive.text(); p == "2" {
			alive.sendText("3")
		}
		if p, _ := n.e.Presence([]string{"silent"}); !p["silent"].Online {
			break
		}
	}
	if p, _ := n.e.Presence([]string{"silent", "alive"}); p["silent"].Online || !p["alive"].Online {
		t.Fatalf("after the ping timeout: %+v", p)
	}
}

func (c *client) sioClosedWithin(code ws.StatusCode, d time.Duration) {
	c.t.Helper()
	f, err := c.next(d)
	if err == nil && string(f.payload) == "1" {
		f, err = c.next(d)
	}
	if err != nil || f.op != ws.OpClose {
		c.t.Fatalf("want close %d: %v %q", code, err, f.payload)
	}
	if got, _ := ws.ParseCloseFrameData(f.payload); got != code {
		c.t.Fatalf("closed %d, want %d", got, code)
	}
}

// Connection state recovery: a client back with its pid and offset gets
// what it missed, in order, and the same pid (socket.recovered); one that
// received nothing recovers from its pid; a garbage offset gets a new pid
// and nothing replayed.
func TestSocketIORecovery(t *testing.T) {
	n := startNode(t, withStreams(100))
	n.e.Publish("warmup", 0, Target{Users: []string{"u1"}}, true) // the store has kept something: an epoch
	c, hello := n.sioConnect(map[string]any{"token": userToken(t, "u1")})
	pid := hello["pid"].(string)
	n.e.Publish("newNotification", 1, Target{Users: []string{"u1"}}, true)
	offset := c.sioEvent()[2].(string)
	c.conn.Close()
	for i := 2; i <= 4; i++ {
		n.e.Publish("newNotification", i, Target{Users: []string{"u1"}}, true)
	}
	c, hello = n.sioConnect(map[string]any{"token": userToken(t, "u1"), "pid": pid, "offset": offset})
	if hello["pid"] != pid {
		t.Errorf("recovered CONNECT answered pid %v, want %s", hello["pid"], pid)
	}
	for i := 2; i <= 4; i++ {
		if args := c.sioEvent(); args[1] != float64(i) {
			t.Fatalf("replayed %v, want %d", args, i)
		}
	}
	c.conn.Close()

	// A client that got nothing since it connected recovers from its pid.
	c, hello = n.sioConnect(map[string]any{"token": userToken(t, "u2")})
	pid2 := hello["pid"].(string)
	c.conn.Close()
	n.e.Publish("newNotification", 5, Target{Users: []string{"u2"}}, true)
	c, hello = n.sioConnect(map[string]any{"token": userToken(t, "u2"), "pid": pid2})
	if args := c.sioEvent(); hello["pid"] != pid2 || args[1] != 5.0 {
		t.Errorf("recovery from the pid: answered pid %v (want %s), then %v", hello["pid"], pid2, args)
	}
	c.conn.Close()

	c, hello = n.sioConnect(map[string]any{"token": userToken(t, "u1"), "pid": pid, "offset": "garbage"})
	if hello["pid"] == pid {
		t.Error("a garbage offset recovered")
	}
	n.e.Publish("live", 6, Target{Users: []string{"u1"}}, true)
	if args := c.sioEvent(); args[0] != "live" {
		t.Errorf("after a failed recovery: %v, want the live event alone", args)
	}
}

// Shutdown sends a Socket.IO connection the Engine.IO close packet, then
// 1001: socket.io-client takes that as a transport close and reconnects.
// A handshake waiting for its CONNECT ends too.
func TestSocketIOShutdown(t *testing.T) {
	n := startNode(t)
	c, _ := n.sioConnect(map[string]any{"token": userToken(t, "u1")})
	waiting, _ := n.sioDial()
	done := make(chan error, 1)
	go func() { done <- n.stop() }()
	c.sioClosed(ws.StatusGoingAway)
	waiting.sioClosedWithin(ws.StatusGoingAway, 5*time.Second)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A connected Socket.IO conn costs no goroutine, whether it came over a
// WebSocket or was upgraded from long-polling: 100 of them leave the
// goroutine count where it was.
func TestSocketIOConnsHoldNoGoroutine(t *testing.T) {
	n := startNode(t)
	var clients []*client
	for i := range 2 { // warm up the pools and the HTTP server
		c, _ := n.sioConnect(map[string]any{"token": userToken(t, fmt.Sprint("warm", i))})
		clients = append(clients, c)
	}
	time.Sleep(100 * time.Millisecond)
	before := runtime.NumGoroutine()
	for i := range 50 {
		c, _ := n.sioConnect(map[string]any{"token": userToken(t, fmt.Sprint("ws", i))})
		clients = append(clients, c)
		p, _ := n.pollOpen()
		p.post(`40{"token":"` + userToken(t, fmt.Sprint("poll", i)) + `"}`)
		p.next()
		up := n.dialURL("ws://" + n.addr + "/socket.io/?EIO=4&transport=websocket&sid=" + p.sid)
		up.sendText("2probe")
		up.text()
		up.sendText("5")
		clients = append(clients, up)
	}
	http.DefaultClient.CloseIdleConnections() // the polling requests' keep-alive connections
	waitFor(t, 2*time.Second, "102 conns indexed", func() bool { return statsConns(n.e) == 102 })
	time.Sleep(200 * time.Millisecond)
	if after := runtime.NumGoroutine(); after > before+5 {
		t.Errorf("goroutines %d with 100 more Socket.IO conns, from %d", after, before)
	}
}

func statsConns(e *Engine) int64 {
	var n int64
	for _, p := range e.hub.parts {
		n += p.nConns.Load()
	}
	return n
}

// A Socket.IO conn whose token expires is closed like a native one (4001),
// after the Engine.IO close packet; a refresh keeps it open.
func TestSocketIOTokenExpiry(t *testing.T) {
	n := startNode(t, withLeeway(time.Second))
	exp := time.Now().Add(2 * time.Second).Unix()
	c, _ := n.sioConnect(map[string]any{"token": token(t, map[string]any{"sub": "u1", "exp": exp})})
	kept, _ := n.sioConnect(map[string]any{"token": token(t, map[string]any{"sub": "u2", "exp": exp})})
	kept.sendText(`421["refresh",{"token":"` + userToken(t, "u2") + `"}]`)
	if p := kept.text(); p != `431[{"ok":true}]` {
		t.Fatalf("refresh answered %q", p)
	}
	start := time.Now()
	c.sioClosedWithin(CloseTokenExpired, 8*time.Second) // exp + leeway, on the next tick
	if d := time.Since(start); d > 6*time.Second {
		t.Errorf("closed %v after the test began", d)
	}
	n.e.Publish("still", 1, Target{Users: []string{"u2"}}, true)
	if args := kept.sioEvent(); args[0] != "still" {
		t.Errorf("refreshed conn got %v", args)
	}
}
