package main

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidecar/sidecar/internal/redistest"
)

// roundRobin is a plain load balancer without sticky sessions: every
// request, and every WebSocket upgrade, goes to the next node.
func roundRobin(t *testing.T, nodes []*clusterNode) (addr string, served []*atomic.Int64) {
	t.Helper()
	var next atomic.Int64
	served = make([]*atomic.Int64, len(nodes))
	proxies := make([]*httputil.ReverseProxy, len(nodes))
	for i, n := range nodes {
		served[i] = new(atomic.Int64)
		target, _ := url.Parse("http://" + n.addr)
		proxies[i] = &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target); pr.Out.Host = pr.In.Host }, FlushInterval: -1}
	}
	lb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := int(next.Add(1)-1) % len(nodes)
		served[i].Add(1)
		proxies[i].ServeHTTP(w, r)
	}))
	t.Cleanup(lb.Close)
	return strings.TrimPrefix(lb.URL, "http://"), served
}

// socket.io-client with its default transports (long-polling, then the
// upgrade) and with polling alone, behind a round-robin load balancer over
// two nodes, so that its requests alternate between them: it connects,
// upgrades, gets what a third node publishes for it, and its acks; the
// node that does not own its session relays to the one that does.
func TestClusterSocketIOPollingWithoutStickySessions(t *testing.T) {
	needNode(t)
	r := redistest.Start(t)
	_, nodes := startClusterNodes(t, 3, r.URL())
	lbAddr, served := roundRobin(t, nodes[:2])
	admin := exampleToken(t, map[string]any{"sub": "admin", "role": "admin"})
	for _, tc := range []struct {
		name    string
		opts    map[string]any
		upgrade bool
	}{
		{"default transports", map[string]any{}, true},
		{"polling only", map[string]any{"transports": []string{"polling"}}, false},
	} {
		user := "sio-" + strings.ReplaceAll(tc.name, " ", "-")
		c := startSIOClient(t, "http://"+lbAddr, mergeOpts(tc.opts, map[string]any{"auth": map[string]any{"token": exampleToken(t, map[string]any{"sub": user, "role": "provider"})}}))
		connected, upgraded := false, false
		for !connected || upgraded != tc.upgrade {
			m := c.next()
			switch {
			case m["connect"] == true:
				connected = true
			case m["upgrade"] == "websocket" && tc.upgrade:
				upgraded = true
			default:
				t.Fatalf("%s: %v, want connect (and the upgrade)", tc.name, m)
			}
		}
		waitFor(t, 5*time.Second, user+" subscribed", func() bool {
			out, _ := r.Do("PUBSUB", "SHARDNUMSUB", "{sidecar}:u:"+user)
			return strings.HasSuffix(strings.TrimSpace(out), "1")
		})
		for i := range 3 { // several polls, each to the other node
			title := "n" + itoa(i)
			if st, resp := (&exampleNode{t: t, addr: nodes[2].addr}).post("/api/socket-test/send/"+user, admin, map[string]any{"title": title}); st != http.StatusAccepted {
				t.Fatalf("%s: send on the third node: %d %v", tc.name, st, resp)
			}
			if name, data := c.event(); name != "newNotification" || data["title"] != title {
				t.Fatalf("%s: %s %v, want %s", tc.name, name, data, title)
			}
		}
		c.do(map[string]any{"emit": "typing", "data": map[string]any{"to": "x"}, "ack": 1})
		if m := c.expect("ack"); m["args"] == nil {
			t.Fatalf("%s: ack %v", tc.name, m)
		}
		c.kill()
	}
	if served[0].Load() < 3 || served[1].Load() < 3 {
		t.Fatalf("the load balancer sent %d and %d requests to the nodes: not alternating", served[0].Load(), served[1].Load())
	}
	relayed := 0
	for _, n := range nodes[:2] {
		if strings.Contains(metricsText(t, n.addr), "sidecar_socketio_relayed_total 0\n") {
			continue
		}
		relayed++
	}
	if relayed == 0 {
		t.Fatal("no node relayed a request: the test did not cross nodes")
	}
}

// socket.io-client's connection state recovery across nodes: its transport
// dies, it reconnects through a round-robin balancer to the other node, and
// gets what was published meanwhile (on a third node) with
// socket.recovered true.
func TestClusterSocketIORecoveryOnAnotherNode(t *testing.T) {
	needNode(t)
	r := redistest.Start(t)
	_, nodes := startClusterNodes(t, 3, r.URL())
	lbAddr, served := roundRobin(t, nodes[:2])
	admin := exampleToken(t, map[string]any{"sub": "admin", "role": "admin"})
	user := "sio-recover"
	c := startSIOClient(t, "http://"+lbAddr, map[string]any{"transports": []string{"websocket"},
		"auth": map[string]any{"token": exampleToken(t, map[string]any{"sub": user, "role": "provider"})}})
	if m := c.expect("connect"); m["recovered"] != false {
		t.Fatalf("first connect: %v", m)
	}
	first := served[0].Load() + served[1].Load()
	send := func(title string) {
		t.Helper()
		if st, resp := (&exampleNode{t: t, addr: nodes[2].addr}).post("/api/socket-test/send/"+user, admin, map[string]any{"title": title}); st != http.StatusAccepted {
			t.Fatalf("send: %d %v", st, resp)
		}
	}
	waitFor(t, 5*time.Second, user+" subscribed", func() bool {
		out, _ := r.Do("PUBSUB", "SHARDNUMSUB", "{sidecar}:u:"+user)
		return strings.HasSuffix(strings.TrimSpace(out), "1")
	})
	send("one")
	if name, data := c.event(); name != "newNotification" || data["title"] != "one" {
		t.Fatalf("%s %v", name, data)
	}
	c.do(map[string]any{"blip": true})
	c.expect("disconnect")
	send("two")
	send("three")
	if m := c.expect("connect"); m["recovered"] != true {
		t.Fatalf("reconnect on the other node: %v, want recovered", m)
	}
	if served[0].Load()+served[1].Load() == first {
		t.Fatal("the reconnect did not go through the balancer")
	}
	for _, want := range []string{"two", "three"} {
		if name, data := c.event(); name != "newNotification" || data["title"] != want {
			t.Fatalf("after the reconnect: %s %v, want %s", name, data, want)
		}
	}
}
