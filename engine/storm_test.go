package engine

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// With the seed's tell-everyone presence rule on, a connect storm is a
// frame to every connection per connect: the node stays up, clients that
// cannot keep up are closed as slow consumers (their queues are bounded),
// and webhooks keep flowing.
func TestTellEveryoneConnectStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("a connect storm")
	}
	pad := make([]byte, 256)
	for i := range pad {
		pad[i] = 'x'
	}
	n := startNode(t, func(c *Config) {
		c.Limits.OutboundQueueBytes = 16 << 10
		c.Limits.SendBufferBytes = 4096
		c.Limits.WriteTimeout = time.Second
	})
	n.router.route = func(ev *Event) []Command {
		if ev.Type != eventOnline {
			return nil
		}
		return []Command{{Op: OpEmit, Rule: "everyone", Event: "userOnline",
			Data: map[string]any{"userId": ev.Sender.UserID, "pad": string(pad)},
			To:   Target{All: true, Except: []string{ev.Sender.UserID}}}}
	}
	// Clients that never read, with a tiny receive buffer.
	const slow, fast = 40, 260
	for i := range slow {
		d := ws.Dialer{Timeout: 5 * time.Second, NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nd := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
				return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 2048) })
			}}
			return nd.DialContext(ctx, network, addr)
		}}
		conn, _, _, err := d.Dial(context.Background(), "ws://"+n.addr+"/ws?token="+userToken(t, fmt.Sprintf("slow-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
	}
	// Webhooks all through the storm.
	stop := make(chan struct{})
	var posted, refused atomic.Int64
	var hooks sync.WaitGroup
	hooks.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			status, _ := n.postWebhook(fmt.Sprintf("msg_storm_%d", i), time.Now(), []byte(`{"type":"booking.created","data":{}}`), nil)
			posted.Add(1)
			if status != http.StatusAccepted {
				refused.Add(1)
			}
		}
	})
	// The storm: readers connecting as fast as they can.
	var readers sync.WaitGroup
	var received atomic.Int64
	for g := range 4 {
		readers.Go(func() {
			for i := g; i < fast; i += 4 {
				c, err := dialWS("ws://"+n.addr+"/ws?token="+userToken(t, fmt.Sprintf("fast-%d", i)), nil)
				if err != nil {
					t.Errorf("storm dial %d: %v", i, err)
					return
				}
				t.Cleanup(func() { c.conn.Close() })
				go func() {
					cl := &client{t: t, conn: c.conn, br: c.br}
					for {
						if _, err := cl.next(3 * time.Second); err != nil {
							return
						}
						received.Add(1)
					}
				}()
			}
		})
	}
	readers.Wait()
	waitFor(t, 20*time.Second, "the slow clients closed as slow consumers", func() bool {
		return counterValue(n.e.metrics.slowConsumers) >= slow
	})
	close(stop)
	hooks.Wait()
	if posted.Load() == 0 || refused.Load() > 0 {
		t.Fatalf("webhooks during the storm: %d posted, %d not 202", posted.Load(), refused.Load())
	}
	if received.Load() == 0 {
		t.Fatal("the readers received nothing")
	}
	// Still serving: a new client gets a broadcast. It connects once the
	// storm's userOnline events are all published: on a loaded machine
	// (-race, CI) a client that came in the middle of them, with a 16 KiB
	// queue, would be the next slow consumer.
	waitFor(t, 20*time.Second, "every storm user online", func() bool {
		return counterValue(n.e.metrics.presence.WithLabelValues("online")) >= slow+fast
	})
	time.Sleep(300 * time.Millisecond) // the presence writer publishes after it counts
	c := n.dial("after")
	publish(t, n, "hello", "still up", Target{Users: []string{"after"}})
	for { // the storm's last userOnline events may come first
		m, err := c.event(10 * time.Second)
		if err != nil {
			t.Fatalf("a client after the storm: %v", err)
		}
		if m["event"] == "hello" {
			break
		}
	}
	t.Logf("%d webhooks answered 202 during the storm; %d frames to the readers; %v slow consumers closed",
		posted.Load(), received.Load(), counterValue(n.e.metrics.slowConsumers))
}
