package cluster

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/sidecar/sidecar/engine"
	"github.com/sidecar/sidecar/engine/store"
)

// Presence in the cluster. A user's sessions are the set <prefix>:pu:<user>
// of the nodes that hold one; a node's, the set <prefix>:nu:<id> of its
// users. Joining and leaving are each one script on the user's set, so that
// of several nodes changing it at once exactly one sees it go from empty
// to not (and tells the rules the user is online), and exactly one sees it
// go empty (and tells them offline).
var (
	// KEYS[1] the user's set, ARGV[1] the node: 1 when it was empty.
	joinScript = rueidis.NewLuaScript(`
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 1 then return 1 end
return 0`)
	// KEYS[1] the user's set, ARGV[1] the node: 1 when it is now empty.
	leaveScript = rueidis.NewLuaScript(`
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 0 then return 1 end
return 0`)
)

var _ engine.ClusterPresence = (*Node)(nil)

// Apply records this node's session changes in Redis, in order, and
// reports which changed the user's presence in the cluster.
func (n *Node) Apply(changes []store.SessionChange) ([]bool, error) {
	n.presMu.Lock()
	for _, ch := range changes {
		if ch.Online {
			n.here[ch.User] = struct{}{}
		} else {
			delete(n.here, ch.User)
		}
	}
	n.presMu.Unlock()
	c, ok := n.usable()
	if !ok || n.resync.Load() {
		// Told again, all of it, when Redis is back.
		n.resync.Store(true)
		return nil, errDown
	}
	changed, err := n.applyTo(c, changes)
	if err != nil {
		n.failed(err)
		n.resync.Store(true)
		return nil, err
	}
	return changed, nil
}

// applyTo runs changes' scripts in one round trip, with each one's
// membership of this node's set and, for an offline, the last-seen time.
func (n *Node) applyTo(c rueidis.Client, changes []store.SessionChange) ([]bool, error) {
	ctx, cancel := n.ctx()
	defer cancel()
	nu := n.key("nu", n.id)
	execs := make([]rueidis.LuaExec, len(changes))
	side := make(rueidis.Commands, 0, 2*len(changes))
	for i, ch := range changes {
		execs[i] = rueidis.LuaExec{Keys: []string{n.key("pu", ch.User)}, Args: []string{n.id}}
		if ch.Online {
			side = append(side, c.B().Sadd().Key(nu).Member(ch.User).Build())
		} else {
			side = append(side, c.B().Srem().Key(nu).Member(ch.User).Build())
			side = append(side, c.B().Hset().Key(n.key("us", ch.User)).FieldValue().
				FieldValue("l", strconv.FormatInt(ch.At.UnixMilli(), 10)).Build())
		}
	}
	// The node's set first: a node that dies in between leaves a member
	// whose user's set lacks it, which ending its sessions skips.
	for _, r := range c.DoMulti(ctx, side...) {
		if err := r.Error(); err != nil {
			return nil, err
		}
	}
	changed := make([]bool, len(changes))
	for i, r := range runScripts(ctx, c, changes, execs) {
		v, err := r.AsInt64()
		if err != nil {
			return nil, err
		}
		changed[i] = v == 1
	}
	return changed, nil
}

// runScripts runs each change's join or leave script, in order.
func runScripts(ctx context.Context, c rueidis.Client, changes []store.SessionChange, execs []rueidis.LuaExec) []rueidis.RedisResult {
	out := make([]rueidis.RedisResult, 0, len(changes))
	for i := 0; i < len(changes); {
		j := i
		for j < len(changes) && changes[j].Online == changes[i].Online {
			j++
		}
		s := leaveScript
		if changes[i].Online {
			s = joinScript
		}
		out = append(out, s.ExecMulti(ctx, c, execs[i:j]...)...)
		i = j
	}
	return out
}

// Online reports which of users have a session on some node.
func (n *Node) Online(users []string) (map[string]bool, error) {
	c, ok := n.usable()
	if !ok {
		return nil, nil // alone: the node's own answer stands
	}
	ctx, cancel := n.ctx()
	defer cancel()
	cmds := make(rueidis.Commands, len(users))
	for i, u := range users {
		cmds[i] = c.B().Scard().Key(n.key("pu", u)).Build()
	}
	out := make(map[string]bool, len(users))
	for i, r := range c.DoMulti(ctx, cmds...) {
		v, err := r.AsInt64()
		if err != nil {
			n.failed(err)
			return nil, nil
		}
		out[users[i]] = v > 0
	}
	return out, nil
}

