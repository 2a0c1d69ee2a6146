//go:build linux

package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// postTo is where the POSTs go when the connections are spread over several
// nodes (--post-to).
type postTo struct {
	mode  string // "rr", "local", "cross" or "node"
	node  int    // mode "node": this one
	nodes int
}

// parsePostTo reads --post-to: "rr" (round-robin), a node's index in --url,
// or, where each POST has one recipient (targeted), "local" (the
// recipient's node) or "cross" (the node after it).
func parsePostTo(s string, nodes int, targeted bool) (postTo, error) {
	p := postTo{mode: strings.TrimSpace(s), nodes: max(1, nodes)}
	switch p.mode {
	case "", "rr":
		p.mode = "rr"
		return p, nil
	case "local", "cross":
		if !targeted {
			return p, fmt.Errorf("--post-to %s: only for POSTs to one user (webhooks); want rr or a node index", s)
		}
		if p.mode == "cross" && p.nodes < 2 {
			return p, fmt.Errorf("--post-to cross needs at least two --url")
		}
		return p, nil
	}
	i, err := strconv.Atoi(p.mode)
	if err != nil || i < 0 || i >= p.nodes {
		return p, fmt.Errorf("--post-to %q: want rr, local, cross or a node index 0..%d", s, p.nodes-1)
	}
	p.mode, p.node = "node", i
	return p, nil
}

// pick is the node POST seq goes to; home is the node of its recipient (0
// for a broadcast, which has recipients on every node). Round-robin goes to
// (home + seq) mod nodes: each node takes 1/nodes of the POSTs, and for
// POSTs to one user 1 in nodes lands on the recipient's own node whatever
// the number of users, as behind a load balancer.
func (p postTo) pick(seq int64, home int) int {
	switch p.mode {
	case "node":
		return p.node
	case "local":
		return home
	case "cross":
		return (home + 1) % p.nodes
	}
	return int((int64(home)%int64(p.nodes) + seq%int64(p.nodes) + int64(p.nodes)) % int64(p.nodes))
}

func (p postTo) String() string {
	if p.mode == "node" {
		return "node " + strconv.Itoa(p.node)
	}
	return p.mode
}

// parsePIDs reads a comma-separated list of process ids ("" is none).
func parsePIDs(s string) ([]int, error) {
	var pids []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := strconv.Atoi(f)
		if err != nil || p <= 0 {
			return nil, fmt.Errorf("bad pid %q", f)
		}
		pids = append(pids, p)
	}
	return pids, nil
}

// serverPIDs reads --server-pid against the nodes: none, or one per --url.
func serverPIDs(s string, nodes int, required bool) ([]int, error) {
	pids, err := parsePIDs(s)
	if err != nil {
		return nil, fmt.Errorf("--server-pid: %w", err)
	}
	switch {
	case len(pids) == 0 && required:
		return nil, fmt.Errorf("--server-pid is required: the pid of each server, in --url order")
	case len(pids) != 0 && len(pids) != nodes:
		return nil, fmt.Errorf("--server-pid: %d pids for %d --url: want one per URL, in the same order", len(pids), nodes)
	}
	return pids, nil
}

// cpuEach is cpuTime of each pid; a process that is gone counts zero.
func cpuEach(pids []int) []time.Duration {
	out := make([]time.Duration, len(pids))
	for i, p := range pids {
		out[i], _ = cpuTime(p)
	}
	return out
}

// subDurations is a - b element by element.
func subDurations(a, b []time.Duration) []time.Duration {
	out := make([]time.Duration, len(a))
	for i := range a {
		out[i] = a[i]
		if i < len(b) {
			out[i] -= b[i]
		}
	}
	return out
}
