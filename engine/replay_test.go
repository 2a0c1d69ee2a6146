package engine

import (
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/sidecar/sidecar/engine/store"
)

// dialSince connects user asking for what it missed after since.
func (n *node) dialSince(user, since string) *client {
	n.t.Helper()
	return n.dialURL("ws://" + n.addr + "/ws?token=" + userToken(n.t, user) + "&since=" + url.QueryEscape(since))
}

// replayed reads events until resumed and returns them with its recovered.
func (c *client) replayed() (events []map[string]any, recovered bool) {
	c.t.Helper()
	for {
		m, err := c.event(5 * time.Second)
		if err != nil {
			c.t.Fatalf("replay: %v (after %d events)", err, len(events))
		}
		if m["event"] == "resumed" {
			if _, has := m["id"]; has {
				c.t.Fatalf("resumed carries an id: %v", m)
			}
			return events, m["data"].(map[string]any)["recovered"].(bool)
		}
		events = append(events, m)
	}
}

func publish(t *testing.T, n *node, name string, data any, to Target) string {
	t.Helper()
	id, _, err := n.e.Publish(name, data, to, true)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// A client disconnected while three notifications are sent gets all three,
// in order, on reconnect with since, then resumed with recovered: true,
// then live events.
func TestReplayMissedEvents(t *testing.T) {
	n := startNode(t)
	c := n.dial("u1")
	publish(t, n, "newNotification", map[string]any{"n": 0}, Target{Users: []string{"u1"}})
	first := c.mustEvent("newNotification")
	c.conn.Close()
	for i := 1; i <= 3; i++ {
		publish(t, n, "newNotification", map[string]any{"n": i}, Target{Users: []string{"u1"}})
	}
	c = n.dialSince("u1", first["id"].(string))
	evs, recovered := c.replayed()
	if !recovered || len(evs) != 3 {
		t.Fatalf("replay = %v recovered=%v, want 3 events, recovered", evs, recovered)
	}
	for i, m := range evs {
		if m["data"].(map[string]any)["n"] != float64(i+1) {
			t.Fatalf("replayed event %d = %v", i, m)
		}
	}
	publish(t, n, "newNotification", map[string]any{"n": 4}, Target{Users: []string{"u1"}})
	if m := c.mustEvent("newNotification"); m["data"].(map[string]any)["n"] != 4.0 {
		t.Fatalf("live after replay = %v", m)
	}
	// since is exclusive: from the last one, nothing.
	c = n.dialSince("u1", evs[2]["id"].(string))
	if evs, recovered := c.replayed(); len(evs) != 1 || !recovered { // n=4 only
		t.Fatalf("since the third: %v %v", evs, recovered)
	}
}

// A phone that was offline for a broadcast and a room event gets both; a
// typing indicator is not kept.
func TestReplayBroadcastAndRoom(t *testing.T) {
	n := startNode(t, func(c *Config) { c.Replay.Exclude = []string{"userTyping"} })
	n.router.route = func(ev *Event) []Command {
		if ev.Type == eventOpen {
			return []Command{{Op: OpJoin, Rule: "rooms", Rooms: []string{"role:provider"}}}
		}
		return nil
	}
	c := n.dial("p1")
	id := publish(t, n, "newNotification", "before", Target{Users: []string{"p1"}})
	c.mustEvent("newNotification")
	c.conn.Close()
	publish(t, n, "newNotification", "to all", Target{All: true})
	publish(t, n, "userTyping", "typing", Target{Users: []string{"p1"}})
	publish(t, n, "newNotification", "to providers", Target{Rooms: []string{"role:provider"}})
	publish(t, n, "newNotification", "to customers", Target{Rooms: []string{"role:customer"}})
	publish(t, n, "newNotification", "to all but p1", Target{All: true, Except: []string{"p1"}})
	c = n.dialSince("p1", id)
	evs, recovered := c.replayed()
	if !recovered || len(evs) != 2 || evs[0]["data"] != "to all" || evs[1]["data"] != "to providers" {
		t.Fatalf("replay = %v recovered=%v, want the broadcast then the room event", evs, recovered)
	}
}

// since that is garbage, in the future or older than the retention gives
// recovered: false; a trimmed stream replays what it kept.
func TestReplayIncomplete(t *testing.T) {
	n := startNode(t, func(c *Config) {})
	ids := make([]string, 0, 120)
	for i := 0; i < 120; i++ { // the harness keeps 100 per stream
		ids = append(ids, publish(t, n, "newNotification", i, Target{Users: []string{"u1"}}))
	}
	future := fmt.Sprintf("%d-1", time.Now().Add(time.Hour).UnixMilli())
	for _, tc := range []struct {
		name, since string
		events      int
	}{
		{"garbage", "not-an-id", 0},
		{"empty", "", 0},
		{"negative", "-5-1", 0},
		{"in the future", future, 0},
		{"older than the retention (trimmed)", ids[5], 100},
		{"older than the store", "1-1", 100},
	} {
		c := n.dialSince("u1", tc.since)
		evs, recovered := c.replayed()
		if recovered || len(evs) != tc.events {
			t.Errorf("%s: %d events recovered=%v, want %d, not recovered", tc.name, len(evs), recovered, tc.events)
		}
		c.conn.Close()
	}
	c := n.dialSince("u1", ids[30])
	if evs, recovered := c.replayed(); !recovered || len(evs) != 89 {
		t.Fatalf("since a kept id: %d events recovered=%v, want 89, recovered", len(evs), recovered)
	}
}

// Live events that arrive during the replay are neither lost nor duplicated
// nor reordered.
func TestReplayDuringLiveTraffic(t *testing.T) {
	n := startNode(t, withStreams(1000))
	const total = 400
	start := publish(t, n, "newNotification", -1, Target{Users: []string{"u1"}})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; i < total; i++ {
			n.e.Publish("newNotification", i, Target{Users: []string{"u1"}}, false)
			if i%50 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	})
	time.Sleep(2 * time.Millisecond)
	c := n.dialSince("u1", start)
	next, resumed := 0, false
	for next < total {
		m, err := c.event(5 * time.Second)
		if err != nil {
			t.Fatalf("after %d events: %v", next, err)
		}
		if m["event"] == "resumed" {
			if resumed || m["data"].(map[string]any)["recovered"] != true {
				t.Fatalf("resumed = %v (twice: %v)", m, resumed)
			}
			resumed = true
			continue
		}
		if got := m["data"].(float64); got != float64(next) {
			t.Fatalf("event %v, want %d (resumed seen: %v)", got, next, resumed)
		}
		next++
	}
	wg.Wait()
	if !resumed {
		c.replayed()
	}
	c.noEvent(200 * time.Millisecond)
}

