package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

const (
	testSecret = "test-secret"
	testKey    = "key-2"
)

// startServer serves the baseline's routes on 127.0.0.1:0, wired as run
// wires them, and stops it (hub goroutine included) when the test ends.
func startServer(t *testing.T) (*server, *httptest.Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h := newHub()
	// The hub goroutine stops when the test's cleanup cancels ctx.
	go h.run(ctx)
	s := &server{
		hub:     h,
		secret:  []byte(testSecret),
		apiKeys: strings.Split("key-1,"+testKey, ","),
		started: time.Now(),
		logger:  slog.New(slog.DiscardHandler),
	}
	ts := httptest.NewServer(s.routes())
	t.Cleanup(func() {
		// Runs after the clients' cleanups have closed them. Their read
		// goroutines unregister through the hub, so the hub must outlive
		// them, or they block for good.
		for deadline := time.Now().Add(5 * time.Second); h.conns.Load() != 0; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("%d connections still registered after the clients closed", h.conns.Load())
				break
			}
		}
		ts.Close()
		cancel()
	})
	return s, ts
}

func token(t *testing.T, method jwt.SigningMethod, secret string, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(method, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func userToken(t *testing.T, user string) string {
	return token(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": user, "exp": time.Now().Add(time.Hour).Unix()})
}

func wsURL(ts *httptest.Server, tok string) string {
	return "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws?token=" + tok
}

// dial connects as user and closes the connection when the test ends; the
// server's read goroutine then unregisters it.
func dial(t *testing.T, ts *httptest.Server, user string) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(wsURL(ts, userToken(t, user)), nil)
	if err != nil {
		t.Fatalf("dial as %s: %v (%v)", user, err, resp)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// api calls /api/* with an Authorization header (none when auth is "").
func api(t *testing.T, ts *httptest.Server, method, path, auth, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// publish POSTs body and returns the answer's id and delivered count.
func publish(t *testing.T, ts *httptest.Server, path, body string) (string, int) {
	t.Helper()
	code, resp := api(t, ts, http.MethodPost, path, "Bearer "+testKey, body)
	var v struct {
		ID        string `json:"id"`
		Delivered int    `json:"delivered"`
	}
	if code != http.StatusAccepted || json.Unmarshal([]byte(resp), &v) != nil {
		t.Fatalf("POST %s = %d %q, want 202 and {id, delivered}", path, code, resp)
	}
	return v.ID, v.Delivered
}

// waitConns polls the stats endpoint until the hub counts n connections:
// a dial returns when the 101 is read, before the server registers it.
func waitConns(t *testing.T, ts *httptest.Server, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, body := api(t, ts, http.MethodGet, "/api/socket-test/stats", "Bearer "+testKey, "")
		var v struct{ Connections, Users *int64 }
		if code == http.StatusOK && json.Unmarshal([]byte(body), &v) == nil && v.Connections != nil && *v.Connections == int64(n) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats = %d %s, want %d connections", code, body, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// readNotification reads one text frame and checks its shape: exactly the
// keys event, data and id, event "newNotification", id a string.
func readNotification(t *testing.T, c *websocket.Conn, who string) (data, id string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, msg, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("%s: read: %v", who, err)
	}
	if typ != websocket.TextMessage {
		t.Fatalf("%s: frame type %d, want text", who, typ)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(msg, &m); err != nil || len(m) != 3 || m["event"] == nil || m["data"] == nil || m["id"] == nil {
		t.Fatalf("%s: frame %s, want {event, data, id}", who, msg)
	}
	var event string
	if err := json.Unmarshal(m["event"], &event); err != nil || event != "newNotification" {
		t.Errorf("%s: event %s, want \"newNotification\"", who, m["event"])
	}
	if err := json.Unmarshal(m["id"], &id); err != nil {
		t.Errorf("%s: id %s, want a string", who, m["id"])
	}
	return string(m["data"]), id
}

func TestSmoke(t *testing.T) {
	_, ts := startServer(t)
	alice1 := dial(t, ts, "alice")
	alice2 := dial(t, ts, "alice")
	bob := dial(t, ts, "bob")
	waitConns(t, ts, 3)
	code, body := api(t, ts, http.MethodGet, "/api/socket-test/stats", "Bearer key-1", "")
	if !strings.Contains(body, `"users":2`) {
		t.Errorf("stats = %d %s, want 2 users", code, body)
	}

	// The body is passed through as data, compacted.
	id, n := publish(t, ts, "/api/socket-test/broadcast", `{ "title": "hi", "seq": 1 }`)
	if id != "1" || n != 3 {
		t.Errorf("broadcast = id %q, delivered %d; want \"1\", 3", id, n)
	}
	for who, c := range map[string]*websocket.Conn{"alice1": alice1, "alice2": alice2, "bob": bob} {
		if data, got := readNotification(t, c, who); data != `{"title":"hi","seq":1}` || got != "1" {
			t.Errorf("%s got data %s id %q, want {\"title\":\"hi\",\"seq\":1} id \"1\"", who, data, got)
		}
	}

	id, n = publish(t, ts, "/api/socket-test/send/bob", `{"to":"bob"}`)
	if id != "2" || n != 1 {
		t.Errorf("send/bob = id %q, delivered %d; want \"2\", 1", id, n)
	}
	id, n = publish(t, ts, "/api/socket-test/send/alice", `{"to":"alice"}`)
	if id != "3" || n != 2 {
		t.Errorf("send/alice = id %q, delivered %d; want \"3\", 2", id, n)
	}
	if id, n := publish(t, ts, "/api/socket-test/send/carol", `{"to":"carol"}`); id != "4" || n != 0 {
		t.Errorf("send/carol (not connected) = id %q, delivered %d; want \"4\", 0", id, n)
	}
	publish(t, ts, "/api/socket-test/broadcast", `{"last":true}`)

	// Each connection's frames arrive in order, so the next frame after
	// the first broadcast shows what a connection was not sent.
	for _, tc := range []struct {
		who  string
		c    *websocket.Conn
		want []string // data, in order
	}{
		{"alice1", alice1, []string{`{"to":"alice"}`, `{"last":true}`}},
		{"alice2", alice2, []string{`{"to":"alice"}`, `{"last":true}`}},
		{"bob", bob, []string{`{"to":"bob"}`, `{"last":true}`}},
	} {
		for _, want := range tc.want {
			if data, _ := readNotification(t, tc.c, tc.who); data != want {
				t.Errorf("%s got %s, want %s", tc.who, data, want)
			}
		}
	}

	// A closed connection is forgotten.
	bob.Close()
	waitConns(t, ts, 2)
	if _, n := publish(t, ts, "/api/socket-test/send/bob", `{}`); n != 0 {
		t.Errorf("send/bob after bob left: delivered %d, want 0", n)
	}
}

func TestWebSocketAuth(t *testing.T) {
	_, ts := startServer(t)
	hour := time.Now().Add(time.Hour).Unix()
	for _, tc := range []struct {
		name  string
		token string
	}{
		{"no token", ""},
		{"garbage", "not-a-jwt"},
		{"wrong secret", token(t, jwt.SigningMethodHS256, "other", jwt.MapClaims{"sub": "alice", "exp": hour})},
		{"HS384", token(t, jwt.SigningMethodHS384, testSecret, jwt.MapClaims{"sub": "alice", "exp": hour})},
		{"expired", token(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Hour).Unix()})},
		{"no sub", token(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"exp": hour})},
		{"empty sub", token(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "", "exp": hour})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, resp, err := websocket.DefaultDialer.Dial(wsURL(ts, tc.token), nil)
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded, want 401")
			}
			if resp == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("dial: %v, response %v; want 401", err, resp)
			}
		})
	}
}

