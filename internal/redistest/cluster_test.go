package redistest_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sidecar/sidecar/internal/redistest"
)

func TestCluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3)
	if len(c.Nodes()) != 3 || len(c.Addrs()) != 3 {
		t.Fatalf("%d nodes, %d addrs", len(c.Nodes()), len(c.Addrs()))
	}
	if c.URL() != c.Nodes()[0].URL() {
		t.Fatalf("URL = %q", c.URL())
	}
	for _, n := range c.Nodes() {
		info := do(t, n, "CLUSTER", "INFO")
		for _, want := range []string{"cluster_state:ok", "cluster_slots_assigned:16384", "cluster_known_nodes:3"} {
			if !strings.Contains(info, want) {
				t.Fatalf("%s: CLUSTER INFO lacks %s:\n%s", n.Addr(), want, info)
			}
		}
	}

	// Keys on every node: each node owns a third of the slots, and a key
	// on another node than the first is reached through MOVED.
	owners := map[string]bool{}
	for i := 0; len(owners) < 3 && i < 100; i++ {
		key := fmt.Sprintf("key%d", i)
		if got, err := c.Do("SET", key, "v"+key); err != nil || got != "OK" {
			t.Fatalf("SET %s: %q, %v", key, got, err)
		}
		if got, err := c.Do("GET", key); err != nil || got != "v"+key {
			t.Fatalf("GET %s: %q, %v", key, got, err)
		}
		owners[owner(t, c, key)] = true
	}
	if len(owners) != 3 {
		t.Fatalf("keys landed on %d nodes, want 3", len(owners))
	}

	// A killed master leaves its slots uncovered: the cluster fails (node
	// timeout 2 s), and comes back once the node is restarted.
	n := c.Nodes()[2]
	n.Kill()
	waitState(t, c.Nodes()[0], "cluster_state:fail")
	n.Restart()
	for _, n := range c.Nodes() {
		waitState(t, n, "cluster_state:ok")
	}
}

// owner is the address of the node that serves key's slot.
func owner(t *testing.T, c *redistest.Cluster, key string) string {
	t.Helper()
	first := c.Nodes()[0]
	slot := do(t, first, "CLUSTER", "KEYSLOT", key)
	for _, n := range c.Nodes() {
		// A node answers a key of its own slots, and MOVED for the others.
		if _, err := n.Do("GET", key); err == nil {
			return n.Addr()
		}
	}
	t.Fatalf("no node serves %s (slot %s)", key, slot)
	return ""
}

func waitState(t *testing.T, n *redistest.Server, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := n.Do("CLUSTER", "INFO")
		if err == nil && strings.Contains(info, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %s after 10 s: %v\n%s", n.Addr(), want, err, info)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
