package cluster

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sidecar/sidecar/engine"
	"github.com/sidecar/sidecar/engine/store"
	"github.com/sidecar/sidecar/internal/redistest"
)

// fakeHub records what a node delivers to its hub.
type fakeHub struct {
	mu    sync.Mutex
	msgs  []engine.Message
	rooms []string
}

func (h *fakeHub) Deliver(m *engine.Message, wait bool) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if m.ID == "" && !m.Remote {
		m.ID = fmt.Sprintf("%d-%d", time.Now().UnixMilli(), len(h.msgs))
	}
	h.msgs = append(h.msgs, *m)
	return 1, nil
}

func (h *fakeHub) Rooms(user string, leave bool, rooms []string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rooms = append(h.rooms, fmt.Sprintf("%s %v %v", user, leave, rooms))
	return nil
}

func (h *fakeHub) events() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, m := range h.msgs {
		out = append(out, fmt.Sprintf("%s %s remote=%v to=%v", m.Event, m.Data, m.Remote, m.To.Users))
	}
	return out
}

// fakeTeller records what the cluster decided.
type fakeTeller struct {
	mu    sync.Mutex
	told  []string
	order sync.Mutex
}

func (t *fakeTeller) TellPresence(user string, online bool, _ time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.told = append(t.told, fmt.Sprintf("%s %v", user, online))
}

func (t *fakeTeller) Counts() (int64, int64) { return 2, 1 }

// InPresenceOrder runs fn at once, one at a time, as the presence writer does.
func (t *fakeTeller) InPresenceOrder(fn func()) bool {
	t.order.Lock()
	defer t.order.Unlock()
	fn()
	return true
}

func (t *fakeTeller) list() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.told)
}

type testNode struct {
	*Node
	hub    *fakeHub
	teller *fakeTeller
	broker engine.Broker
	stop   func()
}

// Apply runs n's Apply as the engine does: on the presence writer, which
// the fake teller's order stands for.
func (tn *testNode) Apply(changes []store.SessionChange) (changed []bool, err error) {
	tn.teller.InPresenceOrder(func() { changed, err = tn.Node.Apply(changes) })
	return changed, err
}

// startNode runs a node on url until the test ends (or stop).
func startNode(t *testing.T, url, id string, opt Options) *testNode {
	t.Helper()
	opt.URL, opt.NodeID = url, id
	if opt.Heartbeat == 0 {
		opt.Heartbeat, opt.NodeTimeout = 200*time.Millisecond, 600*time.Millisecond
	}
	n, err := New(opt)
	if err != nil {
		t.Fatal(err)
	}
	tn := &testNode{Node: n, hub: &fakeHub{}, teller: &fakeTeller{}}
	tn.broker, _ = n.Broker(tn.hub)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx, tn.teller, 0) }()
	var once sync.Once
	tn.stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(tn.stop)
	return tn
}

func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// subscribed waits until a user's channel has a subscriber on node n.
func waitSubscribed(t *testing.T, r *redistest.Server, n *testNode, user string) {
	t.Helper()
	eventually(t, "subscription of "+user, func() bool {
		out, _ := r.Do("PUBSUB", "SHARDNUMSUB", n.chUser+user)
		return len(out) > 0 && out[len(out)-1] != '0'
	})
}

