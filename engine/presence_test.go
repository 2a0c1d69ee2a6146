package engine

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/sidecar/sidecar/engine/store"
)

// presenceRules routes like the shipped rules: presence changes and
// statuses go to the room of the user's watchers.
func presenceRules(ev *Event) []Command {
	id := ev.Sender.UserID
	switch ev.Type {
	case eventOnline, eventOffline:
		name := "userOnline"
		if ev.Type == eventOffline {
			name = "userOffline"
		}
		return []Command{{Op: OpEmit, Rule: "presence", Event: name, Data: ev.Data, To: Target{Rooms: []string{watchRoom(id)}}}}
	case "client.updateStatus":
		return []Command{{Op: OpEmit, Rule: "status", Event: "statusUpdated",
			Data: map[string]any{"userId": id, "status": ev.Data.(map[string]any)["status"]},
			To:   Target{Rooms: []string{watchRoom(id)}, Users: []string{id}}}}
	}
	return nil
}

// presenceEvents returns the presence.* events the rules saw for user, in order.
func presenceEvents(r *fakeRouter, user string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, ev := range r.events {
		if strings.HasPrefix(ev.Type, "presence.") && ev.Sender.UserID == user {
			out = append(out, ev.Type)
		}
	}
	return out
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func waitPresence(t *testing.T, r *fakeRouter, user string, want ...string) {
	t.Helper()
	waitFor(t, 5*time.Second, user+" presence "+strings.Join(want, ","), func() bool {
		return equalStrings(presenceEvents(r, user), want)
	})
}

// A second tab closing tells nobody; the last one closing makes the user
// offline after the grace delay, not before.
func TestPresenceTwoTabs(t *testing.T) {
	const grace = 400 * time.Millisecond
	n := startNode(t, withGrace(grace))
	a := n.dial("u1")
	b := n.dial("u1")
	waitPresence(t, n.router, "u1", eventOnline)
	a.conn.Close()
	time.Sleep(grace + 300*time.Millisecond)
	if got := presenceEvents(n.router, "u1"); !equalStrings(got, []string{eventOnline}) {
		t.Fatalf("after one tab of two closed: %v, want only online", got)
	}
	closed := time.Now()
	b.conn.Close()
	waitPresence(t, n.router, "u1", eventOnline, eventOffline)
	if d := time.Since(closed); d < grace {
		t.Fatalf("offline %v after the last close, before the grace delay %v", d, grace)
	}
	ev := n.router.seen(eventOffline)[0]
	data := ev.Data.(map[string]any)
	if data["userId"] != "u1" || data["online"] != false || data["lastSeen"] == nil {
		t.Fatalf("offline data = %v", data)
	}
}

// A reconnect within the grace delay emits neither offline nor online.
func TestPresenceReconnectWithinGrace(t *testing.T) {
	n := startNode(t, withGrace(time.Second))
	c := n.dial("u1")
	waitPresence(t, n.router, "u1", eventOnline)
	c.conn.Close()
	time.Sleep(100 * time.Millisecond)
	n.dial("u1")
	time.Sleep(1500 * time.Millisecond)
	if got := presenceEvents(n.router, "u1"); !equalStrings(got, []string{eventOnline}) {
		t.Fatalf("reconnect within grace: rules saw %v, want only the first online", got)
	}
	st, _ := n.e.Presence([]string{"u1"})
	if !st["u1"].Online || st["u1"].Connections != 1 {
		t.Fatalf("presence = %+v", st["u1"])
	}
}

// A watcher gets the current state at once, then live changes; the
// presence API agrees.
func TestWatch(t *testing.T) {
	n := startNode(t, withGrace(200*time.Millisecond))
	n.router.route = presenceRules
	w := n.dial("w")
	w.send(map[string]any{"event": "watch", "data": map[string]any{"users": []any{"u2", 7}}, "ack": 1})
	m := w.mustEvent("presence")
	users := m["data"].(map[string]any)["users"].(map[string]any)
	if u2 := users["u2"].(map[string]any); u2["online"] != false || u2["connections"] != 0.0 || u2["userId"] != "u2" {
		t.Fatalf("u2 before it connects: %v", u2)
	}
	if users["7"] == nil {
		t.Fatalf("a numeric id is watched as a string: %v", users)
	}
	if ack := w.mustAck(1); ack["ok"] != true {
		t.Fatalf("watch ack = %v", ack)
	}

	u2 := n.dial("u2")
	if m := w.mustEvent("userOnline"); m["data"].(map[string]any)["userId"] != "u2" {
		t.Fatalf("userOnline = %v", m)
	}
	u2.send(map[string]any{"event": "updateStatus", "data": map[string]any{"status": "busy"}, "ack": 2})
	if ack := u2.mustAck(2); ack["ok"] != true {
		t.Fatalf("updateStatus ack = %v", ack)
	}
	if m := w.mustEvent("statusUpdated"); m["data"].(map[string]any)["status"] != "busy" {
		t.Fatalf("statusUpdated = %v", m)
	}
	status, body := n.api("GET", "/api/presence/u2", nil)
	if status != http.StatusOK || body["online"] != true || body["status"] != "busy" || body["connections"] != 1.0 || body["userId"] != "u2" {
		t.Fatalf("GET /api/presence/u2 = %d %v", status, body)
	}
	u2.conn.Close()
	m = w.mustEvent("userOffline")
	if d := m["data"].(map[string]any); d["lastSeen"] == nil {
		t.Fatalf("userOffline without lastSeen: %v", m)
	}
	status, body = n.api("GET", "/api/presence?users=u2,nobody", nil)
	us := body["users"].(map[string]any)
	u2p, nobody := us["u2"].(map[string]any), us["nobody"].(map[string]any)
	if status != http.StatusOK || u2p["online"] != false || u2p["lastSeen"] == nil || u2p["status"] != "busy" ||
		nobody["online"] != false || nobody["status"] != nil || nobody["lastSeen"] != nil {
		t.Fatalf("GET /api/presence?users=u2,nobody = %d %v", status, body)
	}

	w.send(map[string]any{"event": "unwatch", "data": map[string]any{"users": []any{"u2"}}, "ack": 3})
	w.mustAck(3)
	n.dial("u2")
	w.noEvent(300 * time.Millisecond)
}

// (c *client) mustAck reads frames until the ack numbered n.
func (c *client) mustAck(n float64) map[string]any {
	c.t.Helper()
	for {
		m, err := c.event(5 * time.Second)
		if err != nil {
			c.t.Fatalf("want ack %v: %v", n, err)
		}
		if m["ack"] == n {
			return m
		}
		if _, isAck := m["ack"]; isAck {
			c.t.Fatalf("got ack %v, want %v", m, n)
		}
	}
}

func ackCode(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

// Bad watch and updateStatus requests get a clear error ack.
func TestPresenceBadInput(t *testing.T) {
	n := startNode(t, func(c *Config) {
		c.Presence.MaxWatch = 2
		c.Presence.Statuses = []string{"available", "busy"}
	})
	limited := n.dialURL("ws://" + n.addr + "/ws?token=" + token(t, map[string]any{"sub": "w2", "watch": []any{"u2", 3}}))
	c := n.dial("w")
	cases := []struct {
		name string
		c    *client
		msg  map[string]any
		code string
	}{
		{"watch beyond the cap", c, map[string]any{"event": "watch", "data": map[string]any{"users": []any{"a", "b", "c"}}}, ackLimit},
		{"watch nothing", c, map[string]any{"event": "watch", "data": map[string]any{"users": []any{}}}, ackBadRequest},
		{"watch a non-id", c, map[string]any{"event": "watch", "data": map[string]any{"users": []any{map[string]any{}}}}, ackBadRequest},
		{"watch without users", c, map[string]any{"event": "watch", "data": "u2"}, ackBadRequest},
		{"watch outside the claim", limited, map[string]any{"event": "watch", "data": map[string]any{"users": []any{"u2", "u9"}}}, ackForbidden},
		{"status a number", c, map[string]any{"event": "updateStatus", "data": map[string]any{"status": 3}}, ackBadRequest},
		{"status null", c, map[string]any{"event": "updateStatus", "data": map[string]any{"status": nil}}, ackBadRequest},
		{"status no data", c, map[string]any{"event": "updateStatus"}, ackBadRequest},
		{"status not in the set", c, map[string]any{"event": "updateStatus", "data": map[string]any{"status": "away"}}, ackBadRequest},
		{"status too long", c, map[string]any{"event": "updateStatus", "data": map[string]any{"status": strings.Repeat("x", 100)}}, ackBadRequest},
	}
	for i, tc := range cases {
		tc.msg["ack"] = i + 1
		tc.c.send(tc.msg)
		if ack := tc.c.mustAck(float64(i + 1)); ackCode(ack) != tc.code {
			t.Errorf("%s: ack %v, want code %s", tc.name, ack, tc.code)
		}
	}
	// Within the claim and the cap it works; then the cap counts what is watched.
	limited.send(map[string]any{"event": "watch", "data": map[string]any{"users": []any{"u2", "3"}}, "ack": 100})
	limited.mustEvent("presence")
	if ack := limited.mustAck(100); ack["ok"] != true {
		t.Fatalf("watch within the claim: %v", ack)
	}
	c.send(map[string]any{"event": "watch", "data": []any{"a", "b"}, "ack": 101})
	c.mustEvent("presence")
	c.mustAck(101)
	c.send(map[string]any{"event": "watch", "data": []any{"c"}, "ack": 102})
	if ack := c.mustAck(102); ackCode(ack) != ackLimit {
		t.Fatalf("third watch over a cap of 2: %v", ack)
	}
	// A status that fails is not kept.
	if st, _ := n.e.Presence([]string{"w"}); st["w"].Status != nil {
		t.Fatalf("a refused status was kept: %v", *st["w"].Status)
	}
	// A 1 MB status never reaches the engine: the message is over the limit.
	big, _ := json.Marshal(map[string]any{"event": "updateStatus", "data": map[string]any{"status": strings.Repeat("x", 1<<20)}})
	go wsutil.WriteClientMessage(c.conn, ws.OpText, big) // the server may close before it is all written
	if code := c.closeCode(5 * time.Second); code != 1009 {
		t.Fatalf("1 MB updateStatus: close %d, want 1009", code)
	}
}

// A client event no rule listens to is answered unknown_event and counted.
func TestUnknownClientEvent(t *testing.T) {
	n := startNode(t)
	n.router.handles = func(typ string) bool { return typ == "client.typing" }
	c := n.dial("u1")
	c.send(map[string]any{"event": "typnig", "data": map[string]any{}, "ack": 1})
	if ack := c.mustAck(1); ackCode(ack) != ackUnknownEvent || !strings.Contains(ack["error"].(map[string]any)["message"].(string), "typnig") {
		t.Fatalf("typo'd event: %v", ack)
	}
	c.send(map[string]any{"event": "typing", "data": map[string]any{"to": "nobody"}, "ack": 2})
	if ack := c.mustAck(2); ack["ok"] != true {
		t.Fatalf("typing to a user that does not exist: %v", ack)
	}
	// Built-in events are not unknown, whatever the rules.
	c.send(map[string]any{"event": "register", "data": "u1", "ack": 3})
	if ack := c.mustAck(3); ack["ok"] != true {
		t.Fatalf("register: %v", ack)
	}
	if got := counterValue(n.e.metrics.unknownEvents); got != 1 {
		t.Fatalf("unknown events counted %v, want 1", got)
	}
}

func TestPresenceAPIErrors(t *testing.T) {
	n := startNode(t, func(c *Config) { c.Presence.MaxQueryUsers = 2 })
	for _, tc := range []struct {
		path, authz string
		status      int
	}{
		{"/api/presence?users=a,b,c", "Bearer " + testAPIKey, http.StatusBadRequest},
		{"/api/presence", "Bearer " + testAPIKey, http.StatusBadRequest},
		{"/api/presence?users=,,", "Bearer " + testAPIKey, http.StatusBadRequest},
		{"/api/presence/u1", "", http.StatusUnauthorized},
		{"/api/presence/u1", "Bearer " + userToken(t, "u1"), http.StatusForbidden},
		{"/api/presence?users=a,b", "Bearer " + testAPIKey, http.StatusOK},
	} {
		if status, body := n.request("GET", tc.path, tc.authz, nil); status != tc.status {
			t.Errorf("GET %s: %d %v, want %d", tc.path, status, body, tc.status)
		}
	}
}

// The sessions a previous life left end through the rules after the grace
// delay, unless their user reconnects; the API says online meanwhile.
func TestPresenceRestoresSessions(t *testing.T) {
	path := t.TempDir() + "/s.db"
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	claims := []byte(`{"sub":"gone","role":"provider"}`)
	now := time.Now()
	if err := st.ApplySessions([]store.SessionChange{
		{User: "gone", Online: true, At: now},
		{User: "back", Online: true, At: now},
	}); err != nil {
		t.Fatal(err)
	}
	// A graceful shutdown hands the claims over.
	if err := st.EndSessions([]store.SessionEnd{{User: "gone", At: now, Claims: claims}, {User: "back", At: now}}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st, err = store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n := startNode(t, withGrace(500*time.Millisecond), func(c *Config) { c.PresenceStore = st })
	waitFor(t, time.Second, "a previous session online during the grace delay", func() bool {
		p, _ := n.e.Presence([]string{"gone"})
		return p["gone"].Online
	})
	n.dial("back")
	waitPresence(t, n.router, "gone", eventOffline)
	if ev := n.router.seen(eventOffline)[0]; ev.Sender.Claims["role"] != "provider" {
		t.Fatalf("offline sender = %+v, want the stored claims", ev.Sender)
	}
	time.Sleep(300 * time.Millisecond)
	if got := presenceEvents(n.router, "back"); len(got) != 0 {
		t.Fatalf("a user back within the grace delay: rules saw %v", got)
	}
	if p, _ := n.e.Presence([]string{"gone"}); p["gone"].Online || p["gone"].LastSeen == nil {
		t.Fatalf("after the grace delay: %+v", p["gone"])
	}
	sessions, _ := st.Sessions()
	if len(sessions) != 1 || sessions[0].User != "back" || !sessions[0].Ended.IsZero() {
		t.Fatalf("sessions = %+v, want back's alone, live", sessions)
	}
}

// A graceful shutdown hands its users to the next start: their last-seen
// is written and their sessions marked ended, and nothing goes offline now.
func TestPresenceShutdownHandsOver(t *testing.T) {
	st, err := store.Open(t.TempDir()+"/s.db", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n := startNode(t, withGrace(time.Minute), func(c *Config) { c.PresenceStore = st })
	n.dial("u1")
	waitPresence(t, n.router, "u1", eventOnline)
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	if got := presenceEvents(n.router, "u1"); !equalStrings(got, []string{eventOnline}) {
		t.Fatalf("rules saw %v at shutdown", got)
	}
	sessions, _ := st.Sessions()
	if len(sessions) != 1 || sessions[0].Ended.IsZero() || !strings.Contains(string(sessions[0].Claims), `"sub":"u1"`) {
		t.Fatalf("sessions after shutdown = %+v, want u1's, ended, with its claims", sessions)
	}
	recs, _ := st.Users([]string{"u1"})
	if recs["u1"].LastSeen.IsZero() {
		t.Fatalf("no last-seen after shutdown: %+v", recs)
	}
}

// A drain longer than the grace delay (a peer that never answers the
// close) still sends nobody offline: the users are handed to the next start.
func TestPresenceSlowDrainSendsNoOneOffline(t *testing.T) {
	n := startNode(t, withGrace(100*time.Millisecond))
	c := n.dial("u1")
	c.silent = true // never answers: the close waits for its linger
	n.dial("u2")
	waitPresence(t, n.router, "u1", eventOnline)
	waitPresence(t, n.router, "u2", eventOnline)
	start := time.Now()
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped in %v", time.Since(start))
	for _, u := range []string{"u1", "u2"} {
		if got := presenceEvents(n.router, u); !equalStrings(got, []string{eventOnline}) {
			t.Errorf("%s: rules saw %v at shutdown, want only online", u, got)
		}
	}
}

// Two restarts within the grace delay keep a user's last-seen at the first
// shutdown, when they were last seen.
func TestPresenceTwoRestartsKeepLastSeen(t *testing.T) {
	st, err := store.Open(t.TempDir()+"/s.db", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	if err := st.ApplySessions([]store.SessionChange{{User: "u1", Online: true, At: t0}}); err != nil {
		t.Fatal(err)
	}
	if err := st.EndSessions([]store.SessionEnd{{User: "u1", At: t0}}); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, withGrace(time.Hour), func(c *Config) { c.PresenceStore = st })
	waitFor(t, time.Second, "u1 restored", func() bool {
		p, _ := n.e.Presence([]string{"u1"})
		return p["u1"].Online
	})
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	recs, _ := st.Users([]string{"u1"})
	if !recs["u1"].LastSeen.Equal(t0) {
		t.Fatalf("last seen after a second restart = %v, want %v", recs["u1"].LastSeen, t0)
	}
}
