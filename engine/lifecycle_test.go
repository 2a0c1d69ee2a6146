package engine

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// An event published the moment the client has its 101 reaches it: the
// conn is indexed before the answer is queued, and the answer is the first
// thing on the wire.
func TestEventRightAfterConnectIsNotLost(t *testing.T) {
	n := startNode(t)
	for i := 0; i < 100; i++ {
		user := fmt.Sprintf("fresh-%d", i)
		c := n.dial(user)
		if _, _, err := n.e.Publish("hello", map[string]any{"i": i}, Target{Users: []string{user}}, false); err != nil {
			t.Fatal(err)
		}
		if m := c.mustEvent("hello"); m["data"].(map[string]any)["i"] != float64(i) {
			t.Fatalf("got %v", m)
		}
		c.conn.Close()
	}
}

// One event bigger than the whole outbound queue still reaches a conn with
// nothing queued, instead of closing every recipient as a slow consumer.
func TestFrameLargerThanQueueReachesIdleConn(t *testing.T) {
	n := startNode(t, func(c *Config) { c.Limits.OutboundQueueBytes = 4096 })
	c := n.dial("big")
	waitFor(t, 2*time.Second, "connection", func() bool { return n.e.Stats().Connections == 1 })
	status, resp := n.api("POST", "/api/socket-test/send/big", map[string]any{"pad": strings.Repeat("x", 10000)})
	if status != http.StatusAccepted || resp["delivered"] != float64(1) {
		t.Fatalf("send = %d %v", status, resp)
	}
	c.mustEvent("newNotification")
}

func TestEventsAPIRefusesInvalidUTF8(t *testing.T) {
	n := startNode(t)
	req, _ := http.NewRequest("POST", "http://"+n.addr+"/api/events",
		strings.NewReader("{\"event\":\"x\",\"to\":{\"all\":true},\"data\":\"\xff\xfe\"}"))
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d, want 400: text frames must be UTF-8", resp.StatusCode)
	}
}

// After a shutdown whose drain deadline passes with a peer that never
// answers the close, every descriptor and goroutine of the engine is gone.
func TestShutdownLeavesNoDescriptorsOrGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		// the test's store, closed by startNode's cleanup after this check
		goleak.IgnoreTopFunction("github.com/tidwall/buntdb.(*DB).backgroundManager"))
	before := openFDCount(t)
	n := startNode(t, func(c *Config) { c.DrainTimeout = 500 * time.Millisecond })
	for i := 0; i < 30; i++ {
		n.dial(fmt.Sprintf("u%d", i))
	}
	n.rawConn("silent") // like every client here, it never answers the close
	waitFor(t, 2*time.Second, "31 connections", func() bool { return n.e.Stats().Connections == 31 })
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	if open := n.e.openFDs.Load(); open != 0 {
		t.Fatalf("%d conns open after Serve returned", open)
	}
	// The clients' own sockets are the test's: close them, then count.
	http.DefaultClient.CloseIdleConnections()
	n.closeClients()
	waitFor(t, 5*time.Second, "descriptors back to the baseline", func() bool { return openFDCount(t) <= before })
}

func openFDCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}
