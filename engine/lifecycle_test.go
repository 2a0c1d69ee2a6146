package engine

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// An event published the moment the client has its 101 reaches it: the
// conn is indexed before the answer is queued, and the answer is the first
// thing on the wire.
func TestEventRightAfterConnectIsNotLost(t *testing.T) {
	n := startNode(t)
	for i := 0; i < 100; i++ {
		user := fmt.Sprintf("fresh-%d", i)
		c := n.dial(user)
		if _, _, err := n.e.Publish("hello", map[string]any{"i": i}, Target{Users: []string{user}}, false); err != nil {
			t.Fatal(err)
		}
		if m := c.mustEvent("hello"); m["data"].(map[string]any)["i"] != float64(i) {
			t.Fatalf("got %v", m)
		}
		c.conn.Close()
	}
}

// One event bigger than the whole outbound queue still reaches a conn with
// nothing queued, instead of closing every recipient as a slow consumer.
func TestFrameLargerThanQueueReachesIdleConn(t *testing.T) {
	n := startNode(t, func(c *Config) { c.Limits.OutboundQueueBytes = 4096 })
	c := n.dial("big")
	waitFor(t, 2*time.Second, "connection", func() bool { return n.e.Stats().Connections == 1 })
	status, resp := n.api("POST", "/api/socket-test/send/big", map[string]any{"pad": strings.Repeat("x", 10000)})
	if status != http.StatusAccepted || resp["delivered"] != float64(1) {
		t.Fatalf("send = %d %v", status, resp)
	}
	c.mustEvent("newNotification")
}

func TestEventsAPIRefusesInvalidUTF8(t *testing.T) {
	n := startNode(t)
	req, _ := http.NewRequest("POST", "http://"+n.addr+"/api/events",
		strings.NewReader("{\"event\":\"x\",\"to\":{\"all\":true},\"data\":\"\xff\xfe\"}"))
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d, want 400: text frames must be UTF-8", resp.StatusCode)
	}
}

// After a shutdown whose drain deadline passes with a peer that never
// answers the close, every descriptor and goroutine of the engine is gone.
func TestShutdownLeavesNoDescriptorsOrGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		// the test's store, closed by startNode's cleanup after this check
		goleak.IgnoreTopFunction("github.com/tidwall/buntdb.(*DB).backgroundManager"))
	before := openFDCount(t)
	n := startNode(t, func(c *Config) { c.DrainTimeout = 500 * time.Millisecond })
	for i := 0; i < 30; i++ {
		n.dial(fmt.Sprintf("u%d", i))
	}
	n.rawConn("silent") // like every client here, it never answers the close
	waitFor(t, 2*time.Second, "31 connections", func() bool { return n.e.Stats().Connections == 31 })
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	if open := n.e.openFDs.Load(); open != 0 {
		t.Fatalf("%d conns open after Serve returned", open)
	}
	// The clients' own sockets are the test's: close them, then count.
	http.DefaultClient.CloseIdleConnections()
	n.closeClients()
	waitFor(t, 5*time.Second, "descriptors back to the baseline", func() bool { return openFDCount(t) <= before })
}

func openFDCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

// Rooms that connection.open rules join are joined before the client sees
// its 101, even while another connection's open rule is slow: an event for
// the room posted right after the open reaches the new connection.
func TestRoomsFromOpenRulesAreJoinedBeforeTheAnswer(t *testing.T) {
	n := startNode(t)
	n.router.route = func(ev *Event) []Command {
		if ev.Type != "connection.open" {
			return nil
		}
		if ev.Sender.UserID == "slowpoke" {
			time.Sleep(300 * time.Millisecond)
		}
		return []Command{{Op: OpJoin, Rule: "own-room", Rooms: []string{"room:" + ev.Sender.UserID}}}
	}
	for i := 0; i < 20; i++ {
		go func() {
			if d, err := dialWS("ws://"+n.addr+"/ws?token="+userToken(t, "slowpoke"), nil); err == nil {
				t.Cleanup(func() { d.conn.Close() })
			}
		}()
		user := fmt.Sprintf("fresh-%d", i)
		c := n.dial(user)
		status, resp := n.api("POST", "/api/events", map[string]any{"event": "welcome", "to": map[string]any{"rooms": []string{"room:" + user}}})
		if status != http.StatusAccepted || resp["delivered"] != float64(1) {
			t.Fatalf("connection %d: room event = %d %v, want delivered 1", i, status, resp)
		}
		c.mustEvent("welcome")
	}
}

// Shutdown runs every connection.close event through the rules with a live
// context, after the connections are closed and before Serve returns.
func TestShutdownRunsEveryCloseEventWithALiveContext(t *testing.T) {
	n := startNode(t)
	var closes, cancelled atomic.Int64
	n.router.route = func(ev *Event) []Command {
		if ev.Type == "connection.close" {
			time.Sleep(20 * time.Millisecond) // rules that take a while
		}
		return nil
	}
	n.router.onCtx = func(ctx context.Context, ev *Event) {
		if ev.Type == "connection.close" {
			closes.Add(1)
			if ctx.Err() != nil {
				cancelled.Add(1)
			}
		}
	}
	for i := 0; i < 30; i++ {
		c := n.dial(fmt.Sprintf("u%d", i))
		go func() { c.closeCode(10 * time.Second); c.conn.Close() }()
	}
	waitFor(t, 2*time.Second, "30 connections", func() bool { return n.e.Stats().Connections == 30 })
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	if closes.Load() != 30 || cancelled.Load() != 0 {
		t.Fatalf("%d close events ran, %d with a cancelled context; want 30 and 0", closes.Load(), cancelled.Load())
	}
}

