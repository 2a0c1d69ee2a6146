package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sidecar/sidecar/engine/auth"
)

// Socket.IO end to end: socket.io-client v4 from npm, unchanged, driven
// by testdata/e2e/sio.mjs, against config.example.yaml and the shipped
// rules.

// sioClient runs sio.mjs: it prints what the client sees as JSON lines
// and takes commands on stdin.
type sioClient struct {
	*nodeClient
	in io.WriteCloser
}

func startSIOClient(t *testing.T, url string, opts map[string]any) *sioClient {
	t.Helper()
	b, _ := json.Marshal(opts)
	cmd := exec.Command("node", "sio.mjs", url)
	cmd.Dir = e2eDir
	cmd.Env = append(os.Environ(), "SIO_OPTS="+string(b))
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	return &sioClient{nodeClient: runNodeClient(t, cmd), in: in}
}

func (c *sioClient) do(cmd map[string]any) {
	c.t.Helper()
	b, _ := json.Marshal(cmd)
	if _, err := fmt.Fprintf(c.in, "%s\n", b); err != nil {
		c.t.Fatal(err)
	}
}

// expect returns the next line that has key, failing on a disconnect or
// a connect_error that is not what is expected.
func (c *sioClient) expect(key string) map[string]any {
	c.t.Helper()
	for {
		m := c.next()
		if _, ok := m[key]; ok {
			return m
		}
		if _, ok := m["connect_error"]; ok {
			c.t.Fatalf("socket.io client: %v, want %s", m, key)
		}
	}
}

// eventArgs returns the next event's name and first argument.
func (c *sioClient) event() (string, map[string]any) {
	c.t.Helper()
	m := c.expect("event")
	args, _ := m["args"].([]any)
	var data map[string]any
	if len(args) > 0 {
		data, _ = args[0].(map[string]any)
	}
	return m["event"].(string), data
}