func TestCrossNodeDeliveryOnceNoEcho(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(), goleak.IgnoreAnyFunction("github.com/sidecar/sidecar/internal/redistest.(*Server).start.func1"))
	r := redistest.Start(t)
	a := startNode(t, r.URL(), "a", Options{})
	b := startNode(t, r.URL(), "b", Options{})
	c := startNode(t, r.URL(), "c", Options{})
	b.broker.(engine.UserRouter).Here("alice", true)
	c.broker.(engine.UserRouter).Here("bob", true)
	a.broker.(engine.UserRouter).Here("alice", true) // alice on a too: no echo
	waitSubscribed(t, r, b, "alice")
	waitSubscribed(t, r, c, "bob")
	waitSubscribed(t, r, a, "alice")

	ctx := context.Background()
	a.broker.Publish(ctx, &engine.Message{Event: "n", Data: []byte(`1`), To: engine.Target{Users: []string{"alice", "bob", "alice"}}}, false)
	a.broker.Publish(ctx, &engine.Message{Event: "all", Data: []byte(`2`), To: engine.Target{All: true}}, false)
	a.broker.Rooms(ctx, "bob", false, []string{"r1"})
	eventually(t, "deliveries", func() bool { return len(b.hub.events()) == 2 && len(c.hub.events()) == 2 })
	time.Sleep(200 * time.Millisecond) // a duplicate or an echo would have come by now
	if got, want := b.hub.events(), []string{"n 1 remote=true to=[alice]", "all 2 remote=true to=[]"}; !slices.Equal(got, want) {
		t.Errorf("b got %q, want %q", got, want)
	}
	if got, want := c.hub.events(), []string{"n 1 remote=true to=[bob]", "all 2 remote=true to=[]"}; !slices.Equal(got, want) {
		t.Errorf("c got %q, want %q", got, want)
	}
	if got := a.hub.events(); len(got) != 2 || got[0] != "n 1 remote=false to=[alice bob alice]" {
		t.Errorf("a (the publisher) got %q: its own copies, once, not echoed", got)
	}
	eventually(t, "room change on c", func() bool { c.hub.mu.Lock(); defer c.hub.mu.Unlock(); return len(c.hub.rooms) == 1 })
	b.hub.mu.Lock()
	if len(b.hub.rooms) != 0 {
		t.Errorf("b got a room change of bob, whom it does not hold: %q", b.hub.rooms)
	}
	b.hub.mu.Unlock()

	// Nine users or more go on the broadcast channel, and each node still
	// delivers its copy once.
	many := []string{"u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "alice"}
	a.broker.Publish(ctx, &engine.Message{Event: "many", Data: []byte(`3`), To: engine.Target{Users: many}}, false)
	eventually(t, "the broadcast of many", func() bool { return len(b.hub.events()) == 3 })
	if got := b.hub.events()[2]; got != "many 3 remote=true to=[u1 u2 u3 u4 u5 u6 u7 u8 alice]" {
		t.Errorf("b got %q", got)
	}

	// bob leaves c: c unsubscribes, and gets no more of his.
	c.broker.(engine.UserRouter).Here("bob", false)
	eventually(t, "bob's channel unsubscribed", func() bool {
		out, _ := r.Do("PUBSUB", "SHARDNUMSUB", c.chUser+"bob")
		return len(out) > 0 && out[len(out)-1] == '0'
	})
	a.broker.Publish(ctx, &engine.Message{Event: "late", Data: []byte(`4`), To: engine.Target{Users: []string{"bob"}}}, false)
	time.Sleep(200 * time.Millisecond)
	if n := len(c.hub.events()); n != 3 {
		t.Errorf("c has %d events, want 3 (nothing for bob after he left)", n)
	}
	a.stop()
	b.stop()
	c.stop()
}

func TestPresenceAcrossNodes(t *testing.T) {
	r := redistest.Start(t)
	a := startNode(t, r.URL(), "a", Options{})
	b := startNode(t, r.URL(), "b", Options{})
	now := time.Now()
	apply := func(n *testNode, user string, online bool) bool {
		t.Helper()
		ch, err := n.Apply([]store.SessionChange{{User: user, Online: online, At: now}})
		if err != nil {
			t.Fatal(err)
		}
		return ch[0]
	}
	// Tabs on a and b: online once, offline once, after both close.
	if !apply(a, "alice", true) {
		t.Error("alice's first node: not told online")
	}
	if apply(b, "alice", true) {
		t.Error("alice's second node told online again")
	}
	if on, _ := b.Online([]string{"alice", "zed"}); !on["alice"] || on["zed"] {
		t.Errorf("Online = %v", on)
	}
	if apply(a, "alice", false) {
		t.Error("alice offline while still on b")
	}
	if !apply(b, "alice", false) {
		t.Error("alice's last node closed: not told offline")
	}
	// Several changes of one batch, in order.
	ch, err := a.Apply([]store.SessionChange{{User: "x", Online: true}, {User: "x"}, {User: "x", Online: true}, {User: "y", Online: true}})
	if err != nil || !slices.Equal(ch, []bool{true, true, true, true}) {
		t.Errorf("batch = %v, %v", ch, err)
	}

	// A node gone: b holds carol and dave; dave is on a too. b stops (its
	// heartbeat expires after the grace, 0 here; a node killed leaves it to
	// expire after node_timeout: cmd/sidecar's end-to-end test).
	apply(b, "carol", true)
	apply(b, "dave", true)
	apply(a, "dave", true)
	b.stop()
	start := time.Now()
	eventually(t, "carol offline after b died", func() bool { return slices.Contains(a.teller.list(), "carol false") })
	t.Logf("carol offline %v after b stopped heartbeating (node timeout 600ms)", time.Since(start).Round(10*time.Millisecond))
	if slices.Contains(a.teller.list(), "dave false") {
		t.Error("dave, still on a, went offline")
	}
	if on, _ := a.Online([]string{"carol", "dave"}); on["carol"] || !on["dave"] {
		t.Errorf("after b died, Online = %v", on)
	}
	if s, _ := r.Do("SISMEMBER", "sidecar:nodes", "b"); s != "0" {
		t.Errorf("b still among the nodes: %q", s)
	}
}

