package engine

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// Regression tests for the outside review of the Socket.IO change: each
// was a leak, a deadlock or an unbounded cost before its fix.

func pollCount(e *Engine) int {
	e.polls.mu.Lock()
	defer e.polls.mu.Unlock()
	return len(e.polls.m)
}

// shortLinger makes ended polling sessions go after 200 ms.
func shortLinger(c *Config) { c.pollLinger = 200 * time.Millisecond }

// A polling conn that the reader side ends (the client's own close, a
// rate limit) ends its session too, which goes after the linger; its
// place is given back.
func TestPollingSessionEndsWithItsConn(t *testing.T) {
	n := startNode(t, shortLinger, func(c *Config) { c.Limits.ClientEventsPerSecond = 1; c.Limits.ClientEventsBurst = 1 })
	for _, bye := range []string{"1", "41", strings.Repeat(`42["typing",{}]`+"\x1e", 5) + `42["typing",{}]`} {
		p, _ := n.pollOpen()
		p.post(`40{"token":"` + userToken(t, "u1") + `"}`)
		if pkt := p.next(); !strings.HasPrefix(pkt, "40{") {
			t.Fatalf("CONNECT answered %q", pkt)
		}
		p.do("POST", p.url(), bye, nil)
	}
	waitFor(t, 3*time.Second, "every session gone and every place back", func() bool {
		return pollCount(n.e) == 0 && n.e.slots.Load() == 0 && statsConns(n.e) == 0
	})
}

// One upgrade per session: a second WebSocket on the sid is refused, and
// after both are gone no place or descriptor is left.
func TestPollingOneUpgradePerSession(t *testing.T) {
	for _, connected := range []bool{false, true} {
		n := startNode(t)
		p, _ := n.pollOpen()
		if connected {
			p.post(`40{"token":"` + userToken(t, "u1") + `"}`)
			p.next()
		}
		url := "ws://" + n.addr + "/socket.io/?EIO=4&transport=websocket&sid=" + p.sid
		a := n.dialURL(url)
		if d, err := dialWS(url, nil); err == nil {
			d.conn.Close()
			t.Fatalf("connected %v: a second upgrade of the session was accepted", connected)
		}
		a.sendText("2probe")
		a.text()
		a.sendText("5")
		if !connected {
			a.sendText(`40{"token":"` + userToken(t, "u1") + `"}`)
			if pkt := a.text(); !strings.HasPrefix(pkt, "40{") {
				t.Fatalf("CONNECT over the upgraded WebSocket answered %q", pkt)
			}
		} else {
			waitFor(t, time.Second, "on the WebSocket", func() bool { return n.e.openFDs.Load() == 1 })
		}
		n.e.Publish("x", 1, Target{Users: []string{"u1"}}, true)
		for {
			if p := a.text(); strings.HasPrefix(p, "42") {
				break
			}
		}
		a.conn.Close()
		waitFor(t, 5*time.Second, "nothing left", func() bool {
			return n.e.slots.Load() == 0 && n.e.openFDs.Load() == 0 && statsConns(n.e) == 0
		})
	}
}

// A CONNECT_ERROR queued for the next GET when the upgrade comes reaches
// the client on the WebSocket.
func TestPollingUpgradeCarriesPendingPackets(t *testing.T) {
	n := startNode(t)
	p, _ := n.pollOpen()
	a := n.dialURL("ws://" + n.addr + "/socket.io/?EIO=4&transport=websocket&sid=" + p.sid)
	a.sendText("2probe")
	a.text()
	p.post(`40{"token":"garbage"}`) // answered in the session: no GET takes it
	a.sendText("5")
	if pkt := a.text(); !strings.HasPrefix(pkt, `44{"message":"unauthorized"`) {
		t.Fatalf("after the upgrade: %q, want the CONNECT_ERROR", pkt)
	}
}

// The session's connect timeout is the WebSocket's too: an upgrade that
// comes after it is closed, and no place is given back twice.
func TestPollingUpgradeAfterConnectTimeout(t *testing.T) {
	n := startNode(t, withSocketIO(SocketIOOptions{ConnectTimeout: 500 * time.Millisecond, PingTimeout: 10 * time.Second}))
	p, _ := n.pollOpen()
	a := n.dialURL("ws://" + n.addr + "/socket.io/?EIO=4&transport=websocket&sid=" + p.sid)
	a.sendText("2probe")
	a.text()
	time.Sleep(800 * time.Millisecond)
	a.sendText("5")
	a.sioClosedWithin(ws.StatusPolicyViolation, 2*time.Second)
	waitFor(t, time.Second, "the place back once", func() bool { return n.e.slots.Load() == 0 })
	time.Sleep(100 * time.Millisecond)
	if s := n.e.slots.Load(); s != 0 {
		t.Fatalf("slots %d, want 0", s)
	}
}

// A CONNECT while a publisher waits on the partition (its channel full,
// pubMu held) does not deadlock the node: position() takes no lock.
func TestSocketIOConnectWhilePublishersWait(t *testing.T) {
	n := startNode(t, func(c *Config) { c.Partitions = 1 })
	part := n.e.hub.parts[0]
	hold := make(chan struct{})
	part.jobs <- job{kind: jobCall, fn: func() { <-hold }}
	p, _ := n.pollOpen()
	p.post(`40{"token":"` + userToken(t, "u1") + `"}`) // its jobAdd waits behind the call
	done := make(chan struct{})
	go func() {
		for i := range cap(part.jobs) + 100 {
			n.e.Publish("x", i, Target{Users: []string{"u2"}}, false)
		}
		close(done)
	}()
	waitFor(t, 5*time.Second, "the partition's channel full", func() bool { return len(part.jobs) == cap(part.jobs) })
	close(hold)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("deadlock: the publishers never finished")
	}
	if pkt := p.next(); !strings.HasPrefix(pkt, "40{") {
		t.Fatalf("CONNECT answered %q", pkt)
	}
}