// A token that expired less than the leeway ago is accepted and stays
// accepted for the leeway: it is not closed 4001 right after its 101.
func TestTokenWithinLeewayIsNotClosedAtOnce(t *testing.T) {
	n := startNode(t)
	tok := token(t, map[string]any{"sub": "late", "exp": time.Now().Add(-time.Second).Unix()})
	c := n.dialURL("ws://" + n.addr + "/ws?token=" + tok)
	c.noEvent(2 * time.Second) // the default leeway is 5 s
	if code := c.closeCode(8 * time.Second); code != CloseTokenExpired {
		t.Fatalf("close code %d, want 4001 once the leeway has passed", code)
	}
}

func TestRefreshWithExpiredTokenSaysExpired(t *testing.T) {
	n := startNode(t)
	c := n.dial("r1")
	old := token(t, map[string]any{"sub": "r1", "exp": time.Now().Add(-time.Hour).Unix()})
	c.send(map[string]any{"event": "refresh", "data": map[string]any{"token": old}, "ack": 1})
	m, err := c.event(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := m["error"].(map[string]any); e["code"] != "unauthorized" || e["message"] != "token expired" {
		t.Fatalf("refresh with an expired token = %v, want unauthorized/token expired", m)
	}
}

// A connection's close event runs after its own client events, also when
// the server closes it while they wait for the rules.
func TestCloseEventRunsAfterTheConnectionsOwnEvents(t *testing.T) {
	n := startNode(t, func(c *Config) {
		c.Limits.RuleWorkers = 2
		c.Limits.ClientEventsPerSecond = 0
	})
	n.router.route = func(ev *Event) []Command {
		if ev.Type == "client.slow" {
			time.Sleep(20 * time.Millisecond)
		}
		return nil
	}
	c := n.dial("u")
	for i := 0; i < 20; i++ {
		c.send(map[string]any{"event": "slow"})
	}
	waitFor(t, 5*time.Second, "events in the rules", func() bool { return len(n.router.seen("client.slow")) > 0 })
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	var order []string
	n.router.mu.Lock()
	for _, ev := range n.router.events {
		order = append(order, ev.Type)
	}
	n.router.mu.Unlock()
	closeAt, lastSlow := -1, -1
	for i, typ := range order {
		switch typ {
		case "connection.close":
			closeAt = i
		case "client.slow":
			lastSlow = i
		}
	}
	if closeAt < 0 || closeAt < lastSlow {
		t.Fatalf("events in order %v: the close event must come after every client event", order)
	}
}

// An event that connection.open rules emit to the opening user reaches the
// new connection too, right after its 101.
func TestOpenRulesEmitToTheOpeningConnection(t *testing.T) {
	n := startNode(t)
	n.router.route = func(ev *Event) []Command {
		if ev.Type != "connection.open" {
			return nil
		}
		return []Command{
			{Op: OpEmit, Rule: "welcome", Event: "welcome", To: Target{Users: []string{ev.Sender.UserID}}},
			{Op: OpJoin, Rule: "rooms", User: ev.Sender.UserID, Rooms: []string{"mine"}},
		}
	}
	first := n.dial("w")
	first.mustEvent("welcome")
	second := n.dial("w")
	second.mustEvent("welcome")
	first.mustEvent("welcome") // the user's other tab hears it too
	status, resp := n.api("POST", "/api/events", map[string]any{"event": "room", "to": map[string]any{"rooms": []string{"mine"}}})
	if status != http.StatusAccepted || resp["delivered"] != float64(2) {
		t.Fatalf("room event = %d %v, want both connections in the room an explicit-user join named", status, resp)
	}
}

// Shutdown keeps to its budget: a long batch of slow client events stops
// at the drain deadline instead of running to its end.
func TestShutdownStopsALongBatchAtTheDeadline(t *testing.T) {
	n := startNode(t, func(c *Config) {
		c.DrainTimeout = 500 * time.Millisecond
		c.Limits.ClientEventsPerSecond = 0
	})
	var ran atomic.Int64
	entered := make(chan struct{})
	n.router.forget = true
	n.router.route = func(ev *Event) []Command {
		switch ev.Type {
		case "client.first":
			close(entered)
			time.Sleep(300 * time.Millisecond) // the rest queue up behind it, in the kernel
		case "client.slow":
			ran.Add(1)
			time.Sleep(50 * time.Millisecond)
		}
		return nil
	}
	c := n.dial("u")
	c.send(map[string]any{"event": "first"})
	<-entered
	for i := 0; i < 100; i++ {
		c.send(map[string]any{"event": "slow"})
	}
	// One batch of 100 is read once the first is done; stop while it runs.
	waitFor(t, 5*time.Second, "the long batch running", func() bool { return ran.Load() > 0 })
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	if got := ran.Load(); got >= 100 {
		t.Fatalf("all %d slow events ran: shutdown did not stop at its deadline", got)
	}
}
