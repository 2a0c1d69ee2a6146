package engine

import (
	"fmt"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// usage is what a leak would grow: the live heap after a full collection,
// goroutines and open descriptors.
type usage struct {
	heapObjects, heapBytes uint64
	goroutines, fds        int
}

func measure(t *testing.T) usage {
	t.Helper()
	http.DefaultClient.CloseIdleConnections()
	runtime.GC()
	runtime.GC() // the second collects what the first's finalizers freed
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return usage{ms.HeapObjects, ms.HeapAlloc, runtime.NumGoroutine(), openFDCount(t)}
}

// quiet measures once the goroutine count has held still for longer than
// buntdb's one-second background tick: the store of the test that ran
// before lets its goroutine go only at that tick, and a baseline taken
// earlier counts a goroutine that is already on its way out.
func quiet(t *testing.T) usage {
	t.Helper()
	u, since := measure(t), time.Now()
	deadline := since.Add(5 * time.Second)
	for time.Since(since) < 1200*time.Millisecond && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		if v := measure(t); v.goroutines != u.goroutines {
			u, since = v, time.Now()
		}
	}
	return measure(t)
}

// settle waits until goroutines and descriptors are back to base (closes
// finish asynchronously), then measures.
func settle(t *testing.T, base usage) usage {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		u := measure(t)
		if (u.goroutines <= base.goroutines && u.fds <= base.fds) || time.Now().After(deadline) {
			return u
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// heapMargin is how much the live heap may differ from its baseline after
// a soak: maps and pools keep some of what they grew to (Go maps do not
// shrink), but a leak of one small object per connection would pass it.
const (
	heapMarginBytes   = 512 << 10
	heapMarginObjects = 1000
)

func checkBaseline(t *testing.T, what string, base, after usage, cycles int) {
	t.Helper()
	t.Logf("%s: heap %d → %d bytes (%+d), %d → %d objects, goroutines %d → %d, fds %d → %d",
		what, base.heapBytes, after.heapBytes, int64(after.heapBytes)-int64(base.heapBytes),
		base.heapObjects, after.heapObjects, base.goroutines, after.goroutines, base.fds, after.fds)
	// Other tests' goroutines may still be ending in this shared process,
	// so fewer than the baseline is no leak; the binary's soak
	// (cmd/sidecar TestSoak) checks for exact equality.
	if after.goroutines > base.goroutines {
		buf := make([]byte, 1<<20)
		t.Errorf("%s: %d goroutines, baseline %d\n%s", what, after.goroutines, base.goroutines, buf[:runtime.Stack(buf, true)])
	}
	if after.fds > base.fds {
		t.Errorf("%s: %d open descriptors, baseline %d", what, after.fds, base.fds)
	}
	if after.heapBytes > base.heapBytes+heapMarginBytes || after.heapObjects > base.heapObjects+heapMarginObjects {
		t.Errorf("%s: live heap %d bytes in %d objects after %d cycles; baseline %d bytes in %d objects (margin %d bytes, %d objects)",
			what, after.heapBytes, after.heapObjects, cycles, base.heapBytes, base.heapObjects, heapMarginBytes, heapMarginObjects)
	}
}

// After thousands of connect/disconnect cycles (closes by the client, by
// the peer vanishing, by the server), the node is back where it started:
// goroutines and descriptors exactly, the live heap within a small margin.
func TestConnectCyclesReturnToBaseline(t *testing.T) {
	const cycles = 10000
	n := startNode(t, func(c *Config) { c.Limits.ClientEventsPerSecond = 0 })
	n.router.forget = true
	n.router.route = func(ev *Event) []Command {
		if ev.Type == "connection.open" {
			return []Command{{Op: OpJoin, Rule: "rooms", Rooms: []string{"room-" + ev.Sender.UserID[len(ev.Sender.UserID)-1:]}}}
		}
		return nil
	}
	warm := func(k int) {
		for i := 0; i < k; i++ {
			d, err := dialWS("ws://"+n.addr+"/ws?token="+userToken(t, fmt.Sprintf("c%d", i%50)), nil)
			if err != nil {
				t.Fatalf("cycle %d: %v", i, err)
			}
			switch i % 3 {
			case 0: // a clean close
				wsutil.WriteClientMessage(d.conn, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
			case 1: // an event, then the peer vanishes
				wsutil.WriteClientMessage(d.conn, ws.OpText, []byte(`{"event":"hello","data":{},"ack":1}`))
			}
			d.conn.Close()
		}
		waitFor(t, 10*time.Second, "every conn gone", func() bool {
			return n.e.Stats().Connections == 0 && n.e.openFDs.Load() == 0 && n.e.slots.Load() == 0
		})
	}
	warm(300) // pools, maps and the runtime reach their working size
	base := quiet(t)
	warm(cycles)
	checkBaseline(t, fmt.Sprintf("%d connect cycles", cycles), base, settle(t, base), cycles)
}