// Without since, nothing is replayed and no resumed frame comes.
func TestNoReplayWithoutSince(t *testing.T) {
	n := startNode(t)
	publish(t, n, "newNotification", 1, Target{Users: []string{"u1"}})
	c := n.dial("u1")
	c.noEvent(200 * time.Millisecond)
}

// Several publishers at once, and a client that drops and reconnects with
// the last id it saw: it gets every event once, with ids increasing.
func TestReplayConcurrentPublishers(t *testing.T) {
	n := startNode(t, withStreams(1000))
	const pubs, each = 4, 100
	c := n.dial("u1")
	var wg sync.WaitGroup
	for p := range pubs {
		wg.Go(func() {
			for i := range each {
				n.e.Publish("newNotification", p*each+i, Target{Users: []string{"u1"}}, false)
			}
		})
	}
	seen := map[float64]bool{}
	var last string
	var lastID store.StreamID
	resumed := false
	read := func(c *client, stopAt int) {
		for len(seen) < stopAt {
			m, err := c.event(5 * time.Second)
			if err != nil {
				t.Fatalf("after %d events: %v", len(seen), err)
			}
			if m["event"] == "resumed" {
				if m["data"].(map[string]any)["recovered"] != true || resumed {
					t.Fatalf("resumed %v (twice: %v)", m, resumed)
				}
				resumed = true
				continue
			}
			id, _ := store.ParseStreamID(m["id"].(string))
			if !lastID.Less(id) {
				t.Fatalf("id %v after %v: not increasing", m["id"], last)
			}
			lastID, last = id, m["id"].(string)
			v := m["data"].(float64)
			if seen[v] {
				t.Fatalf("event %v twice", v)
			}
			seen[v] = true
		}
	}
	read(c, 60)
	c.conn.Close()
	c = n.dialSince("u1", last)
	read(c, pubs*each)
	wg.Wait()
	if !resumed { // every event left was missed: replayed, then resumed
		if m, err := c.event(5 * time.Second); err != nil || m["event"] != "resumed" {
			t.Fatalf("after the replay: %v, %v; want resumed", m, err)
		}
	}
	c.noEvent(200 * time.Millisecond)
}
