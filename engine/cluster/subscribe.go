package cluster

import (
	"context"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/sidecar/sidecar/engine"
)

// subChange records that user has (here) or no longer has a connection on
// this node. Called by the partitions, in order for each user: it never
// waits.
func (n *Node) subChange(user string, here bool) {
	n.subMu.Lock()
	if here {
		n.want[user] = struct{}{}
	} else {
		delete(n.want, user)
	}
	n.pending[user] = here
	n.subMu.Unlock()
	select {
	case n.subWake <- struct{}{}:
	default:
	}
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
	dc, release := c.Dedicate()
	defer release()
	lost := dc.SetPubSubHooks(rueidis.PubSubHooks{OnMessage: n.receive})
	// The whole set, and pending cleared: this connection starts from it.
	n.subMu.Lock()
	users := make([]string, 0, len(n.want))
	for u := range n.want {
		users = append(users, u)
	}
	clear(n.pending)
	n.subMu.Unlock()
	subs := make(map[string]struct{}, len(users))
	chans := []string{n.chBroadcast}
	for _, u := range users {
		chans = append(chans, n.chUser+u)
		subs[u] = struct{}{}
	}
	if err := n.subscribe(dc, chans, false); err != nil {
		return err
	}
	n.setUp(true)
	if !first {
		n.m.reconnects.Inc()
		n.log.Info("subscriptions re-established", "users", len(users))
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-lost:
			if err == nil {
				err = errDown
			}
			return err
		case <-n.subWake:
		}
		n.subMu.Lock()
		var on, off []string
		for u, here := range n.pending {
			_, have := subs[u]
			switch {
			case here && !have:
				subs[u] = struct{}{}
				on = append(on, n.chUser+u)
			case !here && have:
				delete(subs, u)
				off = append(off, n.chUser+u)
			}
		}
		clear(n.pending)
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

// receive hands what another node published to this node's hub. It runs
// on the subscriber connection's reading goroutine, one message at a time
// in the order Redis sent them.
func (n *Node) receive(pm rueidis.PubSubMessage) {
	env, err := decodeEnvelope(pm.Message)
	if err != nil {
		n.m.dropped.WithLabelValues("malformed").Inc()
		return
	}
	if env.origin == n.id {
		return // delivered here when it was published
	}
	n.m.received.Inc()
	user, toUser := strings.CutPrefix(pm.Channel, n.chUser)
	switch env.kind {
	case kindRooms:
		if toUser && user == env.user {
			n.hub.Rooms(env.user, env.leave, env.rooms)
		}
		return
	case kindMessage:
		m := &env.msg
		if toUser {
			// A user's channel: that user's copy, whatever else m names.
			m.To = engine.Target{Users: []string{user}, Except: m.To.Except}
		}
		n.hub.Deliver(m, false)
		n.m.latency.Observe(time.Since(env.sent).Seconds())
	}
}
