package engine

import "context"

// Message is one event on its way to its recipients: its data encoded as
// JSON once, by the publisher, and framed per protocol by each hub that
// holds a recipient.
type Message struct {
	ID    string // stream id; given by the hub that delivers it when empty
	Event string // event name clients receive
	Data  []byte // valid UTF-8 JSON
	To    Target
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
