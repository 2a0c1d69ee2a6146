package engine

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"golang.org/x/sys/unix"
)

// A read turn still held by a rule when Serve stops the read workers must
// not be handed back to them through the closed ready queue. The drain
// deadline passes while a rule holds the turn; the client has a long
// backlog queued, so the turn, once released, would be read again. Found
// by reading Serve's sequence against requeue.
func TestShutdownWithReaderMidTurn(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	n := startNode(t, func(c *Config) { c.DrainTimeout = 200 * time.Millisecond })
	n.router.route = func(ev *Event) []Command {
		if ev.Type == "client.block" {
			close(entered)
			<-release
		}
		return nil
	}
	c := n.rawConn("u")
	waitFor(t, 2*time.Second, "conn registered", func() bool { return n.e.openFDs.Load() == 1 })
	var sc *conn
	n.e.fds.mu.RLock()
	for _, x := range n.e.fds.conns {
		if x != nil {
			sc = x
		}
	}
	n.e.fds.mu.RUnlock()
	// Enlarge the server side's receive buffer so the backlog is long, and
	// let the handshake's own read turn end, so that a worker reads next.
	unix.SetsockoptInt(sc.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	waitFor(t, 2*time.Second, "handshake turn over", func() bool { return sc.sched.Load() == schedIdle })
	c.send(map[string]any{"event": "block"})
	<-entered
	pong := ws.MustCompileFrame(ws.MaskFrameWith(ws.NewPongFrame(make([]byte, 125)), [4]byte{1, 2, 3, 4}))
	go func() {
		var burst []byte
		for len(burst) < 64<<10 {
			burst = append(burst, pong...)
		}
		for i := 0; i < 64; i++ { // 4 MiB, until the server is gone
			if _, err := c.conn.Write(burst); err != nil {
				return
			}
		}
	}()
	n.cancel()
	// Release the rule once Serve has stopped the read workers.
	waitFor(t, 10*time.Second, "read workers stopping", func() bool {
		n.e.ready.mu.Lock()
		defer n.e.ready.mu.Unlock()
		return n.e.ready.closed
	})
	close(release)
	select {
	case err := <-n.done:
		close(n.done) // for n.stop in the cleanup
		if err != nil {
			t.Fatalf("Serve = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
}

// A client that sends its last message and its FIN in one segment raises
// one edge: the worker's short read returns the message, and the EOF behind
// it must still be read, or the conn stays open (and its user online) until
// the idle timeout. Found by reading drain's short-read shortcut against
// edge-triggered epoll.
func TestFINBehindDataIsSeen(t *testing.T) {
	n := startNode(t)
	c := n.rawConn("u")
	waitFor(t, 2*time.Second, "1 connection", func() bool { return n.e.Stats().Connections == 1 })
	tc := c.conn.(*net.TCPConn)
	raw, err := tc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	// Cork the socket so that the FIN rides on the data segment.
	raw.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, 1) })
	msg := ws.MustCompileFrame(ws.MaskFrameWith(ws.NewTextFrame([]byte(`{"event":"bye"}`)), [4]byte{1, 2, 3, 4}))
	if _, err := tc.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := tc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the conn closed after the peer's FIN", func() bool {
		return n.e.Stats().Connections == 0 && n.e.openFDs.Load() == 0
	})
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

// Rules that are slow for some connections' events hold up those
// connections, not everyone: with more slow connections than rule workers,
// another connection's event, sent after all the slow ones, is acked while
// nearly all the slow work is still to do (each slow batch goes to the
// back of the queue after a time slice).
func TestSlowRulesDelayOnlyTheirOwnConnections(t *testing.T) {
	n := startNode(t, func(c *Config) {
		c.Limits.ClientEventsPerSecond = 0
		c.Limits.RuleWorkers = 2
	})
	n.router.forget = true
	n.router.route = func(ev *Event) []Command {
		if ev.Type == "client.heavy" {
			time.Sleep(50 * time.Millisecond) // a rule at the edge of its time budget
		}
		return nil
	}
	const slowConns, events = 6, 16
	var acked atomic.Int64
	var slows []*client
	for i := 0; i < slowConns; i++ {
		c := n.dial(fmt.Sprintf("slow-%d", i))
		slows = append(slows, c)
		for k := 0; k < events; k++ {
			c.send(map[string]any{"event": "heavy", "ack": k})
		}
	}
	var wg sync.WaitGroup
	for _, c := range slows {
		wg.Go(func() {
			for k := 0; k < events; k++ {
				if m, err := c.event(20 * time.Second); err != nil || m["ok"] != true {
					return
				}
				acked.Add(1)
			}
		})
	}
	time.Sleep(50 * time.Millisecond) // the heavy events are in
	quick := n.dial("quick")
	quick.send(map[string]any{"event": "light", "ack": 1})
	if m, err := quick.event(10 * time.Second); err != nil || m["ok"] != true {
		t.Fatalf("quick ack = %v %v", m, err)
	}
	// A worker gives up a slow batch after one event here: the quick event
	// waits for a few, not for whole batches (without the time slice,
	// about 28 of the 96 were done first).
	if done := acked.Load(); done > 2*slowConns {
		t.Errorf("%d of %d slow events were done before the quick connection's ack", done, slowConns*events)
	}
	wg.Wait()
}
