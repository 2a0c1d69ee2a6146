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
)

// A raw Engine.IO long-polling client.
type poller struct {
	t    *testing.T
	base string // http://addr/socket.io/?EIO=4&transport=polling
	sid  string
	got  []string // packets a GET returned, not yet taken by next
}

func (n *node) pollOpen() (*poller, map[string]any) {
	n.t.Helper()
	p := &poller{t: n.t, base: "http://" + n.addr + "/socket.io/?EIO=4&transport=polling"}
	status, body := p.do("GET", p.base, "", nil)
	if status != 200 || !strings.HasPrefix(body, "0{") {
		n.t.Fatalf("open: %d %q", status, body)
	}
	var open map[string]any
	json.Unmarshal([]byte(body[1:]), &open)
	p.sid = open["sid"].(string)
	return p, open
}

func (p *poller) url() string { return p.base + "&sid=" + p.sid }

func (p *poller) do(method, url, body string, header http.Header) (int, string) {
	p.t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (p *poller) post(packets ...string) {
	p.t.Helper()
	if status, body := p.do("POST", p.url(), strings.Join(packets, "\x1e"), nil); status != 200 || body != "ok" {
		p.t.Fatalf("POST %q: %d %q", packets, status, body)
	}
}

// get returns the packets of the next GET.
func (p *poller) get() []string {
	p.t.Helper()
	status, body := p.do("GET", p.url(), "", nil)
	if status != 200 {
		p.t.Fatalf("GET: %d %q", status, body)
	}
	return strings.Split(body, "\x1e")
}

// next returns the next packet that is not a ping (answered) or a noop.
func (p *poller) next() string {
	p.t.Helper()
	for {
		if len(p.got) == 0 {
			p.got = p.get()
		}
		pkt := p.got[0]
		p.got = p.got[1:]
		switch pkt {
		case "2":
			p.post("3")
		case "6":
		default:
			return pkt
		}
	}
}

// A session opens, is refused with reasons, connects, and carries events
// and acks both ways, several packets to a request.
func TestPollingSession(t *testing.T) {
	n := startNode(t, withStreams(100))
	n.router.handles = func(typ string) bool { return typ != "client.nope" }
	p, open := n.pollOpen()
	if up, _ := open["upgrades"].([]any); len(up) != 1 || up[0] != "websocket" || open["pingInterval"] != 25000.0 {
		t.Errorf("open packet %v", open)
	}
	p.post(`40{"token":"garbage"}`, `40/admin,`)
	got := p.get()
	if len(got) != 2 || !strings.HasPrefix(got[0], `44{"message":"unauthorized"`) || got[1] != `44/admin,{"message":"Invalid namespace"}` {
		t.Fatalf("refusals: %q", got)
	}
	p.post(`40{"token":"` + userToken(t, "u1") + `"}`)
	if pkt := p.next(); !strings.HasPrefix(pkt, `40{"sid":`) || !strings.Contains(pkt, `"pid":`) {
		t.Fatalf("CONNECT answered %q", pkt)
	}
	waitFor(t, time.Second, "u1 online", func() bool {
		ps, _ := n.e.Presence([]string{"u1"})
		return ps["u1"].Online && ps["u1"].Connections == 1
	})
	n.e.Publish("newNotification", map[string]any{"title": "hi"}, Target{Users: []string{"u1"}}, true)
	if pkt := p.next(); !strings.HasPrefix(pkt, `42["newNotification",{"title":"hi"},"`) {
		t.Fatalf("event %q", pkt)
	}
	p.post(`421["typing",{"to":"u2"}]`, `422["nope"]`)
	all := strings.Join(p.getUntil(2, nil), "|")
	if !strings.Contains(all, `431[{"ok":true}]`) || !strings.Contains(all, `432[{"error":{"code":"unknown_event"`) {
		t.Fatalf("acks: %s", all)
	}
	if ev := n.router.seen("client.typing"); len(ev) != 1 || ev[0].Sender.UserID != "u1" {
		t.Fatalf("rules saw %+v", ev)
	}
}

// getUntil reads packets until it has n of them, starting with have.
func (p *poller) getUntil(n int, have []string) []string {
	for len(have) < n {
		have = append(have, p.next())
	}
	return have
}

// The answers engine.io gives to bad requests; a second GET or POST in
// flight, and a POST over max_payload, end the session.
func TestPollingBadRequests(t *testing.T) {
	n := startNode(t, withSocketIO(SocketIOOptions{MaxPayload: 100}))
	p, _ := n.pollOpen()
	if status, body := p.do("PUT", p.url(), "", nil); status != 400 || !strings.Contains(body, `"code":3`) {
		t.Errorf("PUT: %d %s", status, body)
	}
	if status, body := p.do("POST", p.base, "", nil); status != 400 || !strings.Contains(body, `"code":2`) {
		t.Errorf("POST without a sid: %d %s", status, body)
	}
	if status, body := p.do("GET", p.base+"&sid=nope", "", nil); status != 400 || body != `{"code":1,"message":"Session ID unknown"}` {
		t.Errorf("unknown sid: %d %s", status, body)
	}
	// Two GETs at once: the second is refused, the session ends, and the
	// first returns the close packet.
	first := make(chan string, 1)
	go func() { _, body := p.do("GET", p.url(), "", nil); first <- body }()
	time.Sleep(100 * time.Millisecond)
	if status, _ := p.do("GET", p.url(), "", nil); status != 400 {
		t.Errorf("second GET: %d, want 400", status)
	}
	if body := <-first; body != "1" {
		t.Errorf("first GET after the session ended: %q, want the close packet", body)
	}
	if status, _ := p.do("GET", p.url(), "", nil); status != 400 {
		t.Errorf("GET after the end: %d, want 400", status)
	}

	p, _ = n.pollOpen()
	if status, _ := p.do("POST", p.url(), `42["x","`+strings.Repeat("a", 200)+`"]`, nil); status != http.StatusRequestEntityTooLarge {
		t.Errorf("POST over max_payload: %d, want 413", status)
	}
	if status, _ := p.do("GET", p.url(), "", nil); status != 400 && status != 200 {
		t.Errorf("GET after a 413: %d", status)
	}
}

// CORS: the preflight, and the credentials headers on every answer for
// an allowed origin; 403 for another.
func TestPollingCORS(t *testing.T) {
	n := startNode(t, func(c *Config) { c.Origins = []string{"https://app.example"} })
	p := &poller{t: t, base: "http://" + n.addr + "/socket.io/?EIO=4&transport=polling"}
	h := http.Header{"Origin": {"https://app.example"}, "Access-Control-Request-Method": {"POST"}, "Access-Control-Request-Headers": {"content-type"}}
	req, _ := http.NewRequest("OPTIONS", p.base, nil)
	req.Header = h
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		resp.Header.Get("Access-Control-Allow-Credentials") != "true" || !strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "POST") ||
		resp.Header.Get("Access-Control-Allow-Headers") != "content-type" {
		t.Errorf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	req, _ = http.NewRequest("GET", p.base, nil)
	req.Header.Set("Origin", "https://app.example")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" || resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
		t.Errorf("open from the app's origin: %d %v", resp.StatusCode, resp.Header)
	}
	if status, body := p.do("GET", p.base, "", http.Header{"Origin": {"https://evil.example"}}); status != 403 || !strings.Contains(body, `"code":4`) {
		t.Errorf("another origin: %d %s", status, body)
	}
}

