package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sidecar/sidecar/internal/redistest"
)

// Faults under a cluster of real sidecar processes with real clients: a
// Redis Cluster instead of one server, Redis paused (SIGSTOP) and
// restarted under the nodes, webhooks retried to other nodes, socket.io
// clients on different nodes. Each test starts its own redis-server
// processes (never the shared one) and ends by itself.

// channelShard is the master of c that owns the slot of the channels'
// hash tag {sidecar}: every channel is in that slot, and PUBSUB
// SHARDNUMSUB counts the subscribers of the node it is asked of.
func channelShard(t *testing.T, c *redistest.Cluster) *redistest.Server {
	t.Helper()
	first := c.Nodes()[0]
	out, err := first.Do("CLUSTER", "KEYSLOT", "{sidecar}")
	if err != nil {
		t.Fatal(err)
	}
	slot, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("CLUSTER KEYSLOT: %q", out)
	}
	table, err := first.Do("CLUSTER", "NODES")
	if err != nil {
		t.Fatal(err)
	}
	// <id> <ip:port@bus[,host]> <flags> <master> <ping> <pong> <epoch> <state> <slot or range>...
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.Contains(f[2], "master") {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		for _, r := range f[8:] {
			lo, hi, isRange := strings.Cut(r, "-")
			if !isRange {
				hi = lo
			}
			from, err1 := strconv.Atoi(lo)
			to, err2 := strconv.Atoi(hi)
			if err1 != nil || err2 != nil || slot < from || slot > to {
				continue
			}
			for _, s := range c.Nodes() {
				if s.Addr() == addr {
					return s
				}
			}
		}
	}
	t.Fatalf("no master of slot %d in CLUSTER NODES:\n%s", slot, table)
	return nil
}

// keysPerShard is DBSIZE of each master of c.
func keysPerShard(t *testing.T, c *redistest.Cluster) []int {
	t.Helper()
	var n []int
	for _, s := range c.Nodes() {
		out, err := s.Do("DBSIZE")
		if err != nil {
			t.Fatal(err)
		}
		k, _ := strconv.Atoi(strings.TrimSpace(out))
		n = append(n, k)
	}
	return n
}

// The two first tests of cluster_e2e_test.go against a Redis Cluster of 3
// masters: the nodes are given the first master's URL and find the others;
// the channels are all on one shard, the keys spread over the three.
func TestClusterOnRedisCluster(t *testing.T) {
	needNode(t)
	spread := func(t *testing.T, c *redistest.Cluster) {
		t.Helper()
		keys := keysPerShard(t, c)
		used := 0
		for _, k := range keys {
			if k > 0 {
				used++
			}
		}
		t.Logf("keys per shard: %v", keys)
		if used < 2 {
			t.Errorf("keys per shard %v: the presence and heartbeat keys should spread over the shards", keys)
		}
	}
	t.Run("WebhookOnAReachesClientOnCOnce", func(t *testing.T) {
		c := redistest.StartCluster(t, 3)
		webhookOnAReachesClientOnCOnce(t, c.URL(), channelShard(t, c))
		spread(t, c)
	})
	t.Run("TabsOnTwoNodesOfflineOnceAfterBoth", func(t *testing.T) {
		c := redistest.StartCluster(t, 3)
		tabsOnTwoNodesOfflineOnceAfterBoth(t, c.URL(), channelShard(t, c))
		spread(t, c)
	})
}

// collect returns the events c prints within d, and fails if it closes or
// exits meanwhile: it stayed connected.
func (c *nodeClient) collect(d time.Duration) []map[string]any {
	c.t.Helper()
	var events []map[string]any
	deadline := time.After(d)
	for {
		select {
		case m, ok := <-c.lines:
			if !ok {
				c.t.Fatalf("node client exited: %v", <-c.done)
			}
			if m["closed"] != nil || m["timeout"] != nil || m["error"] != nil || m["status"] != nil {
				c.t.Fatalf("node client: %v, want it connected", m)
			}
			if _, ev := m["event"]; ev {
				events = append(events, m)
			}
		case <-deadline:
			return events
		}
	}
}