func TestWebhookIDsAcrossNodes(t *testing.T) {
	r := redistest.Start(t)
	a := startNode(t, r.URL(), "a", Options{})
	b := startNode(t, r.URL(), "b", Options{})
	eventually(t, "both nodes in the stats", func() bool {
		st := a.Stats().(map[string]any)
		nodes, _ := st["nodes"].([]nodeStats)
		return len(nodes) == 2 && nodes[0].ID == "a" && nodes[1].ID == "b" && st["connections"] == int64(4) && st["users"] == int64(2)
	})
	sa, sb := a.Store(newMemStore()), b.Store(newMemStore())
	if first, err := sa.MarkSeen("wh:1", time.Minute); !first || err != nil {
		t.Fatalf("first on a = %v, %v", first, err)
	}
	if first, err := sb.MarkSeen("wh:1", time.Minute); first || err != nil {
		t.Fatalf("the retry on b = %v, %v; want a duplicate", first, err)
	}
	if err := sa.Unmark("wh:1"); err != nil {
		t.Fatal(err)
	}
	if first, _ := sb.MarkSeen("wh:1", time.Minute); !first {
		t.Fatal("after Unmark on a, b does not see it as new")
	}
	// Redis gone: the node's own store answers, at once.
	r.Kill()
	eventually(t, "a sees redis down", func() bool { ok, d := a.Check(); return ok && d[:8] == "degraded" })
	t0 := time.Now()
	if first, err := sa.MarkSeen("wh:2", time.Minute); !first || err != nil {
		t.Fatalf("redis down: %v, %v", first, err)
	}
	if first, _ := sa.MarkSeen("wh:2", time.Minute); first {
		t.Fatal("redis down: a retry to the same node is not a duplicate")
	}
	if d := time.Since(t0); d > 500*time.Millisecond {
		t.Errorf("MarkSeen waited %v for a Redis known to be down", d)
	}
}

// memStore is the engine's Store in memory.
type memStore struct {
	mu   sync.Mutex
	seen map[string]bool
}

func newMemStore() *memStore { return &memStore{seen: map[string]bool{}} }

func (s *memStore) MarkSeen(id string, _ time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen[id] {
		return false, nil
	}
	s.seen[id] = true
	return true, nil
}

func (s *memStore) Unmark(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.seen, id)
	return nil
}

func (s *memStore) Healthy() error { return nil }

