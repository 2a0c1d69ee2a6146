package main

import (
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sidecar/sidecar/engine/auth"
	"github.com/sidecar/sidecar/internal/redistest"
)

// Several real sidecar processes on 127.0.0.1 joined through a redis-server
// the test starts itself (never the shared one), with real `ws` clients on
// different nodes: what the operators of a cluster and their users see.

// clusterNode is one sidecar process of a test cluster.
type clusterNode struct {
	cmd  *exec.Cmd
	addr string
	env  []string
}

// startClusterNodes runs n sidecars on config.example.yaml joined through
// redisURL, each with its own store, with short heartbeats so that a dead
// node is found in about a second.
func startClusterNodes(t *testing.T, n int, redisURL string, env ...string) (bin string, nodes []*clusterNode) {
	t.Helper()
	for i := range n {
		e := append([]string{
			"SIDECAR_STORE__PATH=" + filepath.Join(t.TempDir(), "s.db"),
			"SIDECAR_BROKER__REDIS_URL=" + redisURL,
			"SIDECAR_BROKER__NODE_ID=node" + itoa(i),
			"SIDECAR_BROKER__HEARTBEAT_INTERVAL=250ms",
			"SIDECAR_BROKER__NODE_TIMEOUT=1s",
			"SIDECAR_PRESENCE__GRACE=300ms",
			"SIDECAR_RULES__WATCH=false",
			"SIDECAR_WEBHOOKS__SECRETS=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", // newTestSigner's
		}, env...)
		var cmd *exec.Cmd
		var addr string
		if bin == "" {
			bin, cmd, addr = startBinary(t, "", e...)
		} else {
			cmd, addr = runBinary(t, bin, "", e...)
		}
		waitReady(t, "http://"+addr+"/readyz")
		nodes = append(nodes, &clusterNode{cmd: cmd, addr: addr, env: e})
	}
	return bin, nodes
}

// exampleToken signs claims with config.example.yaml's development secret.
func exampleToken(t *testing.T, claims map[string]any) string {
	t.Helper()
	claims["exp"] = time.Now().Add(time.Hour).Unix()
	tok, err := auth.Sign([]byte("sidecar-dev-secret-change-me"), claims)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// connectTo opens a `ws` client as user on node, and waits until the
// cluster knows the user is there (their channel is subscribed: a message
// for them from another node reaches them). r is the Redis that holds the
// channels: the server, or in a Redis Cluster the master of their slot
// (channelShard).
func connectTo(t *testing.T, r *redistest.Server, node *clusterNode, user string, send ...any) *nodeClient {
	t.Helper()
	c := startNodeClientSending(t, "ws://"+node.addr+"/ws?token="+exampleToken(t, map[string]any{"sub": user}), 1000, send)
	c.waitOpen()
	waitSubscribed(t, r, user)
	return c
}

// waitSubscribed waits until some node subscribes user's channel.
func waitSubscribed(t *testing.T, r *redistest.Server, user string) {
	t.Helper()
	waitFor(t, 5*time.Second, user+"'s channel subscribed", func() bool {
		return shardSubscribers(r, "{sidecar}:u:"+user) > 0
	})
}

// shardSubscribers is PUBSUB SHARDNUMSUB channel on r: how many
// connections (nodes) subscribe it; -1 if r does not answer.
func shardSubscribers(r *redistest.Server, channel string) int {
	out, err := r.Do("PUBSUB", "SHARDNUMSUB", channel)
	if err != nil {
		return -1
	}
	lines := strings.Fields(out)
	if len(lines) != 2 {
		return -1
	}
	n, err := strconv.Atoi(lines[1])
	if err != nil {
		return -1
	}
	return n
}

// noMore fails if c prints an event within d.
func (c *nodeClient) noMore(d time.Duration, why string) {
	c.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case m, ok := <-c.lines:
			if !ok {
				return
			}
			if _, ev := m["event"]; ev {
				c.t.Fatalf("%s: got %v", why, m)
			}
		case <-deadline:
			return
		}
	}
}