// eventWithin is the next event c prints within d, acks skipped, or false.
func (c *nodeClient) eventWithin(d time.Duration) (map[string]any, bool) {
	deadline := time.Now().Add(d)
	for {
		m, ok := c.nextWithin(time.Until(deadline))
		if !ok {
			return nil, false
		}
		if _, ev := m["event"]; ev || m["closed"] != nil {
			return m, true
		}
	}
}

// faultHTTP bounds each request a fault test makes while Redis is away: a
// node that hangs fails the test instead of hanging it.
var faultHTTP = &http.Client{Timeout: 5 * time.Second}

// timedDo sends req with faultHTTP and returns the status (0 without an
// answer, the error in the body's "error"), the JSON body and how long the
// answer took.
func timedDo(req *http.Request) (int, map[string]any, time.Duration) {
	start := time.Now()
	resp, err := faultHTTP.Do(req)
	if err != nil {
		return 0, map[string]any{"error": err.Error()}, time.Since(start)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m, time.Since(start)
}

// broadcastReq is a broadcast of message by the test API on node, as admin.
func broadcastReq(t *testing.T, node *clusterNode, message string) *http.Request {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"title": "t", "message": message})
	req, _ := http.NewRequest("POST", "http://"+node.addr+"/api/socket-test/broadcast", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+exampleToken(t, map[string]any{"sub": "admin", "role": "admin"}))
	return req
}

// broadcastFrom broadcasts message from node, and fails unless it is
// accepted within 5 s.
func broadcastFrom(t *testing.T, node *clusterNode, message string) {
	t.Helper()
	if st, resp, took := timedDo(broadcastReq(t, node, message)); st != http.StatusOK && st != http.StatusAccepted {
		t.Fatalf("broadcast %q on %s: %d %v after %v", message, node.addr, st, resp, took)
	}
}

// bookingCreated is a booking.created webhook body for provider: its
// event, newNotification, has data.bookingId id.
func bookingCreated(id, provider string) string {
	return `{"type":"booking.created","timestamp":"2026-12-01T10:00:00Z","data":{"id":"` + id + `","status":"pending","providerId":"` + provider + `","customerId":"nobody","customerName":"Ana","serviceName":"cut"}}`
}

// messages are the events' data.message.
func messages(events []map[string]any) []string {
	var l []string
	for _, m := range events {
		l = append(l, fmt.Sprint(eventData(m)["message"]))
	}
	return l
}

// count is how many times s is in l.
func count(l []string, s string) int {
	n := 0
	for _, x := range l {
		if x == s {
			n++
		}
	}
	return n
}

// brokerMetrics is node's sidecar_broker_up and dropped counts, for the log.
func brokerMetrics(t *testing.T, node *clusterNode) string {
	t.Helper()
	var l []string
	for _, line := range strings.Split(metricsText(t, node.addr), "\n") {
		if strings.HasPrefix(line, "sidecar_broker_dropped_total") || strings.HasPrefix(line, "sidecar_broker_up") {
			l = append(l, line)
		}
	}
	return strings.Join(l, "; ")
}