// runMonitor pings Redis twice a heartbeat, heartbeats, tells Redis this
// node's presence again after an outage, and ends the sessions of the nodes
// that stopped heartbeating.
func (n *Node) runMonitor(ctx context.Context) {
	tick := time.NewTicker(n.opt.Heartbeat / 2)
	defer tick.Stop()
	var lastBeat time.Time
	// sweepAfter: no node is declared dead until this node has been up for
	// a node timeout, so that after an outage every node heartbeats again
	// before any is judged by a heartbeat that the outage stopped.
	sweepAfter := time.Now().Add(n.opt.NodeTimeout)
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.upChanged:
			sweepAfter = time.Now().Add(n.opt.NodeTimeout)
		case <-tick.C:
		}
		c := n.redis()
		if c == nil {
			continue
		}
		pctx, cancel := n.ctx()
		err := c.Do(pctx, c.B().Ping().Build()).Error()
		cancel()
		if err != nil {
			n.failed(err)
			continue
		}
		if !n.up.Load() {
			n.setUp(true)
			sweepAfter = time.Now().Add(n.opt.NodeTimeout)
			n.log.Info("redis is back")
		}
		if time.Since(lastBeat) >= n.opt.Heartbeat {
			lastBeat = time.Now()
			if err := n.heartbeat(c, n.opt.NodeTimeout); err != nil {
				n.failed(err)
				continue
			}
		}
		if n.epochDue.Load() {
			if err := n.ensureEpoch(c); err != nil {
				n.failed(err)
				continue
			}
			n.epochDue.Store(false)
		}
		if n.resync.Load() {
			if err := n.reestablish(c); err != nil {
				n.failed(err)
				continue
			}
		}
		if time.Now().After(sweepAfter) {
			if err := n.sweep(c); err != nil {
				n.failed(err)
			}
		}
	}
}

// heartbeat says this node is alive for ttl.
func (n *Node) heartbeat(c rueidis.Client, ttl time.Duration) error {
	ctx, cancel := n.ctx()
	defer cancel()
	st := nodeStats{ID: n.id, Beat: time.Now().UnixMilli()}
	if n.teller != nil {
		st.Connections, st.Users = n.teller.Counts()
	}
	beat, _ := json.Marshal(st)
	cmds := rueidis.Commands{
		c.B().Set().Key(n.key("node", n.id)).Value(string(beat)).Px(ttl).Build(),
		c.B().Sadd().Key(n.key("nodes")).Member(n.id).Build(),
	}
	if n.opt.Advertise != "" {
		cmds = append(cmds, c.B().Set().Key(n.key("tok", n.relay.token)).Value(n.opt.Advertise).Px(ttl).Build())
	}
	for _, r := range c.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			return err
		}
	}
	return nil
}

// reestablish tells Redis this node's sessions again after an outage (or a
// Redis that lost its data): the users it holds join again, those it no
// longer holds leave. A user whose presence in the cluster changed with it
// (another node ended their session meanwhile, as this node's heartbeat
// stopped) is told online again through the rules; one who left while
// Redis was away and whom no node holds goes offline.
func (n *Node) reestablish(c rueidis.Client) error {
	n.resync.Store(false)
	n.presMu.Lock()
	here := make([]string, 0, len(n.here))
	for u := range n.here {
		here = append(here, u)
	}
	n.presMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*n.opt.Timeout)
	defer cancel()
	before, err := c.Do(ctx, c.B().Smembers().Key(n.key("nu", n.id)).Build()).AsStrSlice()
	if err != nil {
		n.resync.Store(true)
		return err
	}
	now := time.Now()
	var changes []store.SessionChange
	for _, u := range here {
		changes = append(changes, store.SessionChange{User: u, Online: true, At: now})
	}
	n.presMu.Lock()
	for _, u := range before {
		if _, ok := n.here[u]; !ok {
			changes = append(changes, store.SessionChange{User: u, At: now})
		}
	}
	n.presMu.Unlock()
	for len(changes) > 0 {
		k := min(len(changes), 1000)
		changed, err := n.applyTo(c, changes[:k])
		if err != nil {
			n.resync.Store(true)
			return err
		}
		for i, ch := range changes[:k] {
			if changed[i] && n.teller != nil {
				n.teller.TellPresence(ch.User, ch.Online, now)
			}
		}
		changes = changes[k:]
	}
	n.log.Info("presence re-established in redis", "users", len(here))
	return nil
}

