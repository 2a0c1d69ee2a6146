package cluster

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/sidecar/sidecar/engine"
)

// The node's per-user state is one map, users: for each user, whether
// their channel is wanted (a connection of theirs is here), whether it is
// subscribed on the subscriber's current connection, and whether they have
// a session here as Apply last heard (presence.go). Keyed by the user id
// the engine gives (no copy): a node holds a user in one small entry.
// Rooms have the same first two states in roomSubs. A key in no state has
// no entry. Everything under subMu.
const (
	chWanted     = 1
	chSubscribed = 2
	userSession  = 4 // users only
)

// setFlag sets or clears f in m[key], deleting an entry left with none.
func setFlag(m map[string]uint8, key string, f uint8, on bool) {
	st := m[key]
	if on {
		st |= f
	} else {
		st &^= f
	}
	if st == 0 {
		delete(m, key)
	} else {
		m[key] = st
	}
}

// subChange records that user has (here) or no longer has a connection on
// this node. Called by the partitions, in order for each user: it never
// waits.
func (n *Node) subChange(user string, here bool) {
	n.subMu.Lock()
	setFlag(n.users, user, chWanted, here)
	n.pendingUsers[user] = struct{}{}
	n.subMu.Unlock()
	n.wakeSubscriber()
}

// roomChange records that partition part has its first member of room
// (here), or no longer any: the node wants the room's channel while any
// partition has a member.
func (n *Node) roomChange(room string, part int, here bool) {
	n.subMu.Lock()
	was := n.rooms[room]
	now := was &^ (1 << uint(part))
	if here {
		now = was | 1<<uint(part)
	}
	if now == 0 {
		delete(n.rooms, room)
	} else {
		n.rooms[room] = now
	}
	changed := (was == 0) != (now == 0)
	if changed {
		setFlag(n.roomSubs, room, chWanted, now != 0)
		n.pendingRooms[room] = struct{}{}
	}
	n.subMu.Unlock()
	if changed {
		n.wakeSubscriber()
	}
}

func (n *Node) wakeSubscriber() {
	select {
	case n.subWake <- struct{}{}:
	default:
	}
}

// clearPending empties the pending sets; one grown by a connect storm is
// let go. Under subMu.
func (n *Node) clearPending() {
	for _, p := range []*map[string]struct{}{&n.pendingUsers, &n.pendingRooms} {
		if len(*p) > 1024 {
			*p = make(map[string]struct{})
		} else {
			clear(*p)
		}
	}
}

// toSubscribe marks, in m, the keys whose channel is wanted and not
// subscribed as subscribed, and those subscribed and no longer wanted as
// not, among keys (all of m when keys is nil), and returns their channels.
func toSubscribe(m map[string]uint8, keys map[string]struct{}, prefix string, on, off []string) ([]string, []string) {
	visit := func(k string, st uint8) {
		switch st & (chWanted | chSubscribed) {
		case chWanted:
			m[k] = st | chSubscribed
			on = append(on, prefix+k)
		case chSubscribed:
			setFlag(m, k, chSubscribed, false)
			off = append(off, prefix+k)
		}
	}
	if keys == nil {
		for k, st := range m {
			visit(k, st)
		}
		return on, off
	}
	for k := range keys {
		visit(k, m[k])
	}
	return on, off
}

// subscribeBatch is the most channels of one SSUBSCRIBE.
const subscribeBatch = 1000

