package redistest

import (
	"strings"
	"testing"
	"time"
)

const clusterTimeout = time.Minute // StartCluster: until every node says cluster_state:ok

// Cluster is a Redis Cluster of masters without replicas, each a Server of
// its own.
type Cluster struct {
	nodes []*Server
}

// StartCluster starts shards masters (at least 3, as redis-cli --cluster
// create requires), joins them into one cluster over all 16384 slots and
// waits until every node reports cluster_state:ok, for 20 s at most.
func StartCluster(t testing.TB, shards int) *Cluster {
	t.Helper()
	if shards < 3 {
		t.Fatalf("redistest: StartCluster(%d): a cluster needs at least 3 masters", shards)
	}
	c := &Cluster{}
	for range shards {
		c.nodes = append(c.nodes, Start(t,
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000"))
	}
	first := c.nodes[0]
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	// Joining waits for the nodes to agree, a second a round: slow on a
	// busy machine (CI runs the packages' tests at once).
	if _, err := runCLIWithin(time.Minute, first.cli, first.port, nil, args...); err != nil {
		t.Fatalf("redistest: cluster create: %v", err)
	}

	deadline := time.Now().Add(clusterTimeout)
	for _, n := range c.nodes {
		for {
			info, err := n.Do("CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("redistest: node %s not cluster_state:ok after %v: %v\n%s\n%s",
					n.Addr(), clusterTimeout, err, info, n.logTail())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c
}

// Addrs are the nodes' addresses, "127.0.0.1:port" each.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// URL is a redis:// URL of the first node; a cluster client finds the
// others from it.
func (c *Cluster) URL() string { return c.nodes[0].URL() }

// Nodes are the cluster's servers, for a test to kill, pause or restart
// one of them.
func (c *Cluster) Nodes() []*Server { return c.nodes }

// Do runs one command with redis-cli -c against the first node, following
// MOVED and ASK redirections to the node that holds the key.
func (c *Cluster) Do(args ...string) (string, error) {
	n := c.nodes[0]
	return runCLI(n.cli, n.port, []string{"-c"}, args...)
}