func TestStreamsAcrossNodes(t *testing.T) {
	r := redistest.Start(t)
	a := startNode(t, r.URL(), "a", Options{})
	b := startNode(t, r.URL(), "b", Options{})
	eventually(t, "the epoch", func() bool { return !a.epochDue.Load() && !b.epochDue.Load() })
	sa := a.Streams(nil, 3, time.Hour).(*streams)
	sb := b.Streams(nil, 3, time.Hour).(*streams)
	start, _ := r.Do("GET", "{sidecar:rp}:epoch") // the streams hold everything since
	start = strings.TrimSpace(start)
	stamp := func(s *streams, names []string, ev string, except ...string) string {
		t.Helper()
		id, err := s.Stamp(names, store.StreamEvent{Event: ev, Data: []byte(`{"e":"` + ev + `"}`), Except: except})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	id1 := stamp(sa, []string{"u:alice"}, "one")
	id2 := stamp(sb, []string{"u:alice", "r:room"}, "two") // another node, two streams
	stamp(sa, []string{"a"}, "three", "alice")             // to everyone but alice
	id4 := stamp(sb, []string{"a"}, "four")
	for _, p := range [][2]string{{id1, id2}, {id2, id4}} {
		x, _ := store.ParseStreamID(p[0])
		y, _ := store.ParseStreamID(p[1])
		if !x.Less(y) {
			t.Fatalf("ids %s then %s: not increasing across nodes", p[0], p[1])
		}
	}
	names := []string{"u:alice", "a", "r:room"}
	evs, complete, err := sb.Since(names, start, "alice", 100)
	var got []string
	for _, e := range evs {
		got = append(got, e.Event)
	}
	if err != nil || !complete || !slices.Equal(got, []string{"one", "two", "four"}) {
		t.Fatalf("since the start, on b: %v complete=%v err=%v; want one, two (once), four", got, complete, err)
	}
	if evs[0].ID != id1 || string(evs[0].Data) != `{"e":"one"}` {
		t.Errorf("first event %+v", evs[0])
	}
	if evs, complete, _ := sa.Since(names, id2, "alice", 100); !complete || len(evs) != 1 || evs[0].Event != "four" {
		t.Errorf("since two: %v %v", evs, complete)
	}
	// The limit, and the count: a stream holds 3.
	if _, complete, _ := sa.Since(names, start, "alice", 2); complete {
		t.Error("past the limit: complete")
	}
	for i := range 3 {
		stamp(sa, []string{"u:alice"}, fmt.Sprint("more", i))
	}
	if _, complete, _ := sa.Since([]string{"u:alice"}, id1, "alice", 100); complete {
		t.Error("events trimmed past since: complete")
	}
	if _, complete, _ := sa.Since(names, "1-0", "alice", 100); complete {
		t.Error("since before the epoch: complete")
	}
	if _, complete, _ := sa.Since(names, "nonsense", "alice", 100); complete {
		t.Error("a bad since: complete")
	}
	// Redis restarted, its data lost: the epoch is new, and what came
	// before it is not complete.
	last := stamp(sa, []string{"u:bob"}, "before")
	r.Kill()
	r.Restart()
	eventually(t, "the new epoch", func() bool {
		out, _ := r.Do("GET", "{sidecar:rp}:epoch")
		return out != ""
	})
	if _, complete, _ := sa.Since([]string{"u:bob"}, last, "bob", 100); complete {
		t.Error("after Redis lost its streams: complete")
	}
}

// An event to one room goes on the room's channel: only the nodes with a
// member receive it; two partitions with members make one subscription,
// left when the last leaves.
func TestRoomChannels(t *testing.T) {
	r := redistest.Start(t)
	a := startNode(t, r.URL(), "a", Options{})
	b := startNode(t, r.URL(), "b", Options{})
	c := startNode(t, r.URL(), "c", Options{})
	rr := func(n *testNode) engine.RoomRouter { return n.broker.(engine.RoomRouter) }
	rr(c).RoomHere("presence:alice", 0, true)
	rr(c).RoomHere("presence:alice", 1, true)
	subscribers := func(ch string) string {
		out, _ := r.Do("PUBSUB", "SHARDNUMSUB", ch)
		return strings.TrimSpace(out[strings.LastIndex(out, "\n")+1:])
	}
	eventually(t, "c on the room's channel", func() bool { return subscribers(c.chRoom+"presence:alice") == "1" })
	ctx := context.Background()
	a.broker.Publish(ctx, &engine.Message{Event: "userOnline", Data: []byte(`1`), To: engine.Target{Rooms: []string{"presence:alice"}}}, false)
	a.broker.Publish(ctx, &engine.Message{Event: "two", Data: []byte(`2`), To: engine.Target{Rooms: []string{"presence:alice", "other"}}}, false)
	eventually(t, "c's deliveries", func() bool { return len(c.hub.events()) == 2 })
	eventually(t, "b's", func() bool { return len(b.hub.events()) == 1 })
	time.Sleep(200 * time.Millisecond)
	if got := b.hub.events(); len(got) != 1 || !strings.HasPrefix(got[0], "two ") {
		t.Errorf("b, without a member, got %q; want only the two-room event (the broadcast channel)", got)
	}
	if got := c.hub.events(); len(got) != 2 || !strings.HasPrefix(got[0], "userOnline ") {
		t.Errorf("c got %q", got)
	}
	rr(c).RoomHere("presence:alice", 0, false)
	time.Sleep(100 * time.Millisecond)
	if s := subscribers(c.chRoom + "presence:alice"); s != "1" {
		t.Errorf("one partition still has a member, but the channel has %s subscribers", s)
	}
	rr(c).RoomHere("presence:alice", 1, false)
	eventually(t, "the room's channel left", func() bool { return subscribers(c.chRoom+"presence:alice") == "0" })
}