// runSubscriber holds the node's subscriptions on one dedicated connection:
// the broadcast channel and the channel of every user with a connection
// here. When the connection breaks (Redis restarted, a failover), it takes
// a new one and subscribes everything again, retrying every 250 ms.
func (n *Node) runSubscriber(ctx context.Context) {
	first := true
	for ctx.Err() == nil {
		c := n.redis()
		if c == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if err := n.subscribed(ctx, c, first); err != nil && ctx.Err() == nil {
			n.failed(err)
			n.log.Warn("subscriptions lost; subscribing again", "err", err)
		}
		first = false
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// subscribed subscribes on a new dedicated connection and keeps it up to
// date until it breaks or ctx ends.
func (n *Node) subscribed(ctx context.Context, c rueidis.Client, first bool) error {
	dc, _ := c.Dedicate()
	// Closed, not put back: putting it back unsubscribes, which waits on a
	// Redis that may be paused.
	defer dc.Close()
	moved := make(chan struct{}, 1)
	lost := dc.SetPubSubHooks(rueidis.PubSubHooks{
		OnMessage: n.receive,
		OnSubscription: func(s rueidis.PubSubSubscription) {
			// The node never leaves the broadcast channel: Redis did, as the
			// slot moved (a reshard, a failover of a Redis Cluster), and
			// rueidis does not count it as a broken connection. Subscribe
			// again, where the slot now lives.
			if s.Kind == "sunsubscribe" && s.Channel == n.chBroadcast {
				select {
				case moved <- struct{}{}:
				default:
				}
			}
		},
	})
	// The whole set, and pending cleared: this connection starts from it.
	n.subMu.Lock()
	for _, m := range []map[string]uint8{n.users, n.roomSubs} {
		for k := range m {
			setFlag(m, k, chSubscribed, false) // a connection now gone
		}
	}
	chans := []string{n.chBroadcast}
	chans, _ = toSubscribe(n.users, nil, n.chUser, chans, nil)
	chans, _ = toSubscribe(n.roomSubs, nil, n.chRoom, chans, nil)
	n.clearPending()
	n.subMu.Unlock()
	if err := n.subscribe(dc, chans, false); err != nil {
		return err
	}
	n.setUp(true)
	if !first {
		n.m.reconnects.Inc()
		n.log.Info("subscriptions re-established", "channels", len(chans))
	}
	chans = nil // not held for the connection's life
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-lost:
			if err == nil {
				err = errDown
			}
			return err
		case <-moved:
			return errMoved
		case <-n.subWake:
		}
		n.subMu.Lock()
		on, off := toSubscribe(n.users, n.pendingUsers, n.chUser, nil, nil)
		on, off = toSubscribe(n.roomSubs, n.pendingRooms, n.chRoom, on, off)
		n.clearPending()
		n.subMu.Unlock()
		if err := n.subscribe(dc, on, false); err != nil {
			return err
		}
		if err := n.subscribe(dc, off, true); err != nil {
			return err
		}
	}
}

func (n *Node) subscribe(dc rueidis.DedicatedClient, chans []string, un bool) error {
	for len(chans) > 0 {
		k := min(len(chans), subscribeBatch)
		cmd := dc.B().Ssubscribe().Channel(chans[:k]...).Build()
		if un {
			cmd = dc.B().Sunsubscribe().Channel(chans[:k]...).Build()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 4*n.opt.Timeout)
		err := dc.Do(ctx, cmd).Error()
		cancel()
		if err != nil {
			return err
		}
		chans = chans[k:]
	}
	return nil
}

var errMoved = errors.New("cluster: the channels' slot moved")

// recvQueue bounds what waits for the hub; past it, dropped and counted.
const recvQueue = 16384

// receive takes what another node published. It runs on the subscriber
// connection's reading goroutine, one message at a time in the order Redis
// sent them, and never waits: the hub gets them from runDeliverer, in the
// same order.
func (n *Node) receive(pm rueidis.PubSubMessage) {
	env, err := decodeEnvelope(pm.Message)
	if err != nil {
		n.m.dropped.WithLabelValues("malformed").Inc()
		return
	}
	if env.origin == n.id {
		return // delivered here when it was published
	}
	if user, toUser := strings.CutPrefix(pm.Channel, n.chUser); toUser {
		if env.kind == kindRooms && user != env.user {
			return
		}
		if env.kind == kindMessage {
			// A user's channel: that user's copy, whatever else it names.
			env.msg.To = engine.Target{Users: []string{user}, Except: env.msg.To.Except}
		}
	} else if room, toRoom := strings.CutPrefix(pm.Channel, n.chRoom); toRoom && env.kind == kindMessage {
		env.msg.To = engine.Target{Rooms: []string{room}, Except: env.msg.To.Except}
	} else if env.kind == kindRooms || pm.Channel != n.chBroadcast {
		return // room changes go on their user's channel only
	}
	select {
	case n.recv <- &env:
	default:
		n.m.dropped.WithLabelValues("receive_queue_full").Inc()
	}
}

// runDeliverer hands what other nodes published to this node's hub.
func (n *Node) runDeliverer(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case env := <-n.recv:
			n.m.received.Inc()
			switch env.kind {
			case kindRooms:
				n.hub.Rooms(env.user, env.leave, env.rooms)
			case kindMessage:
				n.hub.Deliver(&env.msg, false)
				n.m.latency.Observe(time.Since(env.sent).Seconds())
			}
		}
	}
}
