package engine

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recordingBroker is a cluster broker's stand-in: it sees every publish
// and room change on its way to the hub, and can refuse them.
type recordingBroker struct {
	local   Hub
	mu      sync.Mutex
	events  []string // event names published
	rooms   []string // users whose rooms changed
	stopped atomic.Bool
}

func (b *recordingBroker) Publish(ctx context.Context, m *Message, wait bool) (int, error) {
	if b.stopped.Load() {
		return 0, ErrStopped
	}
	b.mu.Lock()
	b.events = append(b.events, m.Event)
	b.mu.Unlock()
	return b.local.Deliver(m, wait)
}

func (b *recordingBroker) Rooms(ctx context.Context, user string, leave bool, rooms []string) error {
	b.mu.Lock()
	b.rooms = append(b.rooms, user)
	b.mu.Unlock()
	return b.local.Rooms(user, leave, rooms)
}

func (b *recordingBroker) published() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.events...)
}

// Every way an event leaves the pipeline goes through the broker: webhook
// emits, client event emits, the test API and /api/events, and room
// changes for a named user.
func TestEveryPublishGoesThroughTheBroker(t *testing.T) {
	b := &recordingBroker{}
	n := startNode(t, func(c *Config) {
		c.NewBroker = func(local Hub) (Broker, error) { b.local = local; return b, nil }
	})
	n.router.route = func(ev *Event) []Command {
		switch ev.Type {
		case "booking.created":
			return []Command{{Op: OpEmit, Rule: "wh", Event: "fromWebhook", To: Target{Users: []string{"u1"}}}}
		case "client.ping":
			return []Command{
				{Op: OpEmit, Rule: "cl", Event: "fromClient", To: Target{Users: []string{"u1"}}},
				{Op: OpJoin, Rule: "cl", User: "u1", Rooms: []string{"pinged"}},
			}
		}
		return nil
	}
	c := n.dial("u1")
	waitFor(t, 2*time.Second, "connection", func() bool { return n.e.Stats().Connections == 1 })
	if status, _ := n.postWebhook("msg_b1", time.Now(), []byte(`{"type":"booking.created","data":{}}`), nil); status != http.StatusAccepted {
		t.Fatalf("webhook = %d", status)
	}
	c.mustEvent("fromWebhook")
	c.send(map[string]any{"event": "ping", "ack": 1})
	c.mustEvent("fromClient")
	if m, _ := c.event(5 * time.Second); m["ok"] != true {
		t.Fatalf("ack = %v", m)
	}
	n.api("POST", "/api/socket-test/send/u1", map[string]any{"title": "t"})
	c.mustEvent("newNotification")
	n.api("POST", "/api/events", map[string]any{"event": "direct", "to": map[string]any{"rooms": []string{"pinged"}}})
	c.mustEvent("direct")
	want := []string{"fromWebhook", "fromClient", "newNotification", "direct"}
	if got := b.published(); len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] || got[3] != want[3] {
		t.Fatalf("broker saw %v, want %v", got, want)
	}
	if b.rooms[0] != "u1" {
		t.Fatalf("room changes through the broker: %v", b.rooms)
	}
}

// When the broker cannot take an emit (the node is stopping), the webhook
// is answered 503 with Retry-After and its id is forgotten, so the retry
// delivers it once.
func TestWebhookWhoseEmitCannotBePublishedIsRetryable(t *testing.T) {
	b := &recordingBroker{}
	n := startNode(t, func(c *Config) {
		c.NewBroker = func(local Hub) (Broker, error) { b.local = local; return b, nil }
	})
	n.router.route = func(ev *Event) []Command {
		if ev.Type != "booking.created" {
			return nil
		}
		return []Command{{Op: OpEmit, Rule: "wh", Event: "fromWebhook", To: Target{Users: []string{"u1"}}}}
	}
	c := n.dial("u1")
	waitFor(t, 2*time.Second, "connection", func() bool { return n.e.Stats().Connections == 1 })
	body := []byte(`{"type":"booking.created","data":{}}`)
	b.stopped.Store(true)
	status, resp := n.postWebhook("msg_stop", time.Now(), body, nil)
	if status != http.StatusServiceUnavailable {
		t.Fatalf("webhook while the broker is stopped = %d %v, want 503", status, resp)
	}
	b.stopped.Store(false)
	if status, resp := n.postWebhook("msg_stop", time.Now(), body, nil); status != http.StatusAccepted {
		t.Fatalf("retry = %d %v, want 202", status, resp)
	}
	c.mustEvent("fromWebhook")
	c.noEvent(300 * time.Millisecond)
}