// sweep ends the sessions of every node whose heartbeat expired: each of
// its users whom no other node holds goes offline, through the rules of
// the node that ended it (one, by the scripts' answers), now.
func (n *Node) sweep(c rueidis.Client) error {
	ctx, cancel := n.ctx()
	ids, err := c.Do(ctx, c.B().Smembers().Key(n.key("nodes")).Build()).AsStrSlice()
	cancel()
	if err != nil {
		return err
	}
	cmds := make(rueidis.Commands, len(ids))
	for i, id := range ids {
		cmds[i] = c.B().Exists().Key(n.key("node", id)).Build()
	}
	ctx, cancel = n.ctx()
	res := c.DoMulti(ctx, cmds...)
	cancel()
	live := 0
	for i, r := range res {
		v, err := r.AsInt64()
		if err != nil {
			return err
		}
		if v == 1 || ids[i] == n.id {
			live++
			continue
		}
		if err := n.endNode(c, ids[i]); err != nil {
			return err
		}
	}
	n.m.nodes.Set(float64(live))
	return nil
}

// endNode ends the sessions of node id, which stopped heartbeating, if
// this node wins the claim to do it.
func (n *Node) endNode(c rueidis.Client, id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*n.opt.Timeout)
	defer cancel()
	claimed, err := c.Do(ctx, c.B().Set().Key(n.key("sweep", id)).Value(n.id).Nx().Px(30*time.Second).Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return nil // another node is at it
	}
	if err != nil || claimed != "OK" {
		return err
	}
	nu := n.key("nu", id)
	now := time.Now()
	offline := 0
	var cursor uint64
	for {
		e, err := c.Do(ctx, c.B().Sscan().Key(nu).Cursor(cursor).Count(1000).Build()).AsScanEntry()
		if err != nil {
			return err
		}
		if len(e.Elements) > 0 {
			execs := make([]rueidis.LuaExec, len(e.Elements))
			for i, u := range e.Elements {
				execs[i] = rueidis.LuaExec{Keys: []string{n.key("pu", u)}, Args: []string{id}}
			}
			for i, r := range leaveScript.ExecMulti(ctx, c, execs...) {
				v, err := r.AsInt64()
				if err != nil {
					return err
				}
				if v == 1 {
					offline++
					u := e.Elements[i]
					c.Do(ctx, c.B().Hset().Key(n.key("us", u)).FieldValue().FieldValue("l", strconv.FormatInt(now.UnixMilli(), 10)).Build())
					if n.teller != nil {
						n.teller.TellPresence(u, false, now)
					}
				}
			}
		}
		if cursor = e.Cursor; cursor == 0 {
			break
		}
	}
	for _, r := range c.DoMulti(ctx, c.B().Del().Key(nu).Build(), c.B().Srem().Key(n.key("nodes")).Member(id).Build()) {
		if err := r.Error(); err != nil {
			return err
		}
	}
	n.log.Warn("a node stopped heartbeating: its sessions are ended", "dead_node", id, "users_offline", offline)
	return nil
}

// leave runs when the node stops: its heartbeat expires after grace
// instead of node_timeout, so that the others end its sessions then (a
// user who reconnected to another node meanwhile stays online).
func (n *Node) leave(grace time.Duration) {
	c, ok := n.usable()
	if !ok {
		return
	}
	if err := n.heartbeat(c, max(grace, time.Millisecond)); err != nil {
		n.log.Warn("leaving the cluster: heartbeat not shortened; the others end this node's sessions after node_timeout", "err", err)
	}
}

// nodeStats is what a node's heartbeat says of it.
type nodeStats struct {
	ID          string `json:"id"`
	Connections int64  `json:"connections"`
	Users       int64  `json:"users"`
	Beat        int64  `json:"heartbeat_ms"` // unix ms of the heartbeat
}

// Stats is the cluster's part of the stats answer: every node that
// heartbeats, with its figures as of its last heartbeat, and their sums (a
// user with connections on two nodes counts on each).
func (n *Node) Stats() any {
	out := map[string]any{"node": n.id, "redis": n.up.Load()}
	c, ok := n.usable()
	if !ok {
		return out
	}
	ctx, cancel := n.ctx()
	defer cancel()
	ids, err := c.Do(ctx, c.B().Smembers().Key(n.key("nodes")).Build()).AsStrSlice()
	if err != nil {
		n.failed(err)
		return out
	}
	cmds := make(rueidis.Commands, len(ids))
	for i, id := range ids {
		cmds[i] = c.B().Get().Key(n.key("node", id)).Build()
	}
	nodes := []nodeStats{}
	var conns, users int64
	for _, r := range c.DoMulti(ctx, cmds...) {
		v, err := r.ToString()
		var st nodeStats
		if err != nil || json.Unmarshal([]byte(v), &st) != nil {
			continue // gone, or not yet swept
		}
		nodes = append(nodes, st)
		conns += st.Connections
		users += st.Users
	}
	slices.SortFunc(nodes, func(a, b nodeStats) int { return strings.Compare(a.ID, b.ID) })
	out["nodes"], out["connections"], out["users"] = nodes, conns, users
	return out
}
