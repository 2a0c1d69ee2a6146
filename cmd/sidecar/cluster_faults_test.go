package main

import (
	"strconv"
	"strings"
	"testing"

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