func TestClusterWebhookOnAReachesClientOnCOnce(t *testing.T) {
	r := redistest.Start(t)
	webhookOnAReachesClientOnCOnce(t, r.URL(), r)
}

// webhookOnAReachesClientOnCOnce: three nodes on the Redis at redisURL,
// whose channels r holds; a webhook on A reaches its recipient on C once,
// its retry on B is a duplicate, and a broadcast from A reaches B and C.
func webhookOnAReachesClientOnCOnce(t *testing.T, redisURL string, r *redistest.Server) {
	needNode(t)
	_, nodes := startClusterNodes(t, 3, redisURL)
	a, b, c := nodes[0], nodes[1], nodes[2]
	alice := connectTo(t, r, c, "alice")
	bob := connectTo(t, r, b, "bob")

	body := `{"type":"booking.created","timestamp":"2026-12-01T10:00:00Z","data":{"bookingId":"b1","providerId":"alice","customerId":"bob","service":"cut","date":"2026-12-02"}}`
	if st, m := signedPost(t, a.addr, "msg_cluster1", body); st != http.StatusAccepted {
		t.Fatalf("webhook on A: %d %v", st, m)
	}
	m := alice.nextEvent()
	if m["event"] != "newNotification" {
		t.Fatalf("alice on C: %v, want newNotification", m)
	}
	// The retry reaches B: a duplicate, cluster-wide, and nothing delivered twice.
	if st, m := signedPost(t, b.addr, "msg_cluster1", body); st != http.StatusOK || m["duplicate"] != true {
		t.Fatalf("the retry on B: %d %v, want 200 duplicate", st, m)
	}
	alice.noMore(300*time.Millisecond, "alice after the retry (exactly once)")
	bob.noMore(0, "bob, not a recipient")

	// A broadcast from A, with no client on A: each client on B and C once.
	admin := exampleToken(t, map[string]any{"sub": "admin", "role": "admin"})
	st, resp := (&exampleNode{t: t, addr: a.addr}).post("/api/socket-test/broadcast", admin, map[string]any{"title": "t", "message": "hello all"})
	if st != http.StatusOK && st != http.StatusAccepted {
		t.Fatalf("broadcast on A: %d %v", st, resp)
	}
	for _, cl := range []*nodeClient{alice, bob} {
		if m := cl.nextEvent(); m["event"] != "newNotification" {
			t.Fatalf("broadcast: %v", m)
		}
		cl.noMore(300*time.Millisecond, "after the broadcast (exactly once)")
	}
}

func TestClusterTabsOnTwoNodesOfflineOnceAfterBoth(t *testing.T) {
	r := redistest.Start(t)
	tabsOnTwoNodesOfflineOnceAfterBoth(t, r.URL(), r)
}

// tabsOnTwoNodesOfflineOnceAfterBoth: three nodes on the Redis at redisURL,
// whose channels r holds; a user with tabs on A and B, watched from C, goes
// offline once, when both are closed.
func tabsOnTwoNodesOfflineOnceAfterBoth(t *testing.T, redisURL string, r *redistest.Server) {
	needNode(t)
	_, nodes := startClusterNodes(t, 3, redisURL)
	a, b, c := nodes[0], nodes[1], nodes[2]
	tabA := connectTo(t, r, a, "alice")
	tabB := connectTo(t, r, b, "alice")
	w := connectTo(t, r, c, "watcher", watchMsg(1, "alice"))
	st := eventData(w.nextEvent())["users"].(map[string]any)["alice"].(map[string]any)
	if st["online"] != true {
		t.Fatalf("watch answered on C: %v, want alice online (on A and B)", st)
	}
	admin := exampleToken(t, map[string]any{"sub": "admin", "role": "admin"})
	online := func(node *clusterNode) any {
		_, p := getJSON(t, "http://"+node.addr+"/api/presence/alice", admin)
		return p["online"]
	}
	tabA.kill()
	w.noMore(time.Second, "alice closed A's tab but is still on B")
	if online(c) != true {
		t.Fatal("presence on C: alice offline while on B")
	}
	tabB.kill()
	m := w.nextEvent()
	if m["event"] != "userOffline" || eventData(m)["userId"] != "alice" {
		t.Fatalf("after both tabs closed: %v, want userOffline", m)
	}
	w.noMore(time.Second, "one userOffline, not one per node")
	if online(a) != false || online(c) != false {
		t.Fatal("presence after both closed: still online")
	}
}

