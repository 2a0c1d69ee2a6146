package cluster

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
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
	c, ok := n.usable()
	var err error
	if ok && n.resync.Load() {
		// Apply runs on the presence writer, like reestablish: first this
		// node's presence as it was, then these changes.
		err = n.reestablish(c)
	}
	n.subMu.Lock()
	for _, ch := range changes {
		setFlag(n.users, ch.User, userSession, ch.Online)
	}
	n.subMu.Unlock()
	if !ok || err != nil {
		// Told again, all of it, when Redis is back.
		n.resync.Store(true)
		return nil, cmp.Or(err, errDown)
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

// runHeartbeat pings Redis twice a heartbeat and heartbeats: nothing else
// runs on it, so that no sweep or re-establishing, however long, delays
// this node's heartbeat past its node timeout.
func (n *Node) runHeartbeat(ctx context.Context) {
	tick := time.NewTicker(n.opt.Heartbeat / 2)
	defer tick.Stop()
	var lastBeat time.Time
	first := true
	for {
		select {
		case <-ctx.Done():
			return
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
			n.m.errors.Inc()
			n.setUp(false) // the ping alone decides that Redis is down
			continue
		}
		if !n.up.Load() {
			n.setUp(true)
			n.log.Info("redis is back")
		}
		if time.Since(lastBeat) >= n.opt.Heartbeat {
			if err := n.heartbeat(c, n.opt.NodeTimeout, first); err != nil {
				n.failed(err)
				continue
			}
			lastBeat, first = time.Now(), false
		}
	}
}

// runMonitor checks the replay epoch, tells Redis this node's presence
// again after an outage, and ends the sessions of the nodes that stopped
// heartbeating.
func (n *Node) runMonitor(ctx context.Context) {
	tick := time.NewTicker(n.opt.Heartbeat)
	defer tick.Stop()
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
			continue
		case <-tick.C:
		}
		c, ok := n.usable()
		if !ok {
			sweepAfter = time.Now().Add(n.opt.NodeTimeout)
			continue
		}
		if n.epochDue.Load() {
			if err := n.ensureEpoch(c); err != nil {
				n.failed(err)
				continue
			}
			n.epochDue.Store(false)
		}
		if n.resync.Load() && n.teller != nil {
			// On the presence writer, in order with its changes (Apply).
			n.teller.InPresenceOrder(func() { n.reestablish(c) })
		}
		if time.Now().After(sweepAfter) {
			if err := n.sweep(ctx, c); err != nil {
				n.failed(err)
			}
		}
	}
}

// heartbeat says this node is alive for ttl. A heartbeat that finds its
// key gone, or this node no longer among the nodes (after the first), means
// this node was silent past its timeout (a stall, a pause, a partition)
// and the others may have ended its sessions: it tells Redis its presence
// again (reestablish). One that finds another node's token under its id
// means two nodes share a node_id.
func (n *Node) heartbeat(c rueidis.Client, ttl time.Duration, first bool) error {
	ctx, cancel := n.ctx()
	defer cancel()
	st := nodeStats{ID: n.id, Token: n.relay.token, Beat: time.Now().UnixMilli()}
	if n.teller != nil {
		st.Connections, st.Users = n.teller.Counts()
	}
	beat, _ := json.Marshal(st)
	cmds := rueidis.Commands{
		c.B().Set().Key(n.key("node", n.id)).Value(string(beat)).Get().Px(ttl).Build(),
		c.B().Sadd().Key(n.key("nodes")).Member(n.id).Build(),
	}
	if n.opt.Advertise != "" {
		cmds = append(cmds, c.B().Set().Key(n.key("tok", n.relay.token)).Value(n.opt.Advertise).Px(ttl).Build())
	}
	res := c.DoMulti(ctx, cmds...)
	for _, r := range res[1:] {
		if err := r.Error(); err != nil {
			return err
		}
	}
	prev, err := res[0].ToString()
	switch {
	case rueidis.IsRedisNil(err):
		if !first {
			n.resync.Store(true)
			n.log.Warn("this node's heartbeat had expired (it was silent past node_timeout): telling Redis its presence again")
		}
	case err != nil:
		return err
	default:
		var old nodeStats
		if json.Unmarshal([]byte(prev), &old) == nil && old.Token != "" && old.Token != n.relay.token {
			n.log.Error("ANOTHER NODE HEARTBEATS WITH THIS NODE'S node_id: give every node its own broker.node_id", "node_id", n.id)
		}
	}
	if added, err := res[1].AsInt64(); err == nil && added == 1 && !first {
		n.resync.Store(true)
	}
	return nil
}

