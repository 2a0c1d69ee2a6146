package engine

import (
	"context"
	"time"

	"github.com/sidecar/sidecar/engine/store"
)

// Message is one event on its way to its recipients: its data encoded as
// JSON once, by the publisher, and framed per protocol by each hub that
// holds a recipient.
type Message struct {
	ID    string // stream id; given by the hub that delivers it when empty
	Event string // event name clients receive
	Data  []byte // valid UTF-8 JSON
	To    Target
	// Remote is set on a message another node published, which a cluster
	// broker delivers here: it was kept for replay where it was published,
	// its ID is that node's, and it is neither kept nor stamped here.
	Remote bool
	// Stamped: ID was given by a cluster's streams (StreamStamper), in the
	// order every node shares, not by a node.
	Stamped bool
}

// A Broker carries what the pipeline decided, events and room changes, to
// the hubs that hold the recipients: this node's alone (the local broker,
// the default), or every node's (a cluster broker, which delivers what other
// nodes publish into this node's Hub). Publish and Rooms are called from
// many goroutines at once.
type Broker interface {
	// Publish delivers m to its targets, each recipient once. With wait,
	// it returns after this node's hub has queued m, with the number of
	// this node's connections it reached; without, delivered is 0.
	Publish(ctx context.Context, m *Message, wait bool) (delivered int, err error)
	// Rooms makes every connection of user join rooms, or leave them.
	Rooms(ctx context.Context, user string, leave bool, rooms []string) error
}

// A UserRouter is a Broker that routes by user, across nodes: it is told
// which users have a connection on this node, to receive what is sent to
// them elsewhere. Here is called by the partition that owns user, when
// their first connection here opens (here) and when their last one closes;
// it must not block.
type UserRouter interface {
	Here(user string, here bool)
}

// A RoomRouter is a Broker that routes by room, across nodes: it is told
// which rooms have a member on this node. RoomHere is called by partition
// part when its first member of room joins (here) and when its last one
// leaves; it must not block.
type RoomRouter interface {
	RoomHere(room string, part int, here bool)
}

// ClusterPresence shares presence among nodes: a user is online while any
// node holds a connection of theirs. Nil: the node decides alone.
type ClusterPresence interface {
	// Apply records this node's session changes, in order, and reports for
	// each whether the user's presence in the cluster changed with it (their
	// first node: online; their last: offline), the only changes the rules
	// hear of. On error, the node decides alone for this batch.
	Apply(changes []store.SessionChange) (changed []bool, err error)
	// Online reports which of users have a session on some node.
	Online(users []string) (map[string]bool, error)
}

// TellPresence runs a presence transition that another part of the cluster
// decided (a dead node's user, whom no node holds any more, goes offline;
// a user this node holds comes back online after an outage) through the
// rules, in order with the node's own. It is not a session change here.
func (e *Engine) TellPresence(user string, online bool, at time.Time) {
	e.presence.push(presenceChange{user: user, online: online, at: at, decided: true})
}

// InPresenceOrder runs fn on the presence writer, in order with the
// transitions queued before it (a cluster's own presence work: ending a
// dead node's sessions, telling Redis this node's again), and waits. It
// reports false once the writer has stopped.
func (e *Engine) InPresenceOrder(fn func()) bool { return e.presence.do(fn) }

// Hub is this node's index of connections, as a broker sees it: where it
// delivers.
type Hub interface {
	Deliver(m *Message, wait bool) (delivered int, err error)
	Rooms(user string, leave bool, rooms []string) error
}

// localBroker is one node alone: it hands everything to the node's own hub.
type localBroker struct{ hub Hub }

var _ Broker = localBroker{}

func (b localBroker) Publish(_ context.Context, m *Message, wait bool) (int, error) {
	return b.hub.Deliver(m, wait)
}

func (b localBroker) Rooms(_ context.Context, user string, leave bool, rooms []string) error {
	return b.hub.Rooms(user, leave, rooms)
}