func TestAPIAuth(t *testing.T) {
	_, ts := startServer(t)
	for _, tc := range []struct {
		name string
		auth string
		want int
	}{
		{"no header", "", http.StatusUnauthorized},
		{"not bearer", "Basic " + testKey, http.StatusUnauthorized},
		{"bearer lowercase", "bearer " + testKey, http.StatusUnauthorized},
		{"wrong key", "Bearer nope", http.StatusForbidden},
		{"empty key", "Bearer ", http.StatusUnauthorized}, // the header's trailing space is trimmed
		{"key with a prefix of a real one", "Bearer key-", http.StatusForbidden},
	} {
		for _, ep := range []struct{ method, path string }{
			{http.MethodPost, "/api/socket-test/broadcast"},
			{http.MethodPost, "/api/socket-test/send/alice"},
			{http.MethodGet, "/api/socket-test/stats"},
		} {
			if code, body := api(t, ts, ep.method, ep.path, tc.auth, `{}`); code != tc.want {
				t.Errorf("%s: %s %s = %d %q, want %d", tc.name, ep.method, ep.path, code, body, tc.want)
			}
		}
	}
	// Nothing was published: the first good POST gets id 1.
	if id, _ := publish(t, ts, "/api/socket-test/broadcast", `{}`); id != "1" {
		t.Errorf("first accepted publish has id %q, want \"1\"", id)
	}
}

func TestPublishBadBody(t *testing.T) {
	_, ts := startServer(t)
	for _, tc := range []struct {
		name, body string
		want       int
	}{
		{"not JSON", `hello`, http.StatusBadRequest},
		{"empty", ``, http.StatusBadRequest},
		{"truncated", `{"a":`, http.StatusBadRequest},
		{"too large", `"` + strings.Repeat("x", maxBodyBytes) + `"`, http.StatusRequestEntityTooLarge},
	} {
		if code, body := api(t, ts, http.MethodPost, "/api/socket-test/broadcast", "Bearer "+testKey, tc.body); code != tc.want {
			t.Errorf("%s: broadcast = %d %q, want %d", tc.name, code, body, tc.want)
		}
	}
}
