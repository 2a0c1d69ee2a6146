package engine

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/sidecar/sidecar/engine/auth"
	"github.com/sidecar/sidecar/engine/store"
	"github.com/sidecar/sidecar/engine/webhook"
)

const (
	testSecret  = "test-secret-0123456789"
	testAPIKey  = "test-api-key"
	testWebhook = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
)

// fakeRouter answers with a function of the event and records every event.
type fakeRouter struct {
	mu     sync.Mutex
	events []*Event
	route  func(ev *Event) []Command
	// fail, when set, is the error Route returns with the commands: rules
	// that failed at run time.
	fail func(ev *Event) error
	// onCtx, when set, sees the context of every Route call.
	onCtx func(ctx context.Context, ev *Event)
	// forget keeps no events: for soak tests.
	forget bool
	// handles, when set, says which event types a rule listens to; nil:
	// all of them.
	handles func(typ string) bool
}

func (f *fakeRouter) Handles(typ string) bool {
	f.mu.Lock()
	h := f.handles
	f.mu.Unlock()
	return h == nil || h(typ)
}

func (f *fakeRouter) Route(ctx context.Context, ev *Event, out []Command) ([]Command, error) {
	f.mu.Lock()
	if !f.forget {
		f.events = append(f.events, ev)
	}
	route, fail, onCtx := f.route, f.fail, f.onCtx
	f.mu.Unlock()
	if onCtx != nil {
		onCtx(ctx, ev)
	}
	if route != nil {
		out = append(out, route(ev)...)
	}
	if fail != nil {
		return out, fail(ev)
	}
	return out, nil
}

