package engine

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/sidecar/sidecar/engine/auth"
)

// socketPart is a partition not run by a goroutine, with conns on socket
// pairs whose peers the test holds.
func socketPart(t *testing.T, queue int) (*partition, func(user string) *conn) {
	t.Helper()
	e := bareEngine(Limits{OutboundQueueBytes: queue, WriteTimeout: time.Second, CloseTimeout: time.Second})
	p := newPartition(e, 0, 16)
	e.hub.parts = []*partition{p}
	newConnFor := func(user string) *conn {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
		c := newConn(fds[0], e.nextConn.Add(1), &auth.Identity{UserID: user}, 0, time.Now())
		c.part = p
		p.add(c, nil, nil)
		return c
	}
	return p, newConnFor
}

// A slow consumer closed while deliver walks a user's or a room's list is
// swapped out of that list: the walk must neither skip the conn moved into
// its slot nor reach the nil left at the end. Found by reading deliver
// against unindex/removeConn.
func TestDeliverSurvivesSlowConsumerClosedMidList(t *testing.T) {
	for _, tc := range []struct {
		name string
		to   Target
	}{
		{"user", Target{Users: []string{"u"}}},
		{"room", Target{Rooms: []string{"r"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, connFor := socketPart(t, 1024)
			cs := []*conn{connFor("u"), connFor("u"), connFor("u")}
			for _, c := range cs {
				p.join(c, []string{"r"})
			}
			// The first in the lists has a backlog near the cap.
			p.enqueue(cs[0], make([]byte, 1000))
			n := p.deliver(testDelivery(p.e, tc.to))
			if n != 2 {
				t.Errorf("deliver reached %d conns, want 2", n)
			}
			if !cs[0].closed {
				t.Errorf("slow consumer not closed")
			}
			for i, c := range cs[1:] {
				if len(c.out) != 1 {
					t.Errorf("conn %d has %d frames queued, want 1", i+1, len(c.out))
				}
			}
		})
	}
}

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

// RELIABILITY.md (docs/) B.17: request headers over 16 KiB get 431. net/http lets
// MaxHeaderBytes + 4096 through, so 17 KiB of headers used to be upgraded.
func TestHeadersOver16KiBAre431(t *testing.T) {
	n := startNode(t)
	for _, size := range []int{17 << 10, 19 << 10} {
		conn, err := net.Dial("tcp", n.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		req := "GET /ws?token=" + userToken(t, "u") + " HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", size) +
			"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
		if _, err := conn.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("%d bytes of headers: status %d, want 431", size, resp.StatusCode)
		}
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
