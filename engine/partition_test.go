package engine

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
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
		c := newConn(fds[0], &auth.Identity{UserID: user}, 0, time.Now())
		c.part = p
		p.add(c, nil, nil, false, "", nil)
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
	var unblock sync.Once
	n.e.hub.parts[0].jobs <- job{kind: jobCall, fn: func() { <-release }}
	defer unblock.Do(func() { close(release) })
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
	// The blocked partition's clients were held back, not closed: it was
	// the server that was behind. Once it catches up they are served.
	unblock.Do(func() { close(release) })
	for i, b := range bs {
		b.send(map[string]any{"event": "after", "ack": 1000 + i})
		for {
			m, err := b.event(10 * time.Second)
			if err != nil {
				t.Fatalf("blocked client %d after the partition caught up: %v", i, err)
			}
			if m["ack"] == float64(1000+i) {
				break
			}
		}
	}
}

// A slow consumer that stalls for longer than the write timeout and then
// reads again, within close_timeout, finds a valid stream: every frame
// complete, then 4008. close_timeout is raised from 10 to 20 s so that
// reading 4 MB under -race on a loaded machine fits in it.
func TestSlowConsumerResumingLateGetsACleanClose(t *testing.T) {
	n := startNode(t, func(c *Config) { c.Limits.CloseTimeout = 20 * time.Second })
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
