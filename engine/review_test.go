package engine

import (
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
	e := &Engine{limits: Limits{OutboundQueueBytes: queue, WriteTimeout: time.Second}}
	e.metrics = newMetrics(e)
	e.life.init()
	p := newPartition(e, 0, 16)
	e.parts = []*partition{p}
	newConnFor := func(user string) *conn {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
		c := newConn(fds[0], e.nextConn.Add(1), &auth.Identity{UserID: user}, time.Now())
		c.part = p
		p.add(c)
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
			frame := serverFrame(ws.OpText, make([]byte, 100))
			n := p.deliver(&delivery{frame: frame, to: tc.to})
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