// socket.io-client with transports: ["websocket"] connects with its token
// in auth, gets a signed webhook's event routed by the shipped rules and
// the test API's, emits with an ack, watches; after its transport dies it
// reconnects with socket.recovered true and gets, in order, what was sent
// meanwhile. A bad token is a connect_error that says so, and another
// namespace one too.
func TestSocketIOClientOverWebSocket(t *testing.T) {
	needNode(t)
	n := startExample(t)
	admin := n.token(map[string]any{"sub": "ops", "role": "admin"})
	url := "http://" + n.addr
	ws := map[string]any{"transports": []string{"websocket"}}

	prov := startSIOClient(t, url, mergeOpts(ws, map[string]any{"auth": map[string]any{"token": n.token(map[string]any{"sub": "prov-1", "role": "provider"})}}))
	if m := prov.expect("connect"); m["recovered"] != false || m["transport"] != "websocket" {
		t.Fatalf("connect: %v", m)
	}
	body := `{"type":"booking.created","timestamp":"2026-11-25T10:00:00Z","data":{"id":"bk-1","status":"pending","providerId":"prov-1","customerId":"cust-1","customerName":"Ana","serviceName":"Haircut"}}`
	out, err := exec.Command("node", filepath.Join(e2eDir, "webhook.mjs"), url+"/webhooks", n.cfg.Webhooks.Secrets[0], "msg_sio_1", body).Output()
	if err != nil {
		t.Fatalf("webhook.mjs: %v %s", err, out)
	}
	if name, data := prov.event(); name != "newNotification" || data["bookingId"] != "bk-1" {
		t.Fatalf("after the webhook: %s %v", name, data)
	}
	if status, resp := n.post("/api/socket-test/send/prov-1", admin, map[string]any{"title": "one"}); status != 202 || resp["delivered"] != 1.0 {
		t.Fatalf("send: %d %v", status, resp)
	}
	if name, data := prov.event(); name != "newNotification" || data["title"] != "one" {
		t.Fatalf("after send: %s %v", name, data)
	}

	prov.do(map[string]any{"emit": "typing", "data": map[string]any{"to": "cust-1", "isTyping": true}, "ack": 1})
	if m := prov.expect("ack"); m["ack"] != 1.0 || fmt.Sprint(m["args"]) != "[map[ok:true]]" {
		t.Fatalf("typing ack: %v", m)
	}
	prov.do(map[string]any{"emit": "typo", "data": 1, "ack": 2})
	if m := prov.expect("ack"); fmt.Sprint(m["args"]) == "[map[ok:true]]" {
		t.Fatalf("unknown event ack: %v, want unknown_event", m)
	}
	prov.do(map[string]any{"emit": "watch", "data": map[string]any{"users": []string{"cust-1"}}, "ack": 3})
	if name, data := prov.event(); name != "presence" || data["users"].(map[string]any)["cust-1"].(map[string]any)["online"] != false {
		t.Fatalf("watch answer: %s %v", name, data)
	}
	cust := startSIOClient(t, url, mergeOpts(ws, map[string]any{"auth": map[string]any{"token": n.token(map[string]any{"sub": "cust-1"})}}))
	cust.expect("connect")
	if name, data := prov.event(); name != "userOnline" || data["userId"] != "cust-1" {
		t.Fatalf("watcher after cust-1 connected: %s %v", name, data)
	}

	// The transport dies; three events are sent before the client is back.
	prov.do(map[string]any{"blip": true})
	prov.expect("disconnect")
	for _, title := range []string{"two", "three", "four"} {
		n.post("/api/socket-test/send/prov-1", admin, map[string]any{"title": title})
	}
	if m := prov.expect("connect"); m["recovered"] != true {
		t.Fatalf("reconnect: %v, want recovered", m)
	}
	for _, want := range []string{"two", "three", "four"} {
		if name, data := prov.event(); name != "newNotification" || data["title"] != want {
			t.Fatalf("after the reconnect: %s %v, want %q", name, data, want)
		}
	}

	bad := startSIOClient(t, url, mergeOpts(ws, map[string]any{"auth": map[string]any{"token": "not-a-jwt"}, "reconnection": false}))
	if m := bad.next(); m["connect_error"] != "unauthorized" || m["data"].(map[string]any)["reason"] != "invalid token" {
		t.Fatalf("bad token: %v, want connect_error unauthorized", m)
	}
	expired, err := auth.Sign([]byte(n.cfg.Auth.JWTSecret), map[string]any{"sub": "late", "exp": time.Now().Add(-time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	old := startSIOClient(t, url, mergeOpts(ws, map[string]any{"auth": map[string]any{"token": expired}, "reconnection": false}))
	if m := old.next(); m["connect_error"] != "unauthorized" || m["data"].(map[string]any)["reason"] != "token expired" {
		t.Fatalf("expired token: %v, want connect_error unauthorized, token expired", m)
	}
	admins := startSIOClient(t, url+"/admin", mergeOpts(ws, map[string]any{"auth": map[string]any{"token": admin}, "reconnection": false}))
	if m := admins.next(); m["connect_error"] != "Invalid namespace" {
		t.Fatalf("namespace /admin: %v", m)
	}
}

// socket.io-client with its default transports (long-polling, then the
// upgrade to WebSocket) and with polling alone: the same events, acks and
// recovery, a CONNECT answered over polling.
func TestSocketIOClientDefaultTransportsAndPolling(t *testing.T) {
	needNode(t)
	n := startExample(t)
	admin := n.token(map[string]any{"sub": "ops", "role": "admin"})
	url := "http://" + n.addr
	for _, tc := range []struct {
		name    string
		opts    map[string]any
		upgrade bool
	}{
		{"default transports", map[string]any{}, true},
		{"polling only", map[string]any{"transports": []string{"polling"}}, false},
	} {
		user := "prov-" + strings.ReplaceAll(tc.name, " ", "-")
		c := startSIOClient(t, url, mergeOpts(tc.opts, map[string]any{"auth": map[string]any{"token": n.token(map[string]any{"sub": user, "role": "provider"})}}))
		// The CONNECT goes over polling; the upgrade may finish before or
		// after the client reports it connected.
		connected, upgraded := false, false
		for !connected || upgraded != tc.upgrade {
			m := c.next()
			switch {
			case m["connect"] == true:
				connected = true
				if !tc.upgrade && m["transport"] != "polling" {
					t.Fatalf("%s: connect %v, want over polling", tc.name, m)
				}
			case m["upgrade"] == "websocket" && tc.upgrade:
				upgraded = true
			default:
				t.Fatalf("%s: %v, want connect and the upgrade", tc.name, m)
			}
		}
		if status, resp := n.post("/api/socket-test/send/"+user, admin, map[string]any{"title": "one"}); status != 202 || resp["delivered"] != 1.0 {
			t.Fatalf("%s: send %d %v", tc.name, status, resp)
		}
		if name, data := c.event(); name != "newNotification" || data["title"] != "one" {
			t.Fatalf("%s: %s %v", tc.name, name, data)
		}
		if status, _ := n.post("/api/socket-test/broadcast", admin, map[string]any{"title": "all"}); status != 202 {
			t.Fatalf("%s: broadcast %d", tc.name, status)
		}
		if name, data := c.event(); name != "newNotification" || data["title"] != "all" {
			t.Fatalf("%s: after the broadcast: %s %v", tc.name, name, data)
		}
		body := `{"type":"booking.created","timestamp":"2026-11-25T10:00:00Z","data":{"id":"bk-` + user + `","status":"pending","providerId":"` + user + `","customerId":"c","customerName":"Ana","serviceName":"Haircut"}}`
		if out, err := exec.Command("node", filepath.Join(e2eDir, "webhook.mjs"), url+"/webhooks", n.cfg.Webhooks.Secrets[0], "msg_"+user, body).Output(); err != nil {
			t.Fatalf("%s: webhook.mjs: %v %s", tc.name, err, out)
		}
		if name, data := c.event(); name != "newNotification" || data["bookingId"] != "bk-"+user {
			t.Fatalf("%s: after the signed webhook: %s %v", tc.name, name, data)
		}
		c.do(map[string]any{"emit": "typing", "data": map[string]any{"to": "x"}, "ack": 1})
		if m := c.expect("ack"); fmt.Sprint(m["args"]) != "[map[ok:true]]" {
			t.Fatalf("%s: ack %v", tc.name, m)
		}
		c.do(map[string]any{"blip": true})
		c.expect("disconnect")
		n.post("/api/socket-test/send/"+user, admin, map[string]any{"title": "two"})
		if m := c.expect("connect"); m["recovered"] != true {
			t.Fatalf("%s: reconnect %v, want recovered", tc.name, m)
		}
		if name, data := c.event(); name != "newNotification" || data["title"] != "two" {
			t.Fatalf("%s: after the reconnect: %s %v", tc.name, name, data)
		}
	}
}

// Shutdown: the client sees its transport close and reconnects, to the
// node that comes back on the same address.
func TestSocketIOClientReconnectsAfterRestart(t *testing.T) {
	needNode(t)
	store := "SIDECAR_STORE__PATH=" + filepath.Join(t.TempDir(), "s.db")
	bin, cmd, addr := startBinary(t, "", store)
	claims := map[string]any{"sub": "u1", "exp": time.Now().Add(time.Hour).Unix()}
	tok, err := auth.Sign([]byte("sidecar-dev-secret-change-me"), claims) // config.example.yaml's development secret
	if err != nil {
		t.Fatal(err)
	}
	c := startSIOClient(t, "http://"+addr, map[string]any{"transports": []string{"websocket"}, "auth": map[string]any{"token": tok}})
	c.expect("connect")
	cmd.Process.Signal(os.Interrupt)
	if m := c.expect("disconnect"); m["disconnect"] != "transport close" {
		t.Fatalf("at shutdown: %v, want a transport close (socket.io-client reconnects after it)", m)
	}
	cmd.Wait()
	runBinary(t, bin, "", store, "SIDECAR_LISTEN="+addr)
	if m := c.expect("connect"); m["connect"] != true {
		t.Fatalf("after the restart: %v", m)
	}
}

func mergeOpts(a, b map[string]any) map[string]any {
	m := map[string]any{}
	for k, v := range a {
		m[k] = v
	}
	for k, v := range b {
		m[k] = v
	}
	return m
}