func TestClusterNodeKilledItsUsersGoOffline(t *testing.T) {
	needNode(t)
	r := redistest.Start(t)
	_, nodes := startClusterNodes(t, 3, r.URL())
	a, b, c := nodes[0], nodes[1], nodes[2]
	connectTo(t, r, b, "carol")
	connectTo(t, r, b, "dave")
	connectTo(t, r, c, "dave") // dave has a tab on C too
	w := connectTo(t, r, a, "watcher", watchMsg(1, "carol", "dave"))
	w.nextEvent() // the state
	killed := time.Now()
	b.cmd.Process.Kill()
	b.cmd.Wait()
	m := w.nextEvent()
	took := time.Since(killed)
	if m["event"] != "userOffline" || eventData(m)["userId"] != "carol" {
		t.Fatalf("after B was killed: %v, want carol offline", m)
	}
	t.Logf("carol offline %v after kill -9 of her node (heartbeat 250ms, node timeout 1s)", took.Round(10*time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("carol went offline %v after her node died; the bound is node_timeout + heartbeat_interval and a sweep", took)
	}
	w.noMore(time.Second, "dave, still on C, stays online")
}

func TestClusterRedisDownAtStart(t *testing.T) {
	r := redistest.Start(t)
	url := r.URL()
	r.Kill()
	_, nodes := startClusterNodes(t, 1, url)
	if d := readyDetail(t, nodes[0].addr); !strings.Contains(d, `"status":"degraded"`) {
		t.Fatalf("readyz with Redis down at start: %s", d)
	}
	// It joins when Redis answers.
	r.Restart()
	waitFor(t, 10*time.Second, "readyz ok once Redis is back", func() bool {
		return strings.Contains(readyDetail(t, nodes[0].addr), `"status":"ok"`)
	})

	// Refusing instead, per config: it exits at once with the reason.
	r.Kill()
	bin := filepath.Join(t.TempDir(), "sidecar")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "serve", "--config", "../../config.example.yaml")
	cmd.Env = append(nodes[0].env, "SIDECAR_LISTEN=127.0.0.1:0", "SIDECAR_BROKER__ON_UNAVAILABLE=refuse", "HOME=/tmp", "PATH=/usr/bin:/bin")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "redis unreachable") {
		t.Fatalf("on_unavailable=refuse with Redis down: err %v, output:\n%s", err, out)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("refusing took %v", d)
	}
}

func TestClusterRedisKilledAndBack(t *testing.T) {
	needNode(t)
	r := redistest.Start(t)
	_, nodes := startClusterNodes(t, 2, r.URL())
	a, b := nodes[0], nodes[1]
	onA := connectTo(t, r, a, "alice")
	onB := connectTo(t, r, b, "bob")
	admin := exampleToken(t, map[string]any{"sub": "admin", "role": "admin"})
	broadcast := func(msg string) {
		t.Helper()
		if st, resp := (&exampleNode{t: t, addr: a.addr}).post("/api/socket-test/broadcast", admin, map[string]any{"title": "t", "message": msg}); st >= 300 {
			t.Fatalf("broadcast: %d %v", st, resp)
		}
	}
	r.Kill()
	waitFor(t, 5*time.Second, "A degraded", func() bool { return strings.Contains(readyDetail(t, a.addr), `"degraded"`) })
	// Local delivery never stops; the cross-node copy is dropped and counted.
	broadcast("during the outage")
	if m := onA.nextEvent(); eventData(m)["message"] != "during the outage" {
		t.Fatalf("alice on A during the outage: %v", m)
	}
	onB.noMore(300*time.Millisecond, "bob on B during the outage (dropped, counted)")
	if !strings.Contains(metricsText(t, a.addr), `sidecar_broker_dropped_total{reason="unavailable"} 1`) {
		t.Error("the dropped cross-node message is not counted")
	}
	time.Sleep(4 * time.Second) // Redis away for 5 s in all
	r.Restart()
	back := time.Now()
	waitFor(t, 10*time.Second, "both nodes ok again", func() bool {
		return strings.Contains(readyDetail(t, a.addr), `"status":"ok"`) && strings.Contains(readyDetail(t, b.addr), `"status":"ok"`)
	})
	// Subscriptions re-established: bob's channel and the broadcast one.
	waitFor(t, 5*time.Second, "bob's channel subscribed again", func() bool {
		out, _ := r.Do("PUBSUB", "SHARDNUMSUB", "{sidecar}:u:bob")
		return strings.HasSuffix(strings.TrimSpace(out), "1")
	})
	t.Logf("subscriptions back %v after Redis", time.Since(back).Round(10*time.Millisecond))
	broadcast("after")
	if m := onB.nextEvent(); eventData(m)["message"] != "after" {
		t.Fatalf("bob on B after Redis came back: %v", m)
	}
	onA.nextEvent()
}

