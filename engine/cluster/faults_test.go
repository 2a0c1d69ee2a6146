package cluster

// Faults found by an outside review of the broker (2026-12-01), each a
// scenario that went wrong and now must not. The comment of each says what
// used to happen.

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sidecar/sidecar/engine"
	"github.com/sidecar/sidecar/engine/store"
	"github.com/sidecar/sidecar/internal/redistest"
)

func applyOK(t *testing.T, n *testNode, user string, online bool) bool {
	t.Helper()
	ch, err := n.Apply([]store.SessionChange{{User: user, Online: online, At: time.Now()}})
	if err != nil {
		t.Fatalf("Apply %s %v: %v", user, online, err)
	}
	return ch[0]
}

// A Redis that restarts empty (--save "", or a failover to an empty
// replica): reestablish re-joins every user and, each join going from an
// empty set, tells the rules "online" again for users who never went
// offline.
func TestRedisRestartTellsNobodyOnlineAgain(t *testing.T) {
	r := redistest.Start(t)
	a := startNode(t, r.URL(), "a", Options{})
	if !applyOK(t, a, "alice", true) {
		t.Fatal("alice not online")
	}
	r.Kill()
	eventually(t, "a sees redis down", func() bool { return !a.up.Load() })
	r.Restart()
	eventually(t, "a reestablished", func() bool { s, _ := r.Do("SISMEMBER", "sidecar:pu:alice", "a"); return s == "1" })
	time.Sleep(300 * time.Millisecond)
	if got := a.teller.list(); slices.Contains(got, "alice true") {
		t.Errorf("alice, online the whole time, told online again after a Redis restart: teller=%q", got)
	}
}

// Redis paused (data kept): a user who leaves during the outage is told
// offline by the node alone (engine tell(): Apply failed), then again by
// reestablish when Redis is back.
func TestOfflineDuringOutageToldOnce(t *testing.T) {
	r := redistest.Start(t)
	a := startNode(t, r.URL(), "a", Options{})
	applyOK(t, a, "alice", true)
	r.Pause()
	eventually(t, "a sees redis down", func() bool { return !a.up.Load() })
	if _, err := a.Apply([]store.SessionChange{{User: "alice", At: time.Now()}}); err == nil {
		t.Fatal("Apply succeeded with Redis paused")
	}
	// The engine's tell() has now run presence.offline for alice through the rules, alone.
	r.Resume()
	eventually(t, "a reestablished", func() bool { return a.up.Load() && !a.resync.Load() })
	time.Sleep(300 * time.Millisecond)
	if got := a.teller.list(); slices.Contains(got, "alice false") {
		t.Errorf("alice told offline twice (alone during the outage, then by reestablish): teller=%q", got)
	}
}

// A node whose heartbeat expired while it was alive (process paused: GC,
// VM stall, SIGSTOP of the sidecar process) is swept by another; when it
// runs again nothing tells it, so its users stay offline in the cluster
// while connected to it.
func TestNodeSweptWhileAliveRejoins(t *testing.T) {
	r := redistest.Start(t)
	a := startNode(t, r.URL(), "a", Options{})
	b := startNode(t, r.URL(), "b", Options{})
	applyOK(t, b, "carol", true)
	time.Sleep(700 * time.Millisecond) // past sweepAfter
	// b's heartbeat key expires as it would if b's process were stopped for > node_timeout.
	r.Do("DEL", "sidecar:node:b")
	eventually(t, "a sweeps b", func() bool { return slices.Contains(a.teller.list(), "carol false") })
	time.Sleep(2 * time.Second) // b heartbeats again many times
	on, _ := a.Online([]string{"carol"})
	if !on["carol"] {
		s, _ := r.Do("SMEMBERS", "sidecar:pu:carol")
		t.Errorf("carol, connected to b (alive, heartbeating), is offline cluster-wide for good: pu:carol=%q resync=%v", s, b.resync.Load())
	}
}