// The upgrade: 2probe, 3probe, the waiting GET released by a noop, 5;
// then the conn is on the WebSocket, what was queued first; the polling
// sid is gone. Before the CONNECT, the WebSocket carries on the wait.
func TestPollingUpgrade(t *testing.T) {
	n := startNode(t, withStreams(100))
	p, _ := n.pollOpen()
	p.post(`40{"token":"` + userToken(t, "u1") + `"}`)
	if pkt := p.next(); !strings.HasPrefix(pkt, "40{") {
		t.Fatalf("CONNECT answered %q", pkt)
	}
	waiting := make(chan []string, 1)
	go func() { waiting <- p.get() }()
	time.Sleep(50 * time.Millisecond)
	ws1 := n.dialURL("ws://" + n.addr + "/socket.io/?EIO=4&transport=websocket&sid=" + p.sid)
	ws1.sendText("2probe")
	if pkt := ws1.text(); pkt != "3probe" {
		t.Fatalf("probe answered %q", pkt)
	}
	if got := <-waiting; len(got) != 1 || got[0] != "6" {
		t.Fatalf("the waiting GET returned %q, want the noop", got)
	}
	n.e.Publish("queued", 1, Target{Users: []string{"u1"}}, true) // in the session, no GET to take it
	ws1.sendText("5")
	if args := ws1.sioEvent(); args[0] != "queued" {
		t.Fatalf("first on the WebSocket: %v", args)
	}
	n.e.Publish("live", 2, Target{Users: []string{"u1"}}, true)
	if args := ws1.sioEvent(); args[0] != "live" {
		t.Fatalf("then: %v", args)
	}
	ws1.sendText(`421["typing",{}]`)
	if pkt := ws1.text(); pkt != `431[{"ok":true}]` {
		t.Fatalf("ack over the WebSocket: %q", pkt)
	}
	if status, _ := p.do("GET", p.url(), "", nil); status != 400 {
		t.Errorf("polling after the upgrade: %d, want 400", status)
	}
	if status, _ := p.do("POST", p.url(), `42["typing",{}]`, nil); status != 400 {
		t.Errorf("a POST to the upgraded sid: %d, want 400", status)
	}

	q, _ := n.pollOpen()
	ws2 := n.dialURL("ws://" + n.addr + "/socket.io/?EIO=4&transport=websocket&sid=" + q.sid)
	ws2.sendText("2probe")
	ws2.text()
	ws2.sendText("5")
	ws2.sendText(`40{"token":"` + userToken(t, "u2") + `"}`)
	if pkt := ws2.text(); !strings.HasPrefix(pkt, "40{") {
		t.Fatalf("CONNECT after an early upgrade answered %q", pkt)
	}
}

