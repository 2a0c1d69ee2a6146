package forward

import "github.com/sidecar/sidecar/engine/store"

// Outbox is the durable queue a Forwarder works from. *store.Outbox, in the
// node's file, is the real one; tests use a fake. Errors the Forwarder
// tells apart: store.ErrExists from Insert, store.ErrUnreadable (wrapped)
// from Load or Body for an item that can never be sent.
type Outbox interface {
	// Restore is called once, by New, before anything else: it calls fn
	// for each item queued by an earlier run and reports how many it had
	// to drop as unreadable.
	Restore(fn func(store.OutboxRecord)) (dropped int, err error)
	// Insert queues rec with body, or returns store.ErrExists if rec.ID is
	// still queued.
	Insert(rec store.OutboxRecord, body []byte) error
	// Load reads the record of id; ok is false if it is not queued.
	Load(id string) (rec store.OutboxRecord, ok bool, err error)
	// Body reads the body of id, for an attempt.
	Body(id string) ([]byte, error)
	// Reschedule records a failed attempt: next due time (Unix nanos),
	// attempts so far and the last error. The body is not rewritten.
	Reschedule(id string, due int64, attempts int, lastErr string) error
	// Remove deletes a delivered, gone or dropped item.
	Remove(id string) error
	// Scan calls fn for queued items in due order, earliest first, until
	// fn returns false; fn must not call the Outbox.
	Scan(fn func(id string, due int64) bool) error
}

var _ Outbox = (*store.Outbox)(nil)