// reestablish tells Redis this node's sessions again after an outage, a
// Redis that lost its data, or a silence that let the others end them: the
// users it holds join again, those it no longer holds leave. It runs on the
// presence writer (through Teller.Do, or from Apply), so no change of the
// node's own runs meanwhile. The rules are told only what they have not
// heard: while Redis was away this node decided alone and told its own
// changes, so the leaves are quiet; the joins are quiet too unless another
// node ended this node's sessions meanwhile (it marked it), and the users
// it sent offline are told online again.
func (n *Node) reestablish(c rueidis.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*n.opt.Timeout)
	defer cancel()
	res := c.DoMulti(ctx,
		c.B().Exists().Key(n.key("sweep", n.id)).Build(),
		c.B().Exists().Key(n.key("swept", n.id)).Build(),
		c.B().Smembers().Key(n.key("nu", n.id)).Build())
	sweeping, err1 := res[0].AsInt64()
	swept, err2 := res[1].AsInt64()
	before, err3 := res[2].AsStrSlice()
	if err := errors.Join(err1, err2, err3); err != nil {
		n.failed(err)
		return err
	}
	if sweeping == 1 {
		return errBeingSwept // another node is ending this node's sessions: after it
	}
	now := time.Now()
	n.subMu.Lock()
	var changes []store.SessionChange
	for u, st := range n.users {
		if st&userSession != 0 {
			changes = append(changes, store.SessionChange{User: u, Online: true, At: now})
		}
	}
	held := len(changes)
	for _, u := range before {
		if n.users[u]&userSession == 0 {
			changes = append(changes, store.SessionChange{User: u, At: now})
		}
	}
	n.subMu.Unlock()
	told := 0
	for i := 0; i < len(changes); i += 1000 {
		chunk := changes[i:min(i+1000, len(changes))]
		changed, err := n.applyTo(c, chunk)
		if err != nil {
			n.failed(err)
			return err
		}
		for j, ch := range chunk {
			if changed[j] && ch.Online && swept == 1 && n.teller != nil {
				n.teller.TellPresence(ch.User, true, now)
				told++
			}
		}
	}
	if swept == 1 {
		ctx, cancel := n.ctx()
		c.Do(ctx, c.B().Del().Key(n.key("swept", n.id)).Build())
		cancel()
	}
	n.flushStatuses(c)
	n.resync.Store(false)
	n.log.Info("presence re-established in redis", "users", held, "told_online_again", told)
	return nil
}

var errBeingSwept = errors.New("cluster: another node is ending this node's sessions")

// sweep ends the sessions of every node whose heartbeat expired: each of
// its users whom no other node holds goes offline, through the rules of
// the node that ended it (one, by the scripts' answers), now.
func (n *Node) sweep(ctx context.Context, c rueidis.Client) error {
	rctx, cancel := n.ctx()
	ids, err := c.Do(rctx, c.B().Smembers().Key(n.key("nodes")).Build()).AsStrSlice()
	cancel()
	if err != nil {
		return err
	}
	cmds := make(rueidis.Commands, len(ids))
	for i, id := range ids {
		cmds[i] = c.B().Exists().Key(n.key("node", id)).Build()
	}
	rctx, cancel = n.ctx()
	res := c.DoMulti(rctx, cmds...)
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
		if err := n.endNode(ctx, c, ids[i]); err != nil {
			return err
		}
	}
	n.m.nodes.Set(float64(live))
	return nil
}