// Shutdown: a waiting GET returns the close packet at once.
func TestPollingShutdown(t *testing.T) {
	n := startNode(t)
	p, _ := n.pollOpen()
	p.post(`40{"token":"` + userToken(t, "u1") + `"}`)
	p.next()
	waiting := make(chan string, 1)
	go func() {
		resp, err := http.Get(p.url())
		if err != nil {
			waiting <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		waiting <- string(b)
	}()
	s := n.e.polls.get(p.sid)
	waitFor(t, time.Second, "the GET waiting", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.getting
	})
	start := time.Now()
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case body := <-waiting:
		if !strings.HasSuffix(body, "1") {
			t.Errorf("waiting GET at shutdown: %q, want the close packet", body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting GET did not return")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown took %v", d)
	}
}

// 1,000 polling sessions that connect and then stop polling (no upgrade,
// no pong): memory stays bounded while they wait, and each is closed at
// its ping timeout, its user offline, its place given back.
func TestPollingThousandSessionsTimeOut(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 sessions")
	}
	n := startNode(t, shortLinger, withGrace(0), withSocketIO(SocketIOOptions{PingInterval: time.Second, PingTimeout: time.Second}))
	runtime.GC()
	var before, during runtime.MemStats
	runtime.ReadMemStats(&before)
	const sessions = 1000
	for i := range sessions {
		p, _ := n.pollOpen()
		p.post(`40{"token":"` + userToken(t, fmt.Sprint("p", i)) + `"}`)
		if pkt := p.next(); !strings.HasPrefix(pkt, "40{") {
			t.Fatalf("session %d: CONNECT answered %q", i, pkt)
		}
	}
	http.DefaultClient.CloseIdleConnections()
	runtime.GC()
	runtime.ReadMemStats(&during)
	if per := (int64(during.HeapAlloc) - int64(before.HeapAlloc)) / sessions; per > 8<<10 {
		t.Errorf("%d B of heap per idle polling session", per)
	}
	waitFor(t, 10*time.Second, "every session closed at its ping timeout", func() bool {
		return statsConns(n.e) == 0 && pollCount(n.e) == 0 && n.e.slots.Load() == 0
	})
}

// A CONNECT and events in one POST: the events go to the new conn, after
// its CONNECT answer.
func TestPollingConnectAndEventsInOnePost(t *testing.T) {
	n := startNode(t)
	p, _ := n.pollOpen()
	p.post(`40{"token":"`+userToken(t, "u1")+`"}`, `421["typing",{}]`, `422["typing",{}]`)
	got := p.getUntil(3, nil)
	if !strings.HasPrefix(got[0], "40{") || got[1] != `431[{"ok":true}]` || got[2] != `432[{"ok":true}]` {
		t.Fatalf("after one POST: %q", got)
	}
}