// Redis stops answering for 10 s (SIGSTOP: its connections stay open,
// nothing is answered) under two nodes. Each node serves its own clients
// at once, answers webhooks, says degraded; afterwards both are back,
// cross-node delivery works and presence did not flap, although every
// heartbeat key expired during the pause.
func TestClusterRedisPaused(t *testing.T) {
	needNode(t)
	r := redistest.Start(t)
	_, nodes := startClusterNodes(t, 2, r.URL())
	a, b := nodes[0], nodes[1]
	alice := connectTo(t, r, a, "alice")
	bob := connectTo(t, r, b, "bob")
	w := connectTo(t, r, b, "watcher", watchMsg(1, "alice"))
	if st := eventData(w.nextEvent())["users"].(map[string]any)["alice"].(map[string]any); st["online"] != true {
		t.Fatalf("watch answered on B: %v, want alice online (on A)", st)
	}

	r.Pause()
	paused := time.Now()

	// (a) Each node's own clients get its broadcast at once: no node waits
	// for Redis on its way.
	for _, c := range []struct {
		name    string
		node    *clusterNode
		clients []*nodeClient
	}{{"A", a, []*nodeClient{alice}}, {"B", b, []*nodeClient{bob, w}}} {
		msg := "during the pause from " + c.name
		start := time.Now()
		broadcastFrom(t, c.node, msg)
		for _, cl := range c.clients {
			m, ok := cl.eventWithin(time.Second - time.Since(start))
			if !ok || eventData(m)["message"] != msg {
				t.Fatalf("a client on %s, within 1 s of a broadcast there during the pause: %v (%v)", c.name, m, ok)
			}
		}
		t.Logf("during the pause: a broadcast on %s reached its clients there in %v", c.name, time.Since(start).Round(time.Millisecond))
	}

	// (b) Webhooks to A are answered, before and after A knows Redis is
	// away; (c) both nodes say degraded.
	webhook := func(n int) {
		t.Helper()
		id := "bk-pause-" + itoa(n)
		at := time.Since(paused)
		st, resp, took := timedDo(signedRequest(t, a.addr, "msg_pause_"+itoa(n), bookingCreated(id, "alice")))
		t.Logf("webhook %d on A, posted %v into the pause: %d %v in %v", n, at.Round(time.Millisecond), st, resp, took.Round(time.Millisecond))
		if took > 2500*time.Millisecond {
			t.Errorf("webhook %d on A during the pause took %v; bound ~2 s", n, took)
		}
		switch st {
		case http.StatusAccepted:
			if m := alice.nextEvent(); eventData(m)["bookingId"] != id {
				t.Fatalf("alice after webhook %d: %v", n, m)
			}
		case http.StatusServiceUnavailable:
			t.Errorf("webhook %d on A during the pause refused: %v (the node's own store can keep the id)", n, resp)
		default:
			t.Fatalf("webhook %d on A during the pause: %d %v", n, st, resp)
		}
	}
	webhook(1)
	waitFor(t, 5*time.Second, "A and B degraded", func() bool {
		return strings.Contains(readyDetail(t, a.addr), `"degraded"`) && strings.Contains(readyDetail(t, b.addr), `"degraded"`)
	})
	t.Logf("both nodes degraded %v into the pause", time.Since(paused).Round(time.Millisecond))
	webhook(2)
	time.Sleep(3 * time.Second)
	webhook(3)
	t.Logf("A during the pause: %s", brokerMetrics(t, a))
	t.Logf("B during the pause: %s", brokerMetrics(t, b))

	time.Sleep(time.Until(paused.Add(10 * time.Second)))
	r.Resume()
	resumed := time.Now()
	waitFor(t, 10*time.Second, "A and B ok after Resume", func() bool {
		return strings.Contains(readyDetail(t, a.addr), `"status":"ok"`) && strings.Contains(readyDetail(t, b.addr), `"status":"ok"`)
	})
	waitFor(t, 5*time.Second, "the broadcast channel subscribed by both nodes", func() bool {
		return shardSubscribers(r, "{sidecar}:b") == 2
	})
	t.Logf("both nodes ok, subscribed, %v after Resume", time.Since(resumed).Round(time.Millisecond))
	broadcastFrom(t, a, "after the pause")
	// Past node_timeout after the recovery, with sweeps every 125 ms: a
	// flap would have happened by now.
	time.Sleep(time.Until(resumed.Add(3 * time.Second)))

	for _, c := range []struct {
		name  string
		c     *nodeClient
		other string // the node whose broadcast during the pause it missed
	}{{"alice on A", alice, "B"}, {"bob on B", bob, "A"}, {"the watcher on B", w, "A"}} {
		events := c.c.collect(300 * time.Millisecond)
		for _, m := range events {
			if m["event"] == "userOffline" || m["event"] == "userOnline" {
				t.Errorf("%s: %v: alice was connected to A throughout the pause (presence flapped)", c.name, m)
			}
		}
		got := messages(events)
		if n := count(got, "after the pause"); n != 1 {
			t.Errorf("%s: the broadcast from A after the pause %d times, want once (%v)", c.name, n, got)
		}
		if n := count(got, "during the pause from "+c.other); n > 0 {
			// Its SPUBLISH went out before the other node saw Redis was
			// away: it timed out there and was counted dropped, but
			// redis-server read it from the socket and ran it on SIGCONT.
			t.Logf("%s also got %s's broadcast of during the pause, 10 s late, after Resume (%d times)", c.name, c.other, n)
		}
	}
	for _, n := range nodes {
		if d := readyDetail(t, n.addr); !strings.Contains(d, `"status":"ok"`) {
			t.Errorf("%s after the pause: %s", n.addr, d)
		}
	}
	t.Logf("A after the pause: %s", brokerMetrics(t, a))
	t.Logf("B after the pause: %s", brokerMetrics(t, b))
}

