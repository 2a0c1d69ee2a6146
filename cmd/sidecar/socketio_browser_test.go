package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sioBundle is socket.io-client's browser bundle as npm ci installs it;
// the test serves it, never a copy of it.
var sioBundle = filepath.Join(e2eDir, "node_modules", "socket.io-client", "dist", "socket.io.min.js")

// sioPageServer serves testdata/e2e/sio-page.html at / and the bundle at
// /socket.io.min.js from its own 127.0.0.1 port: another origin than the
// sidecar's. It returns the server's origin, http://127.0.0.1:port.
func sioPageServer(t *testing.T) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		http.ServeFile(w, r, filepath.Join(e2eDir, "sio-page.html"))
	})
	mux.HandleFunc("GET /socket.io.min.js", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, sioBundle)
	})
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s.URL
}

// sioArtifactsDir is artifactsDir's for this test: $SIDECAR_ARTIFACTS/
// socketio-browser (kept), else a temporary directory.
func sioArtifactsDir(t *testing.T) string {
	t.Helper()
	root := os.Getenv("SIDECAR_ARTIFACTS")
	if root == "" {
		return t.TempDir()
	}
	dir, err := filepath.Abs(filepath.Join(root, "socketio-browser"))
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// sioNet is what Chromium did on the wire for the page's Socket.IO, as
// testdata/e2e/sio-page.mjs recorded it.
type sioNet struct {
	Method           string `json:"method"`
	WebSocket        bool   `json:"websocket"`
	Transport        string `json:"transport"`
	SID              bool   `json:"sid"`
	URL              string `json:"url"`
	Origin           string `json:"origin"`
	Status           int    `json:"status"`
	AllowOrigin      string `json:"allowOrigin"`
	AllowCredentials string `json:"allowCredentials"`
	Failure          string `json:"failure"`
	Error            string `json:"error"`
}

func (e sioNet) String() string {
	if e.WebSocket {
		return fmt.Sprintf("WebSocket %s (error %q)", e.URL, e.Error)
	}
	return fmt.Sprintf("%s %s Origin %q: %d, Access-Control-Allow-Origin %q, -Credentials %q, failure %q",
		e.Method, e.URL, e.Origin, e.Status, e.AllowOrigin, e.AllowCredentials, e.Failure)
}

// sioSeen is the page's window.seen: what socket.io-client reported.
type sioSeen struct {
	Origin             string   `json:"origin"`
	FirstTransport     string   `json:"firstTransport"`
	TransportAtConnect string   `json:"transportAtConnect"`
	Transport          string   `json:"transport"`
	Connected          bool     `json:"connected"`
	ID                 string   `json:"id"`
	Upgrades           []string `json:"upgrades"`
	ConnectErrors      []struct {
		Message     string `json:"message"`
		Description string `json:"description"`
		Type        string `json:"type"`
	} `json:"connectErrors"`
}

// sioLine is one line sio-page.mjs prints.
type sioLine struct {
	Connected *sioSeen `json:"connected"`
	Network   []sioNet `json:"network"`
	Console   []string `json:"console"`
	Transport string   `json:"transport"`
	Event     *struct {
		Event string
		Args  []any
	} `json:"event"`
	Ack *struct {
		Args    []any
		Timeout bool
	} `json:"ack"`
	Denied      string            `json:"denied"`
	Seen        *sioSeen          `json:"seen"`
	Done        bool              `json:"done"`
	Screenshots map[string]string `json:"screenshots"`
	Error       string            `json:"error"`
}

// socket.io-client v4's browser bundle, unchanged, in headless Chromium,
// on a page of another origin (another port of 127.0.0.1) than the
// sidecar's, with its default transports: it opens over HTTP long-polling
// across origins (CORS, with credentials), upgrades to WebSocket, gets an
// event sent through the test API and emits with an ack callback. Pages
// on an origin that auth.origins does not list get a connect_error, with
// the default transports and with WebSocket alone, and are never
// connected. testdata/e2e/sio-page.mjs drives the browser; screenshots go
// to $SIDECAR_ARTIFACTS/socketio-browser.
func TestSocketIOClientInABrowser(t *testing.T) {
	chromium := needBrowser(t)
	if _, err := os.Stat(sioBundle); err != nil {
		t.Skip("testdata/e2e/node_modules/socket.io-client/dist/socket.io.min.js is missing: run `make test` (it runs npm ci there)")
	}
	allowed, denied := sioPageServer(t), sioPageServer(t)
	// The denied page differs from the allowed one by its port alone.
	n := startExample(t, "SIDECAR_AUTH__ORIGINS="+allowed+",https://app.example")
	if got := strings.Join(n.cfg.Auth.Origins, ","); got != allowed+",https://app.example" {
		t.Fatalf("auth.origins %q", got)
	}
	sidecar := "http://" + n.addr
	pageURL := func(base, user string, extra ...string) string {
		q := url.Values{"sidecar": {sidecar}, "token": {n.token(map[string]any{"sub": user})}}
		for i := 0; i+1 < len(extra); i += 2 {
			q.Set(extra[i], extra[i+1])
		}
		return base + "/?" + q.Encode()
	}
	out := sioArtifactsDir(t)
	cfg, _ := json.Marshal(map[string]any{
		"chromium": chromium,
		"out":      out,
		"allowed":  pageURL(allowed, "browser-1"),
		"denied": []map[string]string{
			{"name": "denied-default", "url": pageURL(denied, "browser-2", "reconnection", "false")},
			{"name": "denied-websocket", "url": pageURL(denied, "browser-3", "reconnection", "false", "transports", "websocket")},
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, "node", "sio-page.mjs", string(cfg))
	cmd.Dir = e2eDir
	c := runNodeClient(t, cmd)
	next := func(what string) sioLine {
		t.Helper()
		m := c.next()
		b, _ := json.Marshal(m)
		var l sioLine
		if err := json.Unmarshal(b, &l); err != nil {
			t.Fatalf("%s: sio-page.mjs printed %s: %v", what, b, err)
		}
		if l.Error != "" || m["unparsed"] != nil {
			t.Fatalf("%s: sio-page.mjs: %s%v\nscreenshots in %s", what, l.Error, m["unparsed"], out)
		}
		return l
	}

	// Connected over long-polling, then upgraded.
	l := next("connect")
	s := l.Connected
	if s == nil {
		t.Fatalf("first line: %+v, want connected", l)
	}
	if s.Origin != allowed {
		t.Errorf("the page's origin is %q, want %q", s.Origin, allowed)
	}
	// The upgrade may finish before the CONNECT's answer comes (over the
	// WebSocket then) or after; the CONNECT is POSTed over polling either
	// way (checkCORSPolling).
	t.Logf("connected as %s over %s", s.ID, s.TransportAtConnect)
	if s.FirstTransport != "polling" {
		t.Errorf("first transport %q: want polling (the default transports start with it)", s.FirstTransport)
	}
	if s.Transport != "websocket" || strings.Join(s.Upgrades, ",") != "websocket" {
		t.Errorf("transport %q after upgrades %v: want one upgrade, to websocket", s.Transport, s.Upgrades)
	}
	t.Logf("network: %v", l.Network)
	checkCORSPolling(t, l.Network, allowed)

	// An event through the API, to the page's user.
	status, resp := n.post("/api/socket-test/send/browser-1", n.token(map[string]any{"sub": "ops", "role": "admin"}),
		map[string]any{"title": "to the browser", "message": "across origins"})
	if status != http.StatusAccepted || resp["delivered"] != 1.0 {
		t.Fatalf("send to browser-1: %d %v, want 202 delivered 1", status, resp)
	}
	l = next("event")
	// The arguments: the data, then the event's id (the offset a
	// reconnect recovers from).
	if l.Event == nil || l.Event.Event != "newNotification" || len(l.Event.Args) != 2 {
		t.Fatalf("the page got %+v, want newNotification, its data and id", l.Event)
	}
	if data, _ := l.Event.Args[0].(map[string]any); data["title"] != "to the browser" || data["message"] != "across origins" {
		t.Fatalf("the page got newNotification %v, want the title and message sent", l.Event.Args)
	}
	if id, _ := l.Event.Args[1].(string); id == "" {
		t.Errorf("the event's id: %v, want a string", l.Event.Args[1])
	}

	// emit with an ack callback.
	l = next("ack")
	if l.Ack == nil || l.Ack.Timeout || fmt.Sprint(l.Ack.Args) != "[map[ok:true]]" {
		t.Fatalf("typing's ack: %+v, want [{ok: true}]", l.Ack)
	}
	l = next("after the ack")
	if l.Transport != "websocket" {
		t.Errorf("transport after the ack: %q, want websocket still", l.Transport)
	}
	// The event and the ack went over the WebSocket: after it, only the
	// polling GET the upgrade released.
	for i, e := range l.Network {
		if e.WebSocket {
			if rest := l.Network[i+1:]; len(rest) > 1 || len(rest) == 1 && (rest[0].Method != "GET" || rest[0].WebSocket) {
				t.Errorf("after the upgrade the page still polled: %v", rest)
			}
			break
		}
	}
	if len(l.Console) > 0 {
		t.Errorf("the allowed page's console has errors: %q", l.Console)
	}

	// Origins auth.origins does not list: refused, and said so.
	for _, want := range []struct{ name, transport, message string }{
		{"denied-default", "polling", "xhr poll error"},
		{"denied-websocket", "websocket", "websocket error"},
	} {
		l = next(want.name)
		if l.Denied != want.name || l.Seen == nil {
			t.Fatalf("%+v, want the %s page's report", l, want.name)
		}
		s := l.Seen
		t.Logf("%s: connect_error %+v; Chromium's console: %q; network: %v", want.name, s.ConnectErrors, l.Console, l.Network)
		if s.Connected || s.ID != "" {
			t.Errorf("%s: the page from %s connected (%q)", want.name, denied, s.ID)
		}
		if len(s.ConnectErrors) != 1 || s.ConnectErrors[0].Message != want.message {
			t.Errorf("%s: connect_error %+v, want one, %q", want.name, s.ConnectErrors, want.message)
		}
		if len(l.Network) == 0 || l.Network[0].Transport != want.transport || l.Network[0].SID {
			t.Fatalf("%s: network %v, want a handshake over %s first", want.name, l.Network, want.transport)
		}
		// Chromium hides a response CORS blocks from the page (and from
		// playwright): the request failed, and the console says why.
		for _, e := range l.Network {
			if e.SID || e.Status != 0 || e.AllowOrigin != "" {
				t.Errorf("%s: %v: the browser got an answer through", want.name, e)
			}
			if e.WebSocket && !strings.Contains(e.Error, "403") || !e.WebSocket && e.Failure == "" {
				t.Errorf("%s: %v: want it failed (a WebSocket by a 403)", want.name, e)
			}
		}
	}
	// What the server answered the blocked handshakes, as Chromium sent them.
	for _, tr := range []string{"polling", "websocket"} {
		req, _ := http.NewRequest("GET", sidecar+"/socket.io/?EIO=4&transport="+tr, nil)
		req.Header.Set("Origin", denied)
		if tr == "websocket" {
			for k, v := range map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="} {
				req.Header.Set(k, v)
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Access-Control-Allow-Origin") != "" || resp.Header.Get("Access-Control-Allow-Credentials") != "" {
			t.Errorf("%s handshake from %s: %d %v, want 403 without CORS headers", tr, denied, resp.StatusCode, resp.Header)
		}
	}
	// Neither denied user is online.
	admin := n.token(map[string]any{"sub": "ops", "role": "admin"})
	for _, user := range []string{"browser-2", "browser-3"} {
		if status, resp := n.post("/api/socket-test/send/"+user, admin, map[string]any{"title": "x"}); status != http.StatusAccepted || resp["delivered"] != 0.0 {
			t.Errorf("send to %s: %d %v, want delivered 0", user, status, resp)
		}
	}
	l = next("done")
	if !l.Done {
		t.Fatalf("%+v, want done", l)
	}
	t.Logf("in Chromium in %v; screenshots: %v", time.Since(start).Round(time.Millisecond), l.Screenshots)
}

// checkCORSPolling checks the allowed page's handshake and polling: the
// first request a GET over polling without a sid, from origin; every
// polling answer 200 with Access-Control-Allow-Origin origin and
// -Credentials true (the page sets withCredentials); the WebSocket with
// the session's sid.
func checkCORSPolling(t *testing.T, network []sioNet, origin string) {
	t.Helper()
	if len(network) == 0 {
		t.Fatal("the browser made no /socket.io/ request")
	}
	if first := network[0]; first.WebSocket || first.Method != "GET" || first.Transport != "polling" || first.SID {
		t.Errorf("first request: %v, want the polling handshake", first)
	}
	polls, posts, upgrade := 0, 0, false
	for _, e := range network {
		if e.WebSocket {
			if e.Transport != "websocket" || !e.SID || e.Error != "" {
				t.Errorf("the upgrade: %v, want transport=websocket with the sid", e)
			}
			upgrade = true
			continue
		}
		if e.Transport != "polling" || e.Origin != origin {
			t.Errorf("%v: want polling from %s", e, origin)
		}
		if e.Status == 0 && e.Failure == "" {
			continue // still open: the GET the upgrade ends
		}
		polls++
		if e.Method == "POST" {
			posts++
		}
		if e.Status != http.StatusOK || e.AllowOrigin != origin || e.AllowCredentials != "true" || e.Failure != "" {
			t.Errorf("%v: want 200 with Access-Control-Allow-Origin %s and -Credentials true", e, origin)
		}
	}
	// The handshake's GET, and the CONNECT POSTed over polling.
	if polls < 2 || posts < 1 || !upgrade {
		t.Errorf("network %v: want the polling handshake, a POST and the WebSocket", network)
	}
}