// endNode ends the sessions of node id, which stopped heartbeating, if
// this node wins the claim to do it. Each batch of its users leaves on the
// presence writer, in order with this node's own changes: a user who
// reconnects here meanwhile is told online after, never before, the
// offline.
func (n *Node) endNode(ctx context.Context, c rueidis.Client, id string) error {
	claim := n.key("sweep", id)
	rctx, cancel := n.ctx()
	claimed, err := c.Do(rctx, c.B().Set().Key(claim).Value(n.id).Nx().Px(30*time.Second).Build()).ToString()
	cancel()
	if rueidis.IsRedisNil(err) {
		return nil // another node is at it
	}
	if err != nil || claimed != "OK" {
		return err
	}
	release := func() {
		rctx, cancel := n.ctx()
		c.Do(rctx, c.B().Del().Key(claim).Build())
		cancel()
	}
	// Back meanwhile (a stall, not a death): it keeps its sessions.
	rctx, cancel = n.ctx()
	back, err := c.Do(rctx, c.B().Exists().Key(n.key("node", id)).Build()).AsInt64()
	cancel()
	if err != nil || back == 1 {
		release()
		return err
	}
	nu := n.key("nu", id)
	offline := 0
	var cursor uint64
	for {
		rctx, cancel := n.ctx()
		e, err := c.Do(rctx, c.B().Sscan().Key(nu).Cursor(cursor).Count(1000).Build()).AsScanEntry()
		cancel()
		if err != nil {
			return err // the claim expires; another sweep finishes it
		}
		if len(e.Elements) > 0 {
			var lerr error
			ran := n.teller != nil && n.teller.InPresenceOrder(func() { offline, lerr = n.leaveAll(c, id, e.Elements, offline) })
			if !ran || lerr != nil {
				return lerr // shutting down, or Redis failed: left to another sweep
			}
		}
		if cursor = e.Cursor; cursor == 0 || ctx.Err() != nil {
			break
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	rctx, cancel = n.ctx()
	defer cancel()
	for _, r := range c.DoMulti(rctx,
		c.B().Del().Key(nu).Build(),
		c.B().Srem().Key(n.key("nodes")).Member(id).Build(),
		c.B().Set().Key(n.key("swept", id)).Value(n.id).Px(10*time.Minute).Build(),
		c.B().Del().Key(claim).Build()) {
		if err := r.Error(); err != nil {
			return err
		}
	}
	n.log.Warn("a node stopped heartbeating: its sessions are ended", "dead_node", id, "users_offline", offline)
	return nil
}

// leaveAll ends node id's sessions of users, on the presence writer: those
// whom no node holds now go offline through the rules.
func (n *Node) leaveAll(c rueidis.Client, id string, users []string, offline int) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*n.opt.Timeout)
	defer cancel()
	execs := make([]rueidis.LuaExec, len(users))
	for i, u := range users {
		execs[i] = rueidis.LuaExec{Keys: []string{n.key("pu", u)}, Args: []string{id}}
	}
	now := time.Now()
	var seen rueidis.Commands
	var gone []string
	for i, r := range leaveScript.ExecMulti(ctx, c, execs...) {
		v, err := r.AsInt64()
		if err != nil {
			return offline, err
		}
		if v == 1 {
			gone = append(gone, users[i])
			seen = append(seen, c.B().Hset().Key(n.key("us", users[i])).FieldValue().FieldValue("l", strconv.FormatInt(now.UnixMilli(), 10)).Build())
		}
	}
	if len(seen) > 0 {
		c.DoMulti(ctx, seen...) // last seen: a failure loses it, not the offline
	}
	for _, u := range gone {
		n.teller.TellPresence(u, false, now)
	}
	return offline + len(gone), nil
}

// leave runs when the node stops: its heartbeat expires after grace
// instead of node_timeout, so that the others end its sessions then (a
// user who reconnected to another node meanwhile stays online).
func (n *Node) leave(grace time.Duration) {
	c, ok := n.usable()
	if !ok {
		return
	}
	if err := n.heartbeat(c, max(grace, time.Millisecond), true); err != nil {
		n.log.Warn("leaving the cluster: heartbeat not shortened; the others end this node's sessions after node_timeout", "err", err)
	}
}

// nodeStats is what a node's heartbeat says of it.
type nodeStats struct {
	ID          string `json:"id"`
	Token       string `json:"token"` // its polling session ids' prefix; also tells two nodes with one id apart
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