// goroutinesOf is go_goroutines in node's /metrics.
func goroutinesOf(t *testing.T, node *clusterNode) int {
	t.Helper()
	for _, line := range strings.Split(metricsText(t, node.addr), "\n") {
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("go_goroutines: %q", line)
			}
			return int(f)
		}
	}
	t.Fatalf("no go_goroutines in %s/metrics", node.addr)
	return 0
}

// Redis killed and restarted three times (2 s down each, its data lost)
// under two nodes: each time cross-node delivery comes back both ways, and
// in the end neither node has more goroutines than before.
func TestClusterRedisRestartNoGoroutineGrowth(t *testing.T) {
	needNode(t)
	r := redistest.Start(t)
	_, nodes := startClusterNodes(t, 2, r.URL())
	a, b := nodes[0], nodes[1]
	alice := connectTo(t, r, a, "alice")
	bob := connectTo(t, r, b, "bob")
	crossNode := func(round string) {
		t.Helper()
		waitFor(t, 10*time.Second, round+": A and B ok", func() bool {
			return strings.Contains(readyDetail(t, a.addr), `"status":"ok"`) && strings.Contains(readyDetail(t, b.addr), `"status":"ok"`)
		})
		waitFor(t, 5*time.Second, round+": subscriptions back", func() bool {
			return shardSubscribers(r, "{sidecar}:b") == 2 && shardSubscribers(r, "{sidecar}:u:alice") == 1 && shardSubscribers(r, "{sidecar}:u:bob") == 1
		})
		broadcastFrom(t, a, round+" from A")
		broadcastFrom(t, b, round+" from B")
		for _, c := range []*nodeClient{alice, bob} {
			got := []string{fmt.Sprint(eventData(c.nextEvent())["message"]), fmt.Sprint(eventData(c.nextEvent())["message"])}
			sort.Strings(got)
			if got[0] != round+" from A" || got[1] != round+" from B" {
				t.Fatalf("%s: %v, want the broadcasts from A and B", round, got)
			}
		}
	}
	crossNode("warm-up")
	time.Sleep(500 * time.Millisecond)
	baseA, baseB := goroutinesOf(t, a), goroutinesOf(t, b)
	for i := range 3 {
		r.Kill()
		time.Sleep(2 * time.Second)
		r.Restart()
		restarted := time.Now()
		crossNode("restart " + itoa(i+1))
		t.Logf("restart %d: cross-node delivery back %v after Redis; goroutines A %d, B %d", i+1, time.Since(restarted).Round(10*time.Millisecond), goroutinesOf(t, a), goroutinesOf(t, b))
	}
	var ga, gb int
	deadline := time.Now().Add(5 * time.Second)
	for {
		ga, gb = goroutinesOf(t, a), goroutinesOf(t, b)
		if (ga <= baseA+5 && gb <= baseB+5) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("goroutines: A %d → %d, B %d → %d", baseA, ga, baseB, gb)
	if ga > baseA+5 || gb > baseB+5 {
		t.Errorf("goroutines grew over 3 Redis restarts: A %d → %d, B %d → %d (bound +5)", baseA, ga, baseB, gb)
	}
}

// Three nodes, one client each (u0 on node 0, ...); 60 webhooks posted
// round-robin over the nodes, each to every user from every node in turn,
// and each posted again to the next node, as a sender's retry: every user
// gets each of their 20 events exactly once, every retry is a duplicate.
func TestClusterWebhooksExactlyOnceRoundRobin(t *testing.T) {
	needNode(t)
	r := redistest.Start(t)
	_, nodes := startClusterNodes(t, 3, r.URL())
	var clients []*nodeClient
	want := make([]map[string]int, len(nodes))
	for i, n := range nodes {
		clients = append(clients, connectTo(t, r, n, "u"+itoa(i)))
		want[i] = map[string]int{}
	}
	posting := time.Now()
	for k := range 60 {
		user := k % 3
		node := (k + k/3) % 3 // each triple of webhooks over the three nodes, each time shifted: every (node, user) in turn
		id := fmt.Sprintf("bk-rr-%02d", k)
		msgID := fmt.Sprintf("msg_rr_%02d", k)
		body := bookingCreated(id, "u"+itoa(user))
		want[user][id] = 1
		first, retry := nodes[node], nodes[(node+1)%3]
		if st, m := signedPost(t, first.addr, msgID, body); st != http.StatusAccepted {
			t.Fatalf("webhook %d on node %d: %d %v", k, node, st, m)
		}
		if st, m := signedPost(t, retry.addr, msgID, body); st != http.StatusOK || m["duplicate"] != true {
			t.Errorf("the retry of webhook %d on node %d: %d %v, want 200 duplicate", k, (node+1)%3, st, m)
		}
	}
	t.Logf("120 webhooks posted in %v", time.Since(posting).Round(time.Millisecond))
	for i, c := range clients {
		got := map[string]int{}
		events := 0
		add := func(l []map[string]any) {
			for _, m := range l {
				got[fmt.Sprint(eventData(m)["bookingId"])]++
				events++
			}
		}
		for deadline := time.Now().Add(5 * time.Second); events < len(want[i]) && time.Now().Before(deadline); {
			add(c.collect(100 * time.Millisecond))
		}
		t.Logf("u%d on node %d: %d events", i, i, events)
		add(c.collect(500 * time.Millisecond)) // any more is one too many
		for id, n := range got {
			if want[i][id] != n {
				t.Errorf("u%d on node %d: %s %d times, want %d", i, i, id, n, want[i][id])
			}
		}
		for id := range want[i] {
			if got[id] == 0 {
				t.Errorf("u%d on node %d: %s never arrived", i, i, id)
			}
		}
	}
}

// socket.io-client over WebSocket on two nodes: a webhook posted to A
// reaches the provider on B once, and a message sent from B reaches the
// client on A once.
func TestClusterSocketIOClientsOnDifferentNodes(t *testing.T) {
	needNode(t)
	r := redistest.Start(t)
	_, nodes := startClusterNodes(t, 2, r.URL())
	a, b := nodes[0], nodes[1]
	sio := func(node *clusterNode, user, role string) *sioClient {
		t.Helper()
		c := startSIOClient(t, "http://"+node.addr, map[string]any{"transports": []string{"websocket"}, "reconnection": false,
			"auth": map[string]any{"token": exampleToken(t, map[string]any{"sub": user, "role": role})}})
		if m := c.expect("connect"); m["transport"] != "websocket" {
			t.Fatalf("socket.io client on %s: %v", node.addr, m)
		}
		waitSubscribed(t, r, user)
		return c
	}
	prov := sio(b, "sio-prov", "provider")
	cust := sio(a, "sio-cust", "customer")

	if st, m := signedPost(t, a.addr, "msg_sio_cluster", bookingCreated("bk-sio", "sio-prov")); st != http.StatusAccepted {
		t.Fatalf("webhook on A: %d %v", st, m)
	}
	if name, data := prov.event(); name != "newNotification" || data["bookingId"] != "bk-sio" {
		t.Fatalf("the provider on B after the webhook on A: %s %v", name, data)
	}
	prov.noMore(500*time.Millisecond, "the provider on B (exactly once)")
	cust.noMore(0, "the customer on A, not a recipient")

	admin := exampleToken(t, map[string]any{"sub": "admin", "role": "admin"})
	if st, resp := (&exampleNode{t: t, addr: b.addr}).post("/api/socket-test/send/sio-cust", admin, map[string]any{"title": "from B"}); st != http.StatusAccepted {
		t.Fatalf("send on B: %d %v", st, resp)
	}
	if name, data := cust.event(); name != "newNotification" || data["title"] != "from B" {
		t.Fatalf("the customer on A after a send on B: %s %v", name, data)
	}
	cust.noMore(500*time.Millisecond, "the customer on A (exactly once)")
	prov.noMore(0, "the provider on B, not a recipient")
}
