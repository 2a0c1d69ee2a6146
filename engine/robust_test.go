package engine

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// An emit whose data cannot be encoded (+Inf has no JSON form) is a rule
// failure, counted and reported, not a silent loss behind a 202 that names
// the rule as matched.
func TestEmitThatCannotBeEncodedIsARuleError(t *testing.T) {
	n := startNode(t)
	n.router.route = func(ev *Event) []Command {
		if ev.Type != "calc" {
			return nil
		}
		return []Command{
			{Op: OpEmit, Rule: "bad-division", Event: "x", To: Target{All: true}, Data: map[string]any{"r": math.Inf(1)}},
			{Op: OpEmit, Rule: "fine", Event: "y", To: Target{Users: []string{"u1"}}, Data: map[string]any{"ok": true}},
		}
	}
	c := n.dial("u1")
	waitFor(t, 2*time.Second, "connection", func() bool { return n.e.Stats().Connections == 1 })
	status, resp := n.postWebhook("msg_inf", time.Now(), []byte(`{"type":"calc","data":{"a":1,"b":0}}`), nil)
	if status != http.StatusAccepted {
		t.Fatalf("webhook = %d %v", status, resp)
	}
	if fmt.Sprint(resp["matched"]) != "[fine]" || fmt.Sprint(resp["failed"]) != "[bad-division]" {
		t.Fatalf("answer = %v, want matched [fine] and failed [bad-division]", resp)
	}
	c.mustEvent("y")
	if got := scrape(t, n, `sidecar_rule_errors_total{kind="encode",rule="bad-division"}`); got != "1" {
		t.Fatalf("rule error counter = %q, want 1", got)
	}
}

// A rule that fails on every client event is counted every time but logged
// at most once per interval, not once per event.
func TestRuleErrorsAreCountedAndLoggedRateLimited(t *testing.T) {
	var logs lockedBuffer
	n := startNode(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
		c.Limits.ClientEventsPerSecond = 1000
	})
	n.router.fail = func(ev *Event) error {
		if ev.Type == "client.typing" {
			return testRuleError{rule: "typing", kind: "nil", msg: "user(): id is nil"}
		}
		return nil
	}
	c := n.dial("typist")
	for i := 0; i < 100; i++ {
		c.send(map[string]any{"event": "typing", "data": map[string]any{}, "ack": i})
		if m, err := c.event(5 * time.Second); err != nil || m["ok"] != true {
			t.Fatalf("ack %d = %v %v", i, m, err)
		}
	}
	if got := scrape(t, n, `sidecar_rule_errors_total{kind="nil",rule="typing"}`); got != "100" {
		t.Fatalf("rule error counter = %q, want 100", got)
	}
	if lines := strings.Count(logs.String(), "id is nil"); lines < 1 || lines > 2 {
		t.Fatalf("%d log lines for 100 failures, want 1 or 2:\n%s", lines, logs.String())
	}
}

// While one partition cannot make progress, connections owned by the
// others are still read, their rules run and their acks arrive; and the
// blocked partition's own connections are still read (their pings are not
// left in the kernel).
func TestSaturatedPartitionDoesNotStopOtherReads(t *testing.T) {
	n := startNode(t, func(c *Config) { c.Partitions = 2 })
	var blocked, free string
	for i := 0; blocked == "" || free == ""; i++ {
		u := fmt.Sprintf("user-%d", i)
		if n.e.hub.partFor(u).id == 0 {
			blocked = u
		} else {
			free = u
		}
	}
	var bs []*client
	for i := 0; i < 12; i++ {
		bs = append(bs, n.dial(blocked))
	}
	f := n.dial(free)
	waitFor(t, 2*time.Second, "13 connections", func() bool { return n.e.Stats().Connections == 13 })
	release := make(chan struct{})
	n.e.hub.parts[0].jobs <- job{kind: jobCall, fn: func() { <-release }}
	defer close(release)
	// Flood the blocked partition's conn with pings: each wants a pong from
	// its owner, which is stuck.
	ping := ws.MustCompileFrame(ws.MaskFrame(ws.NewPingFrame([]byte("p"))))
	for _, b := range bs {
		go func() {
			for i := 0; i < 20000; i++ {
				if _, err := b.conn.Write(ping); err != nil {
					return
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	for i := 0; i < 5; i++ {
		f.send(map[string]any{"event": "hello", "ack": i})
		if m, err := f.event(3 * time.Second); err != nil || m["ok"] != true {
			t.Fatalf("ack %d on the free partition = %v %v", i, m, err)
		}
	}
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

// A client pacing itself under the rate limit is not closed 4029 because
// the server fell behind and then read its queued events all at once.
func TestServerStallDoesNotCountAgainstTheRateLimit(t *testing.T) {
	n := startNode(t, func(c *Config) { c.Limits.ClientEventsPerSecond = 50 })
	var once sync.Once
	n.router.route = func(ev *Event) []Command {
		if ev.Type == "client.tick" {
			once.Do(func() { time.Sleep(3 * time.Second) }) // the server is slow once
		}
		return nil
	}
	c := n.dial("pacer")
	go func() {
		t := time.NewTicker(25 * time.Millisecond) // 40 a second
		defer t.Stop()
		for i := 0; i < 200; i++ {
			<-t.C
			b := []byte(fmt.Sprintf(`{"event":"tick","ack":%d}`, i))
			if wsutil.WriteClientMessage(c.conn, ws.OpText, b) != nil {
				return
			}
		}
	}()
	for i := 0; i < 200; i++ {
		m, err := c.event(10 * time.Second)
		if err != nil || m["ok"] != true {
			t.Fatalf("ack %d = %v %v", i, m, err)
		}
	}
}

// A slow consumer that stalls for longer than the write timeout and then
// reads again finds a valid stream: every frame complete, then 4008.
func TestSlowConsumerResumingLateGetsACleanClose(t *testing.T) {
	n := startNode(t)
	raw, err := net.Dial("tcp", n.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, _, err := (ws.Dialer{}).Upgrade(raw, mustURL("ws://"+n.addr+"/ws?token="+userToken(t, "sleepy"))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "connection", func() bool { return n.e.Stats().Connections == 1 })
	pad := strings.Repeat("x", 1000)
	for i := 0; i < 5000; i++ {
		n.e.Publish("bulk", map[string]any{"i": i, "pad": pad}, Target{Users: []string{"sleepy"}}, false)
	}
	waitFor(t, 5*time.Second, "slow consumer closed", func() bool { return n.e.Stats().SlowConsumers == 1 })
	time.Sleep(7 * time.Second) // longer than the write timeout (5 s)
	raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(raw)
	for frames := 0; ; frames++ {
		h, err := ws.ReadHeader(br)
		if err != nil {
			t.Fatalf("after %d frames: %v, want a close frame", frames, err)
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(br, p); err != nil {
			t.Fatalf("frame %d truncated: %v", frames, err)
		}
		if h.OpCode == ws.OpClose {
			if code, _ := ws.ParseCloseFrameData(p); code != CloseSlowConsumer {
				t.Fatalf("close code %d, want 4008", code)
			}
			return
		}
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

// scrape returns the value of one sample line of /metrics, or "".
func scrape(t *testing.T, n *node, series string) string {
	t.Helper()
	resp, err := http.Get("http://" + n.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// testRuleError is a rule failure as the engine sees it through Router.
type testRuleError struct{ rule, kind, msg string }

func (e testRuleError) Error() string    { return fmt.Sprintf("rule %q: %s", e.rule, e.msg) }
func (e testRuleError) RuleName() string { return e.rule }
func (e testRuleError) Kind() string     { return e.kind }

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