func (f *fakeRouter) seen(typ string) []*Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*Event
	for _, ev := range f.events {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

// node is an engine serving on 127.0.0.1:0 for one test.
type node struct {
	t      *testing.T
	e      *Engine
	addr   string
	router *fakeRouter
	cancel context.CancelFunc
	done   chan error
	// clients are the test's own sockets, closed at cleanup or by
	// closeClients.
	clients []net.Conn
}

func (n *node) closeClients() {
	for _, c := range n.clients {
		c.Close()
	}
}

type nodeOption func(*Config)

// withStreams keeps max events per replay stream, for an hour.
func withStreams(max int) nodeOption {
	return func(c *Config) { c.Streams = c.PresenceStore.(*store.Store).Streams(max, time.Hour) }
}

// withGrace sets the presence grace delay.
func withGrace(d time.Duration) nodeOption {
	return func(c *Config) { c.Presence.Grace = d }
}

// withLeeway verifies tokens with a leeway other than the default 5 s.
func withLeeway(d time.Duration) nodeOption {
	return func(c *Config) {
		v, err := auth.New(auth.Config{Secret: []byte(testSecret), Leeway: d})
		if err != nil {
			panic(err)
		}
		c.Auth = v
	}
}

func startNode(t *testing.T, opts ...nodeOption) *node {
	t.Helper()
	verifier, err := auth.New(auth.Config{Secret: []byte(testSecret)})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(":memory:", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hooks, err := webhook.NewVerifier([]string{testWebhook}, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	router := &fakeRouter{}
	cfg := Config{
		Auth:     verifier,
		Router:   router,
		Store:    st,
		Webhooks: hooks,
		APIKeys:  []string{testAPIKey},

		PresenceStore: st,
		Streams:       st.Streams(100, time.Hour),
		Limits: Limits{
			HandshakeTimeout: 2 * time.Second,
		},
		DrainTimeout: 5 * time.Second,
	}
	for _, o := range opts {
		o(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{t: t, e: e, addr: ln.Addr().String(), router: router, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- e.Serve(ctx, ln) }()
	t.Cleanup(func() {
		n.stop()
		st.Close()
	})
	return n
}

// stop shuts the node down and returns Serve's error.
func (n *node) stop() error {
	n.cancel()
	select {
	case err, ok := <-n.done:
		if ok {
			close(n.done)
		}
		return err
	case <-time.After(15 * time.Second):
		n.t.Fatal("engine did not stop within 15s")
		return nil
	}
}

func token(t testing.TB, claims map[string]any) string {
	t.Helper()
	if _, ok := claims["exp"]; !ok {
		claims["exp"] = time.Now().Add(time.Hour).Unix()
	}
	tok, err := auth.Sign([]byte(testSecret), claims)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func userToken(t testing.TB, user string) string {
	return token(t, map[string]any{"sub": user})
}

// client is a test WebSocket client.
type client struct {
	t      testing.TB
	conn   net.Conn
	br     *bufio.Reader
	silent bool // never answer pings
}

func (n *node) dial(user string) *client {
	n.t.Helper()
	return n.dialURL("ws://" + n.addr + "/ws?token=" + userToken(n.t, user))
}

func (n *node) dialURL(url string) *client {
	n.t.Helper()
	c, err := dialWS(url, nil)
	if err != nil {
		n.t.Fatalf("dial %s: %v", strings.Split(url, "?")[0], err)
	}
	n.clients = append(n.clients, c.conn)
	n.t.Cleanup(func() { c.conn.Close() })
	return &client{t: n.t, conn: c.conn, br: c.br}
}

type dialed struct {
	conn net.Conn
	br   *bufio.Reader
}

func dialWS(url string, header http.Header) (*dialed, error) {
	d := ws.Dialer{Timeout: 5 * time.Second}
	if header != nil {
		d.Header = ws.HandshakeHeaderHTTP(header)
	}
	conn, br, _, err := d.Dial(context.Background(), url)
	if err != nil {
		return nil, err
	}
	if br == nil {
		br = bufio.NewReader(conn)
	}
	return &dialed{conn: conn, br: br}, nil
}

// frame is a server frame as the client saw it.
type frame struct {
	op      ws.OpCode
	payload []byte
}

// next reads the next data or close frame, answering pings, within d.
func (c *client) next(d time.Duration) (frame, error) {
	c.conn.SetReadDeadline(time.Now().Add(d))
	defer c.conn.SetReadDeadline(time.Time{})
	for {
		h, err := ws.ReadHeader(c.br)
		if err != nil {
			return frame{}, err
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(c.br, p); err != nil {
			return frame{}, err
		}
		switch h.OpCode {
		case ws.OpPing:
			if !c.silent {
				wsutil.WriteClientMessage(c.conn, ws.OpPong, p)
			}
			continue
		case ws.OpPong:
			continue
		}
		return frame{h.OpCode, p}, nil
	}
}

// event reads the next event frame and decodes it.
func (c *client) event(d time.Duration) (map[string]any, error) {
	f, err := c.next(d)
	if err != nil {
		return nil, err
	}
	if f.op == ws.OpClose {
		code, reason := ws.ParseCloseFrameData(f.payload)
		return nil, fmt.Errorf("closed %d %q", code, reason)
	}
	var m map[string]any
	if err := json.Unmarshal(f.payload, &m); err != nil {
		return nil, fmt.Errorf("frame %q: %v", f.payload, err)
	}
	return m, nil
}

func (c *client) mustEvent(name string) map[string]any {
	c.t.Helper()
	m, err := c.event(5 * time.Second)
	if err != nil {
		c.t.Fatalf("want %s: %v", name, err)
	}
	if m["event"] != name {
		c.t.Fatalf("got %v, want event %s", m, name)
	}
	return m
}

// noEvent asserts nothing arrives within d.
func (c *client) noEvent(d time.Duration) {
	c.t.Helper()
	if m, err := c.event(d); err == nil {
		c.t.Fatalf("unexpected frame %v", m)
	}
}

// closeCode reads until a close frame and returns its code; 0 if the
// connection ended without one.
func (c *client) closeCode(d time.Duration) ws.StatusCode {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		f, err := c.next(time.Until(deadline))
		if err != nil {
			return 0
		}
		if f.op == ws.OpClose {
			code, _ := ws.ParseCloseFrameData(f.payload)
			return code
		}
	}
	return 0
}

func (c *client) send(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := wsutil.WriteClientMessage(c.conn, ws.OpText, b); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) sendRaw(b []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

// api calls an /api endpoint with the test API key.
func (n *node) api(method, path string, body any) (int, map[string]any) {
	n.t.Helper()
	return n.request(method, path, "Bearer "+testAPIKey, body)
}

func (n *node) request(method, path, authz string, body any) (int, map[string]any) {
	n.t.Helper()
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			n.t.Fatal(err)
		}
	}
	status, _, resp := n.rawRequest(method, path, authz, b)
	var m map[string]any
	json.Unmarshal(resp, &m)
	return status, m
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rawConn opens a TCP connection and completes a WebSocket handshake by
// hand, for tests that then write malformed frames.
func (n *node) rawConn(user string) *client {
	n.t.Helper()
	conn, err := net.Dial("tcp", n.addr)
	if err != nil {
		n.t.Fatal(err)
	}
	n.clients = append(n.clients, conn)
	n.t.Cleanup(func() { conn.Close() })
	req := "GET /ws?token=" + userToken(n.t, user) + " HTTP/1.1\r\nHost: " + n.addr +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		n.t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		n.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		n.t.Fatalf("handshake: %s", resp.Status)
	}
	return &client{t: n.t, conn: conn, br: br}
}

// isClosedErr reports whether err means the peer closed the connection.
func isClosedErr(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrUnexpectedEOF) ||
		strings.Contains(fmt.Sprint(err), "reset by peer")
}
