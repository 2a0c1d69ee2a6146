package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"

	"github.com/sidecar/sidecar/engine"
)

// maxUserChannels is the most recipients an event goes to by their own
// channels; to more, it goes on the broadcast channel, once, and each node
// picks its own (a publish per user costs Redis a command each).
var maxUserChannels = 8 // a var for the layout benchmark

// outgoing is one envelope on its way to one channel.
type outgoing struct {
	channel string
	payload string
	counted prometheus.Counter // sidecar_broker_published_total of its kind
}

// broker is the Redis broker: it delivers to this node's hub at once, and
// sends the rest of the cluster a copy.
type broker struct{ n *Node }

var (
	_ engine.Broker     = broker{}
	_ engine.UserRouter = broker{}
	_ engine.RoomRouter = broker{}
)

// Broker is the engine's broker for this node (engine.Config.NewBroker).
func (n *Node) Broker(local engine.Hub) (engine.Broker, error) {
	n.hub = local
	return broker{n}, nil
}

func (b broker) Publish(_ context.Context, m *engine.Message, wait bool) (int, error) {
	delivered, err := b.n.hub.Deliver(m, wait) // gives m its id
	if err != nil {
		return delivered, err
	}
	b.n.sendMessage(m)
	return delivered, nil
}

func (b broker) Rooms(_ context.Context, user string, leave bool, rooms []string) error {
	if err := b.n.hub.Rooms(user, leave, rooms); err != nil {
		return err
	}
	b.n.enqueue(outgoing{channel: b.n.chUser + user, payload: string(encodeRooms(b.n.id, time.Now(), user, leave, rooms)), counted: b.n.m.pubRooms})
	return nil
}

func (b broker) Here(user string, here bool) { b.n.subChange(user, here) }

func (b broker) RoomHere(room string, part int, here bool) { b.n.roomChange(room, part, here) }

// sendMessage queues m for the other nodes: on each recipient's channel
// when it names a few users and nothing else, on its room's channel when it
// names one room and nothing else, else on the broadcast channel. Either
// way a node receives each recipient's copy once: a user's channel carries
// only what is for that user (the receiver delivers it to that user
// alone), a room's only what is for that room alone, the broadcast channel
// everything else.
func (n *Node) sendMessage(m *engine.Message) {
	if m.To.Empty() {
		return
	}
	payload := string(encodeMessage(n.id, time.Now(), m))
	if !m.To.All && len(m.To.Users) == 0 && len(m.To.Rooms) == 1 {
		// One room: on its channel, which only the nodes with a member
		// of it receive.
		n.enqueue(outgoing{channel: n.chRoom + m.To.Rooms[0], payload: payload, counted: n.m.pubRoom})
		return
	}
	if m.To.All || len(m.To.Rooms) > 0 || len(m.To.Users) > maxUserChannels {
		n.enqueue(outgoing{channel: n.chBroadcast, payload: payload, counted: n.m.pubBroadcast})
		return
	}
	for i, u := range m.To.Users {
		if containsBefore(m.To.Users, i, u) {
			continue
		}
		n.enqueue(outgoing{channel: n.chUser + u, payload: payload, counted: n.m.pubUser})
	}
}

func containsBefore(l []string, i int, s string) bool {
	for _, x := range l[:i] {
		if x == s {
			return true
		}
	}
	return false
}

// enqueue hands o to the publisher, or drops it (counted) when Redis is
// down or the queue is full: it never waits.
func (n *Node) enqueue(o outgoing) {
	if _, ok := n.usable(); !ok {
		n.m.dropped.WithLabelValues("unavailable").Inc()
		return
	}
	n.pubMu.Lock()
	if len(n.pubQ) >= n.opt.PublishQueue {
		n.pubMu.Unlock()
		n.m.dropped.WithLabelValues("queue_full").Inc()
		return
	}
	n.pubQ = append(n.pubQ, o)
	n.pubMu.Unlock()
	select {
	case n.pubWake <- struct{}{}:
	default:
	}
}

// publishBatch is the most commands of one round trip.
const publishBatch = 512

// runPublisher sends what is queued, in order, a batch per round trip: the
// next batch goes when the last is answered, so the other nodes receive a
// node's envelopes in the order it queued them.
func (n *Node) runPublisher(ctx context.Context) {
	var batch []outgoing
	cmds := make(rueidis.Commands, 0, publishBatch)
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.pubWake:
		}
		for {
			n.pubMu.Lock()
			batch, n.pubQ = n.pubQ, batch[:0]
			n.pubMu.Unlock()
			if len(batch) == 0 {
				break
			}
			n.publish(batch, cmds)
			clear(batch)
			if cap(batch) > 4*publishBatch {
				batch = nil
			}
		}
	}
}

func (n *Node) publish(batch []outgoing, cmds rueidis.Commands) {
	c, ok := n.usable()
	if !ok {
		n.m.dropped.WithLabelValues("unavailable").Add(float64(len(batch)))
		return
	}
	for len(batch) > 0 {
		k := min(len(batch), publishBatch)
		cmds = cmds[:0]
		for _, o := range batch[:k] {
			cmds = append(cmds, c.B().Spublish().Channel(o.channel).Message(o.payload).Build())
		}
		ctx, cancel := n.ctx()
		res := c.DoMulti(ctx, cmds...)
		cancel()
		var failed error
		for i, r := range res {
			if err := r.Error(); err != nil {
				failed = err
				// A publish that timed out may still run when a paused Redis
				// resumes: the others may get it, late.
				reason := "error"
				if errors.Is(err, context.DeadlineExceeded) {
					reason = "timeout"
				}
				n.m.dropped.WithLabelValues(reason).Inc()
				continue
			}
			batch[i].counted.Inc()
		}
		n.failed(failed) // one error per round trip
		batch = batch[k:]
	}
}