func metricsText(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return sb.String()
}

// A client that missed events reconnects to another node with ?since=:
// what was published on any node while it was away is replayed, in order,
// once, then resumed with recovered: true.
func TestClusterReplayOnAnotherNode(t *testing.T) {
	needNode(t)
	r := redistest.Start(t)
	_, nodes := startClusterNodes(t, 3, r.URL())
	a, b, c := nodes[0], nodes[1], nodes[2]
	admin := exampleToken(t, map[string]any{"sub": "admin", "role": "admin"})
	tok := exampleToken(t, map[string]any{"sub": "p1", "role": "provider"})
	send := func(node *clusterNode, path string, body map[string]any) {
		t.Helper()
		if st, resp := (&exampleNode{t: t, addr: node.addr}).post(path, admin, body); st != http.StatusAccepted {
			t.Fatalf("POST %s on %s: %d %v", path, node.addr, st, resp)
		}
	}
	cl := startNodeClient(t, "ws://"+b.addr+"/ws?token="+tok, 1)
	cl.waitOpen()
	waitFor(t, 5*time.Second, "p1 subscribed", func() bool {
		out, _ := r.Do("PUBSUB", "SHARDNUMSUB", "{sidecar}:u:p1")
		return strings.HasSuffix(strings.TrimSpace(out), "1")
	})
	send(a, "/api/socket-test/send/p1", map[string]any{"title": "before"}) // on A, to p1 on B
	since := cl.nextEvent()["id"].(string)
	cl.next() // closed after one message

	send(a, "/api/socket-test/send/p1", map[string]any{"title": "one"})
	send(c, "/api/socket-test/send/p1", map[string]any{"title": "two"})
	send(b, "/api/socket-test/broadcast", map[string]any{"title": "to all"})
	send(a, "/api/events", map[string]any{"event": "newNotification", "to": map[string]any{"rooms": []any{"role:provider"}}, "data": map[string]any{"title": "to providers"}})
	send(a, "/api/events", map[string]any{"event": "newNotification", "to": map[string]any{"rooms": []any{"role:customer"}}, "data": map[string]any{"title": "to customers"}})

	cl = startNodeClient(t, "ws://"+c.addr+"/ws?token="+tok+"&since="+since, 5)
	cl.waitOpen()
	var titles []string
	for range 4 {
		m := cl.nextEvent()
		if m["event"] == "resumed" {
			t.Fatalf("resumed after %v, want four events first", titles)
		}
		titles = append(titles, eventData(m)["title"].(string))
	}
	if want := []string{"one", "two", "to all", "to providers"}; !equalStrings(titles, want) {
		t.Fatalf("replayed on C %v, want %v", titles, want)
	}
	if m := cl.nextEvent(); m["event"] != "resumed" || eventData(m)["recovered"] != true {
		t.Fatalf("after the replay: %v, want resumed recovered", m)
	}
}