// endNode runs in the monitor goroutine, with one sequential HSET round
// trip per offline user and a 30*Timeout context: a big dead node blocks
// the sweeper's heartbeat past node_timeout, and the others sweep the
// live sweeper.
func TestLongSweepKeepsHeartbeating(t *testing.T) {
	r := redistest.Start(t)
	a := startNode(t, r.URL(), "a", Options{})
	b := startNode(t, r.URL(), "b", Options{})
	c := startNode(t, r.URL(), "c", Options{})
	applyOK(t, a, "alice", true)
	applyOK(t, c, "zoe", true)
	const users = 30000
	for i := 0; i < users; i += 1000 {
		var chs []store.SessionChange
		for j := i; j < i+1000; j++ {
			chs = append(chs, store.SessionChange{User: fmt.Sprint("u", j), Online: true})
		}
		if _, err := b.Apply(chs); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(700 * time.Millisecond)
	t0 := time.Now()
	b.stop()
	eventually(t, "b's users offline", func() bool {
		n := 0
		for _, x := range []*testNode{a, c} {
			for _, s := range x.teller.list() {
				if strings.HasPrefix(s, "u") {
					n++
				}
			}
		}
		return n >= users
	})
	t.Logf("b's %d users ended in %v", users, time.Since(t0))
	time.Sleep(time.Second)
	all := append(a.teller.list(), c.teller.list()...)
	if slices.Contains(all, "alice false") || slices.Contains(all, "zoe false") {
		t.Errorf("a live node was swept while it was sweeping b: alice false=%v zoe false=%v",
			slices.Contains(all, "alice false"), slices.Contains(all, "zoe false"))
	}
}

// A webhook id the node's own store has seen is a duplicate on this node,
// whatever Redis says (store.go doc); but a Redis without the key (it was
// down at the first delivery, or restarted empty) makes MarkSeen say first.
func TestMarkSeenLocalDuplicateStands(t *testing.T) {
	r := redistest.Start(t)
	a := startNode(t, r.URL(), "a", Options{})
	sa := a.Store(newMemStore())
	r.Kill()
	eventually(t, "a sees redis down", func() bool { return !a.up.Load() })
	if first, _ := sa.MarkSeen("wh:1", time.Minute); !first {
		t.Fatal("first delivery not first")
	}
	r.Restart()
	eventually(t, "a up", func() bool { return a.up.Load() })
	if first, _ := sa.MarkSeen("wh:1", time.Minute); first {
		t.Error("the retry of wh:1 to the same node is processed again (local store knew it; Redis did not)")
	}
}

// reestablish takes a snapshot of here, then applies it batch by batch
// while the presence writer's Apply runs concurrently (resync is already
// false): a user who leaves meanwhile is re-joined from the stale
// snapshot: a ghost in Redis, told online through the rules.
func TestReestablishOrderedWithApply(t *testing.T) {
	r := redistest.Start(t)
	a := startNode(t, r.URL(), "a", Options{Logger: slog.New(slog.NewTextHandler(tw{t}, nil))})
	const users = 100000
	for i := 0; i < users; i += 1000 {
		var chs []store.SessionChange
		for j := i; j < i+1000; j++ {
			chs = append(chs, store.SessionChange{User: fmt.Sprint("u", j), Online: true})
		}
		if _, err := a.Apply(chs); err != nil {
			t.Fatal(err)
		}
	}
	a.resync.Store(true) // what any outage does (setUp(false))
	for a.resync.Load() {
	}
	t0 := time.Now()
	time.Sleep(30 * time.Millisecond)
	// reestablish has started: the presence writer now applies leaves.
	var leave []store.SessionChange
	for j := 0; j < 300; j++ {
		leave = append(leave, store.SessionChange{User: fmt.Sprint("u", j*300), At: time.Now()})
	}
	if _, err := a.Apply(leave); err != nil {
		t.Fatal(err)
	}
	t.Logf("leaves applied %v after reestablish started (%s)", time.Since(t0), time.Now().Format("15:04:05.000"))
	time.Sleep(2 * time.Second)
	ghosts := 0
	for _, ch := range leave {
		if s, _ := r.Do("SISMEMBER", "sidecar:pu:"+ch.User, "a"); s == "1" {
			ghosts++
		}
	}
	told := 0
	tl := a.teller.list()
	for _, s := range tl {
		if strings.HasSuffix(s, " true") {
			told++
		}
	}
	t.Logf("teller for u0: %v; total told online %d, total told %d", slices.DeleteFunc(slices.Clone(tl), func(s string) bool { return !strings.HasPrefix(s, "u0 ") }), told, len(tl))
	if told > 0 {
		t.Errorf("%d users who left during reestablish were told online then offline again (a flap, after the engine already told them offline)", told)
	}
	if ghosts > 0 {
		t.Errorf("%d of %d users who left are members of their pu set again (ghosts), %d told online by reestablish", ghosts, len(leave), told)
	}
}

// Shutdown with Redis paused: Run waits for runSubscriber, whose release()
// makes rueidis send UNSUBSCRIBE with context.Background on the dedicated
// wire; that only ends when rueidis's background ping gives up, after
// Dialer.KeepAlive (30 s here) + ConnWriteTimeout.
func TestShutdownBoundedWithRedisPaused(t *testing.T) {
	r := redistest.Start(t)
	a := startNode(t, r.URL(), "a", Options{})
	a.broker.(engine.UserRouter).Here("alice", true)
	waitSubscribed(t, r, a, "alice")
	r.Pause()
	t0 := time.Now()
	a.stop()
	d := time.Since(t0)
	r.Resume()
	if d > 5*time.Second {
		t.Errorf("Run took %v to return with Redis paused (every Redis call should be bounded by ~Timeout)", d.Round(time.Millisecond))
	} else {
		t.Logf("Run returned in %v", d)
	}
}

// In a Redis Cluster, when the channels' slot moves (resharding, or a
// manual failover), Redis sends sunsubscribe; rueidis ignores it (pipe.go,
// "Redis will send sunsubscribe notification proactively in the event of
// slot migration. We should ignore them") and the connection stays open:
// lost never fires and the node stops receiving forever.
func TestClusterSlotMoveResubscribes(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	a := startNode(t, cl.URL(), "a", Options{})
	b := startNode(t, cl.URL(), "b", Options{})
	ctx := context.Background()
	eventually(t, "first broadcast", func() bool {
		a.broker.Publish(ctx, &engine.Message{Event: "x", Data: []byte(`1`), To: engine.Target{All: true}}, false)
		time.Sleep(50 * time.Millisecond)
		return len(b.hub.events()) > 0
	})
	slot, _ := cl.Do("CLUSTER", "KEYSLOT", "{sidecar}:b")
	slot = strings.TrimSpace(slot)
	// owner and another node
	var src, dst *redistest.Server
	for _, n := range cl.Nodes() {
		if out, _ := n.Do("CLUSTER", "COUNTKEYSINSLOT", slot); out != "" {
		}
		nodes, _ := n.Do("CLUSTER", "MYID")
		_ = nodes
	}
	ids := map[*redistest.Server]string{}
	for _, n := range cl.Nodes() {
		id, _ := n.Do("CLUSTER", "MYID")
		ids[n] = strings.TrimSpace(id)
	}
	for _, n := range cl.Nodes() {
		// SPUBLISH answers on the owner, MOVED elsewhere
		if _, err := n.Do("SPUBLISH", "{sidecar}:b", "probe"); err == nil {
			src = n
		}
	}
	for _, n := range cl.Nodes() {
		if n != src {
			dst = n
			break
		}
	}
	if src == nil {
		t.Fatal("no owner found")
	}
	must := func(n *redistest.Server, args ...string) {
		if out, err := n.Do(args...); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	must(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[src])
	must(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[dst])
	for _, n := range cl.Nodes() {
		must(n, "CLUSTER", "SETSLOT", slot, "NODE", ids[dst])
	}
	out, _ := dst.Do("PUBSUB", "SHARDNUMSUB", "{sidecar}:b")
	t.Logf("after the move: SHARDNUMSUB on the new owner: %q", out)
	before := len(b.hub.events())
	deadline := time.Now().Add(40 * time.Second)
	for time.Now().Before(deadline) && len(b.hub.events()) == before {
		a.broker.Publish(ctx, &engine.Message{Event: "y", Data: []byte(`2`), To: engine.Target{All: true}}, false)
		time.Sleep(100 * time.Millisecond)
	}
	if len(b.hub.events()) == before {
		out, _ := dst.Do("PUBSUB", "SHARDNUMSUB", "{sidecar}:b")
		t.Errorf("40 s after the slot moved, b receives nothing (b up=%v); SHARDNUMSUB on new owner %q", b.up.Load(), out)
	}
}

type tw struct{ t *testing.T }

func (w tw) Write(p []byte) (int, error) {
	w.t.Logf("%s %s", time.Now().Format("15:04:05.000"), p)
	return len(p), nil
}

func TestNoGoroutineGrowthOnRedisRestarts(t *testing.T) {
	r := redistest.Start(t)
	a := startNode(t, r.URL(), "a", Options{})
	for i := range 100 {
		a.broker.(engine.UserRouter).Here(fmt.Sprint("u", i), true)
	}
	waitSubscribed(t, r, a, "u99")
	time.Sleep(time.Second)
	g0 := runtime.NumGoroutine()
	for range 6 {
		r.Kill()
		time.Sleep(300 * time.Millisecond)
		r.Restart()
		waitSubscribed(t, r, a, "u99")
		eventually(t, "up", func() bool { return a.up.Load() && !a.resync.Load() })
	}
	time.Sleep(2 * time.Second)
	if g := runtime.NumGoroutine(); g > g0+2 {
		t.Errorf("goroutines %d -> %d after six Redis restarts", g0, g)
	}
	a.subMu.Lock()
	want, pending := len(a.users), len(a.pendingUsers)
	a.subMu.Unlock()
	if want != 100 || pending != 0 {
		t.Errorf("subscriptions wanted %d, pending %d; want 100 and 0", want, pending)
	}
}