// The rate limit does not forgive a polling client its own pause between
// POSTs.
func TestPollingRateLimitCountsIdleTime(t *testing.T) {
	n := startNode(t, func(c *Config) { c.Limits.ClientEventsPerSecond = 1; c.Limits.ClientEventsBurst = 1 })
	p, _ := n.pollOpen()
	p.post(`40{"token":"` + userToken(t, "u1") + `"}`)
	p.next()
	time.Sleep(2 * time.Second)
	p.do("POST", p.url(), strings.Repeat(`42["typing",{}]`+"\x1e", 7)+`42["typing",{}]`, nil)
	time.Sleep(300 * time.Millisecond)
	if got := len(n.router.seen("client.typing")); got > 3 {
		t.Fatalf("rules saw %d of 8 events at 1/s, burst 1, after 2 s", got)
	}
}

// Before the CONNECT a client may send and queue only a little: a POST
// over maxPreConnect is refused (413), and pings that pile up pongs no
// GET takes end the session.
func TestPollingPreConnectBounded(t *testing.T) {
	n := startNode(t)
	p, _ := n.pollOpen()
	if status, _ := p.do("POST", p.url(), strings.Repeat("2\x1e", maxPreConnect)+"2", nil); status != 413 {
		t.Fatalf("a big POST before the CONNECT: %d, want 413", status)
	}
	p, _ = n.pollOpen()
	pings := strings.Repeat("2\x1e", maxPreConnect/4) + "2"
	for range 4 {
		p.do("POST", p.url(), pings, nil)
	}
	if s := n.e.polls.get(p.sid); s != nil && !s.isEnded() {
		t.Fatal("pongs piled up past maxPreConnect and the session goes on")
	}
	// A WebSocket handshake's frame is bounded the same way.
	c, _ := n.sioDial()
	c.sendText("40" + `{"token":"` + strings.Repeat("a", maxPreConnect) + `"}`)
	c.sioClosed(ws.StatusMessageTooBig)
}

// From the second review: a session ended while its CONNECT's open rules
// run (a second POST, a racing upgrade) leaves no conn behind, gives its
// place back, and every connection.open has its connection.close.

func slowOpen(n *node, d time.Duration) {
	n.router.onCtx = func(_ context.Context, ev *Event) {
		if ev.Type == eventOpen {
			time.Sleep(d)
		}
	}
}

func TestPollingEndDuringConnect(t *testing.T) {
	n := startNode(t, shortLinger)
	slowOpen(n, 300*time.Millisecond)
	p, _ := n.pollOpen()
	var wg sync.WaitGroup
	wg.Go(func() { p.do("POST", p.url(), `40{"token":"`+userToken(t, "u1")+`"}`, nil) })
	time.Sleep(100 * time.Millisecond) // inside the open rules
	if status, _ := p.do("POST", p.url(), "3", nil); status != 400 {
		t.Fatalf("a second POST: %d, want 400", status)
	}
	wg.Wait()
	waitFor(t, 3*time.Second, "the place back and the close run", func() bool {
		return n.e.slots.Load() == 0 && len(n.router.seen(eventClose)) == 1 && statsConns(n.e) == 0
	})
}

func TestPollingRacingPostsLeakNothing(t *testing.T) {
	n := startNode(t, shortLinger)
	tok := userToken(t, "u1")
	for range 100 {
		p, _ := n.pollOpen()
		var wg sync.WaitGroup
		for _, body := range []string{`40{"token":"` + tok + `"}`, "3"} {
			wg.Go(func() { p.do("POST", p.url(), body, nil) })
		}
		wg.Wait()
		p.do("POST", p.url(), "1", nil)
	}
	waitFor(t, 5*time.Second, "every place back", func() bool {
		return n.e.slots.Load() == 0 && statsConns(n.e) == 0 && pollCount(n.e) == 0
	})
	if o, c := len(n.router.seen(eventOpen)), len(n.router.seen(eventClose)); o != c {
		t.Errorf("connection.open ran %d times, connection.close %d", o, c)
	}
}

func TestPollingUpgradeDuringConnect(t *testing.T) {
	n := startNode(t, shortLinger)
	slowOpen(n, 400*time.Millisecond)
	p, _ := n.pollOpen()
	a := n.dialURL("ws://" + n.addr + "/socket.io/?EIO=4&transport=websocket&sid=" + p.sid)
	a.sendText("2probe")
	a.text()
	var wg sync.WaitGroup
	wg.Go(func() { p.do("POST", p.url(), `40{"token":"`+userToken(t, "u1")+`"}`, nil) })
	time.Sleep(100 * time.Millisecond)
	a.sendText("5") // waits for the CONNECT's conn, then moves it
	waitFor(t, 3*time.Second, "the conn on the WebSocket", func() bool { return n.e.openFDs.Load() == 1 })
	n.e.Publish("x", 1, Target{Users: []string{"u1"}}, true)
	for {
		if pkt := a.text(); strings.HasPrefix(pkt, "42") {
			break
		}
	}
	wg.Wait()
	a.conn.Close()
	waitFor(t, 5*time.Second, "closed, the place back", func() bool {
		return n.e.slots.Load() == 0 && statsConns(n.e) == 0
	})
	if o, c := len(n.router.seen(eventOpen)), len(n.router.seen(eventClose)); o != 1 || c != 1 {
		t.Errorf("connection.open ran %d times, connection.close %d; want once each", o, c)
	}
}
