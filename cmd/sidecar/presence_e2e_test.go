package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/sidecar/sidecar/engine/auth"
)

// Presence and replay end to end, with the shipped rules and real `ws`
// clients: what the users see.

// nextWithin returns the next line the client prints within d, or false.
func (c *nodeClient) nextWithin(d time.Duration) (map[string]any, bool) {
	select {
	case m, ok := <-c.lines:
		return m, ok
	case <-time.After(d):
		return nil, false
	}
}

// nextEvent skips acks and returns the next event frame.
func (c *nodeClient) nextEvent() map[string]any {
	c.t.Helper()
	for {
		m := c.next()
		if _, ok := m["event"]; ok {
			return m
		}
		if m["closed"] != nil || m["timeout"] != nil {
			c.t.Fatalf("node client: %v, want an event", m)
		}
	}
}

// kill ends the client process, as a closed tab does, and waits until it
// has exited (its reader goroutine reaps it).
func (c *nodeClient) kill() {
	c.t.Helper()
	c.cmd.Process.Kill()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-c.lines:
			if !ok {
				return
			}
		case <-timeout:
			c.t.Fatal("the node client did not exit")
		}
	}
}

func getJSON(t *testing.T, u, bearer string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("Authorization", "Bearer "+bearer)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

func watchMsg(ack int, users ...any) map[string]any {
	return map[string]any{"event": "watch", "data": map[string]any{"users": users}, "ack": ack}
}

func eventData(m map[string]any) map[string]any {
	d, _ := m["data"].(map[string]any)
	return d
}

// Two tabs of one user: closing one tells nobody; closing both makes the
// user offline after the grace delay, not before; the watcher had the
// current state at once, and the presence API agrees.
func TestPresenceTwoTabsRealClients(t *testing.T) {
	needNode(t)
	const grace = 700 * time.Millisecond
	n := startExample(t, "SIDECAR_PRESENCE__GRACE="+grace.String())
	admin := n.token(map[string]any{"sub": "admin", "role": "admin"})
	ws := "ws://" + n.addr + "/ws?token="

	w := startNodeClientSending(t, ws+n.token(map[string]any{"sub": "w"}), 100, []any{watchMsg(1, "u2")})
	w.waitOpen()
	if m := w.nextEvent(); m["event"] != "presence" || eventData(m)["users"].(map[string]any)["u2"].(map[string]any)["online"] != false {
		t.Fatalf("watch answer = %v, want u2 offline", m)
	}
	if m := w.next(); m["ack"] != 1.0 || m["ok"] != true {
		t.Fatalf("watch ack = %v", m)
	}
	tab1 := startNodeClient(t, ws+n.token(map[string]any{"sub": "u2"}), 100)
	tab1.waitOpen()
	if m := w.nextEvent(); m["event"] != "userOnline" || eventData(m)["userId"] != "u2" {
		t.Fatalf("after u2's first tab: %v, want userOnline", m)
	}
	tab2 := startNodeClient(t, ws+n.token(map[string]any{"sub": "u2"}), 100)
	tab2.waitOpen()
	tab1.kill()
	if m, ok := w.nextWithin(grace + 500*time.Millisecond); ok {
		t.Fatalf("one tab of two closed: the watcher got %v", m)
	}
	_, p := getJSON(t, "http://"+n.addr+"/api/presence/u2", admin)
	if p["online"] != true || p["connections"] != 1.0 {
		t.Fatalf("presence with one tab left = %v", p)
	}
	closed := time.Now()
	tab2.kill()
	m := w.nextEvent()
	if m["event"] != "userOffline" || eventData(m)["lastSeen"] == nil {
		t.Fatalf("after the last tab: %v, want userOffline with lastSeen", m)
	}
	if d := time.Since(closed); d < grace {
		t.Fatalf("offline %v after the last tab closed, before the grace delay %v", d, grace)
	}
	_, p = getJSON(t, "http://"+n.addr+"/api/presence?users=u2,w", admin)
	us := p["users"].(map[string]any)
	if u2 := us["u2"].(map[string]any); u2["online"] != false || u2["lastSeen"] == nil {
		t.Fatalf("presence of u2 after it left = %v", u2)
	}
	if me := us["w"].(map[string]any); me["online"] != true || me["connections"] != 1.0 {
		t.Fatalf("presence of the watcher = %v", me)
	}
}

// A client disconnected while three notifications are sent gets all three
// in order on reconnect with since, then resumed with recovered: true; a
// phone that was offline for a broadcast and a room event gets both.
func TestReplayWithRealClient(t *testing.T) {
	needNode(t)
	n := startExample(t)
	admin := n.token(map[string]any{"sub": "admin", "role": "admin"})
	tok := n.token(map[string]any{"sub": "p1", "role": "provider"})
	ws := "ws://" + n.addr + "/ws?token=" + tok

	c := startNodeClient(t, ws, 1)
	c.waitOpen()
	if status, _ := n.post("/api/socket-test/send/p1", admin, map[string]any{"title": "before"}); status != http.StatusAccepted {
		t.Fatalf("send: %d", status)
	}
	since := c.nextEvent()["id"].(string)
	if m := c.next(); m["closed"] == nil { // it closes after one message
		t.Fatalf("client: %v", m)
	}
	for _, title := range []string{"one", "two", "three"} {
		if status, body := n.post("/api/socket-test/send/p1", admin, map[string]any{"title": title}); status != http.StatusAccepted || body["delivered"] != 0.0 {
			t.Fatalf("send while offline: %d %v, want 202 delivered 0", status, body)
		}
	}
	n.post("/api/socket-test/broadcast", admin, map[string]any{"title": "to all"})
	n.post("/api/events", admin, map[string]any{"event": "newNotification", "to": map[string]any{"rooms": []any{"role:provider"}}, "data": map[string]any{"title": "to providers"}})
	n.post("/api/events", admin, map[string]any{"event": "newNotification", "to": map[string]any{"rooms": []any{"role:customer"}}, "data": map[string]any{"title": "to customers"}})

	c = startNodeClient(t, ws+"&since="+url.QueryEscape(since), 6)
	c.waitOpen()
	var titles []string
	for range 5 {
		m := c.nextEvent()
		if m["event"] == "resumed" {
			t.Fatalf("resumed after %v, want five events first", titles)
		}
		titles = append(titles, eventData(m)["title"].(string))
	}
	want := []string{"one", "two", "three", "to all", "to providers"}
	if !equalStrings(titles, want) {
		t.Fatalf("replayed %v, want %v", titles, want)
	}
	if m := c.nextEvent(); m["event"] != "resumed" || eventData(m)["recovered"] != true {
		t.Fatalf("after the replay: %v, want resumed recovered", m)
	}
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

// kill -9 the real binary with users online, restart it on the same store:
// the presence API says online within the grace delay, and those who did
// not come back go offline through the rules (their watchers hear
// userOffline); one who reconnected stays online.
func TestKill9WithUsersOnlineThenRestart(t *testing.T) {
	needNode(t)
	env := []string{
		"SIDECAR_STORE__PATH=" + filepath.Join(t.TempDir(), "s.db"),
		"SIDECAR_PRESENCE__GRACE=2s",
	}
	bin, cmd, addr := startBinary(t, "", env...)
	sign := func(claims map[string]any) string {
		claims["exp"] = time.Now().Add(time.Hour).Unix()
		tok, err := auth.Sign([]byte("sidecar-dev-secret-change-me"), claims) // config.example.yaml's development secret
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	admin := sign(map[string]any{"sub": "admin", "role": "admin"})
	for _, u := range []string{"u1", "u2"} {
		c := startNodeClient(t, "ws://"+addr+"/ws?token="+sign(map[string]any{"sub": u}), 100)
		c.waitOpen()
	}
	waitFor(t, 5*time.Second, "u1 and u2 online", func() bool {
		_, p := getJSON(t, "http://"+addr+"/api/presence?users=u1,u2", admin)
		us, _ := p["users"].(map[string]any)
		return us != nil && us["u1"].(map[string]any)["online"] == true && us["u2"].(map[string]any)["online"] == true
	})
	time.Sleep(200 * time.Millisecond) // the presence writer keeps the sessions right after
	cmd.Process.Kill()
	cmd.Wait()

	_, addr = runBinary(t, bin, "", env...)
	_, p := getJSON(t, "http://"+addr+"/api/presence?users=u1,u2", admin)
	for _, u := range []string{"u1", "u2"} {
		if st := p["users"].(map[string]any)[u].(map[string]any); st["online"] != true {
			t.Fatalf("%s right after the restart: %v, want online within the grace delay", u, st)
		}
	}
	back := startNodeClient(t, "ws://"+addr+"/ws?token="+sign(map[string]any{"sub": "u2"}), 100)
	back.waitOpen()
	w := startNodeClientSending(t, "ws://"+addr+"/ws?token="+sign(map[string]any{"sub": "w"}), 100, []any{watchMsg(1, "u1", "u2")})
	w.waitOpen()
	w.nextEvent() // the current state
	m := w.nextEvent()
	if m["event"] != "userOffline" || eventData(m)["userId"] != "u1" {
		t.Fatalf("after the grace delay: %v, want userOffline for u1", m)
	}
	if m, ok := w.nextWithin(500 * time.Millisecond); ok && m["ack"] == nil {
		t.Fatalf("then %v, want nothing for u2, who came back", m)
	}
	_, p = getJSON(t, "http://"+addr+"/api/presence?users=u1,u2", admin)
	us := p["users"].(map[string]any)
	if u1 := us["u1"].(map[string]any); u1["online"] != false || u1["lastSeen"] == nil {
		t.Fatalf("u1 after the grace delay: %v", u1)
	}
	if u2 := us["u2"].(map[string]any); u2["online"] != true || u2["connections"] != 1.0 {
		t.Fatalf("u2, back: %v", u2)
	}
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// uncomment returns the shipped rules with the commented-out rule named
// name turned on.
func uncomment(t *testing.T, rules, name string) string {
	t.Helper()
	lines := strings.Split(rules, "\n")
	on := false
	for i, l := range lines {
		switch {
		case strings.HasPrefix(l, "  # - name: "+name):
			on = true
		case on && !strings.HasPrefix(l, "  #   "):
			on = false
		}
		if on {
			lines[i] = "  " + strings.TrimPrefix(l, "  # ")
		}
	}
	out := strings.Join(lines, "\n")
	if out == rules {
		t.Fatalf("no commented-out rule %q in rules.yaml", name)
	}
	return out
}

// The shipped commented-out presence rules work once uncommented: the app
// is told of each transition through the durable, signed forward queue,
// and telling everyone reaches every other connection.
func TestShippedPresenceRulesUncommented(t *testing.T) {
	shipped, err := os.ReadFile("../../rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	type forwarded struct {
		h    http.Header
		body []byte
	}
	got := make(chan forwarded, 10)
	app := httptestServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/api/presence-changed" {
			got <- forwarded{r.Header, b}
		}
	})
	t.Setenv("APP_URL", app)
	rules := uncomment(t, uncomment(t, uncomment(t, string(shipped), "presence-to-app"), "user-online-to-everyone"), "user-offline-to-everyone")
	fwdSecret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	addr, cfg, _ := serveWith(t, rules, "forward: {secret: "+fwdSecret+", initial_backoff: 50ms}\npresence: {grace: 100ms}\n")
	sign := func(sub string) string {
		tok, _ := auth.Sign([]byte(cfg.Auth.JWTSecret), map[string]any{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()})
		return tok
	}
	other, _, _, err := ws.Dial(context.Background(), "ws://"+addr+"/ws?token="+sign("other"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	u1, _, _, err := ws.Dial(context.Background(), "ws://"+addr+"/ws?token="+sign("u1"))
	if err != nil {
		t.Fatal(err)
	}
	other.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		msg, err := wsutil.ReadServerText(other)
		if err != nil {
			t.Fatalf("waiting for u1's userOnline to everyone: %v", err)
		}
		if strings.Contains(string(msg), `"userOnline"`) && strings.Contains(string(msg), `"u1"`) {
			break
		}
	}
	u1.Close()
	want := map[string]bool{"presence.online": false, "presence.offline": false}
	for seen := 0; seen < 3; {
		select {
		case f := <-got:
			if err := verifyWith(fwdSecret, f.h, f.body); err != nil {
				t.Fatalf("forward does not verify: %v", err)
			}
			var ev map[string]any
			json.Unmarshal(f.body, &ev)
			sender, _ := ev["sender"].(map[string]any)
			if sender["id"] == "u1" {
				want[ev["type"].(string)] = true
			}
			seen++
		case <-time.After(10 * time.Second):
			t.Fatalf("forwards to the app: %v", want)
		}
		if want["presence.online"] && want["presence.offline"] {
			return
		}
	}
	t.Fatalf("forwards to the app: %v", want)
}

// A store file with garbage in the middle: the node starts (no crash
// loop), the file is moved aside, and presence starts over with no ghost.
func TestCorruptStoreFileAtStart(t *testing.T) {
	needNode(t)
	dbPath := filepath.Join(t.TempDir(), "s.db")
	env := []string{"SIDECAR_STORE__PATH=" + dbPath, "SIDECAR_STORE__SYNC=always"}
	bin, cmd, addr := startBinary(t, "", env...)
	sign := func(claims map[string]any) string {
		claims["exp"] = time.Now().Add(time.Hour).Unix()
		tok, _ := auth.Sign([]byte("sidecar-dev-secret-change-me"), claims)
		return tok
	}
	admin := sign(map[string]any{"sub": "admin", "role": "admin"})
	for _, u := range []string{"u1", "u2", "u3"} {
		c := startNodeClient(t, "ws://"+addr+"/ws?token="+sign(map[string]any{"sub": u}), 100)
		c.waitOpen()
	}
	time.Sleep(300 * time.Millisecond) // the sessions are written
	cmd.Process.Kill()
	cmd.Wait()
	b, err := os.ReadFile(dbPath)
	if err != nil || len(b) < 100 {
		t.Fatalf("store file: %d bytes, %v", len(b), err)
	}
	mid := len(b) / 2
	damaged := append(append(append([]byte{}, b[:mid]...), "\r\n*3\r\n$3\r\nset\r\ngarbage\x00\xff\r\n"...), b[mid:]...)
	if err := os.WriteFile(dbPath, damaged, 0o644); err != nil {
		t.Fatal(err)
	}
	_, addr = runBinary(t, bin, "", env...)
	waitReady(t, "http://"+addr+"/readyz")
	aside, _ := filepath.Glob(dbPath + ".corrupt-*")
	if len(aside) == 0 {
		t.Fatal("the damaged file was not moved aside")
	}
	_, p := getJSON(t, "http://"+addr+"/api/presence?users=u1,u2,u3", admin)
	for u, st := range p["users"].(map[string]any) {
		if st.(map[string]any)["online"] != false {
			t.Errorf("%s after starting over: %v, want offline (no ghost)", u, st)
		}
	}
}
