//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestSplitPayload(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"2", []string{"2"}},
		{"2\x1e3", []string{"2", "3"}},
		{`40{"sid":"a"}` + "\x1e" + `42["x",{"a":1}]` + "\x1e2", []string{`40{"sid":"a"}`, `42["x",{"a":1}]`, "2"}},
		{"6\x1e", []string{"6", ""}},
	} {
		got := splitPayload([]byte(tc.in))
		if len(got) != len(tc.want) {
			t.Errorf("splitPayload(%q) = %q, want %q", tc.in, got, tc.want)
			continue
		}
		for i := range got {
			if string(got[i]) != tc.want[i] {
				t.Errorf("splitPayload(%q)[%d] = %q, want %q", tc.in, i, got[i], tc.want[i])
			}
		}
	}
}

func TestParseOpen(t *testing.T) {
	for _, tc := range []struct {
		in      string
		sid     string
		ping    int64
		wantErr bool
	}{
		{`0{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`, "abc", 25000, false},
		{`0{"sid":"x","upgrades":[],"pingInterval":1000,"pingTimeout":1000}`, "x", 1000, false},
		{`0{"upgrades":[],"pingInterval":25000,"pingTimeout":20000}`, "", 0, true}, // no sid
		{`0{"sid":"x","pingInterval":0,"pingTimeout":20000}`, "", 0, true},         // no ping interval
		{`0{"sid":`, "", 0, true},
		{`40{"sid":"x"}`, "", 0, true},
		{``, "", 0, true},
	} {
		o, err := parseOpen([]byte(tc.in))
		if (err != nil) != tc.wantErr {
			t.Errorf("parseOpen(%q): err %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if err == nil && (o.SID != tc.sid || o.PingInterval != tc.ping) {
			t.Errorf("parseOpen(%q) = %+v, want sid %q, pingInterval %d", tc.in, o, tc.sid, tc.ping)
		}
	}
}

func TestConnectAnswer(t *testing.T) {
	for _, tc := range []struct {
		in, kind, msg string
	}{
		{`40{"sid":"s1","pid":"p"}`, "ok", ""},
		{`40`, "ok", ""},
		{`44{"message":"unauthorized"}`, "refused", `{"message":"unauthorized"}`},
		{`2`, "ping", ""},
		{`1`, "close", ""},
		{`6`, "", ""},
		{`42["newNotification",{}]`, "", ""},
		{`2probe`, "", ""},
		{``, "", ""},
	} {
		k, msg := connectAnswer([]byte(tc.in))
		if k != tc.kind || string(msg) != tc.msg {
			t.Errorf("connectAnswer(%q) = %q, %q; want %q, %q", tc.in, k, msg, tc.kind, tc.msg)
		}
	}
}

func TestPollURL(t *testing.T) {
	base, _ := url.Parse("http://127.0.0.1:8080/socket.io/")
	for _, tc := range []struct {
		sid, token, want string
	}{
		{"", "", "http://127.0.0.1:8080/socket.io/?EIO=4&transport=polling"},
		{"s1", "", "http://127.0.0.1:8080/socket.io/?EIO=4&sid=s1&transport=polling"},
		{"s1", "a.b-c_d", "http://127.0.0.1:8080/socket.io/?EIO=4&sid=s1&token=a.b-c_d&transport=polling"},
	} {
		if got := pollURL(base, tc.sid, tc.token); got != tc.want {
			t.Errorf("pollURL(%q, %q) = %q, want %q", tc.sid, tc.token, got, tc.want)
		}
	}
}

func TestMaxPollSessions(t *testing.T) {
	for _, tc := range []struct {
		nofile uint64
		want   int
	}{{20000, 9872}, {1024, 384}, {256, 0}, {100, 0}} {
		if got := maxPollSessions(tc.nofile); got != tc.want {
			t.Errorf("maxPollSessions(%d) = %d, want %d", tc.nofile, got, tc.want)
		}
	}
}

// fakeEIO imitates the sidecar's three answers (the open packet, "ok" to
// the CONNECT POSTed with a token, the CONNECT answer on the next GET),
// then pings each GET after the pong to the last one came, and counts the
// pongs; refuse answers 44 to the CONNECT; closeAfter sends "1" once that
// many pongs came.
type fakeEIO struct {
	t          *testing.T
	refuse     bool
	closeAfter int64

	mu        sync.Mutex
	connected bool
	gets      int
	inGet     atomic.Int32 // GETs in flight: more than one is a client bug
	pongs     atomic.Int64
	tokens    []string
	conns     sync.Map // remote addresses seen
	pongCh    chan struct{}
}

func (f *fakeEIO) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.conns.Store(r.RemoteAddr, true)
	q := r.URL.Query()
	if q.Get("EIO") != "4" || q.Get("transport") != "polling" {
		http.Error(w, "bad query", http.StatusBadRequest)
		return
	}
	sid := q.Get("sid")
	if sid == "" {
		io.WriteString(w, `0{"sid":"fake1","upgrades":["websocket"],"pingInterval":300,"pingTimeout":200,"maxPayload":1000000}`)
		return
	}
	if sid != "fake1" {
		http.Error(w, `{"code":1,"message":"Session ID unknown"}`, http.StatusBadRequest)
		return
	}
	switch r.Method {
	case http.MethodPost:
		body, _ := io.ReadAll(r.Body)
		switch string(body) {
		case "40":
			f.mu.Lock()
			f.tokens = append(f.tokens, q.Get("token"))
			f.connected = !f.refuse && q.Get("token") != ""
			f.mu.Unlock()
		case "3":
			f.pongs.Add(1)
			select {
			case f.pongCh <- struct{}{}:
			default:
			}
		default:
			f.t.Errorf("unexpected POST body %q", body)
		}
		io.WriteString(w, "ok")
	case http.MethodGet:
		if f.inGet.Add(1) > 1 {
			f.t.Error("two GETs in flight")
		}
		defer f.inGet.Add(-1)
		f.mu.Lock()
		f.gets++
		n, connected := f.gets, f.connected
		f.mu.Unlock()
		switch {
		case n == 1 && !connected:
			io.WriteString(w, `44{"message":"unauthorized"}`)
		case n == 1:
			io.WriteString(w, `40{"sid":"s-fake1","pid":"p1"}`)
		case n == 2:
			io.WriteString(w, "2") // the first ping, right away
		default:
			// The next ping once the last one was answered, as the
			// server's timer would, with a noop now and then.
			select {
			case <-f.pongCh:
			case <-r.Context().Done():
				return
			}
			if f.closeAfter > 0 && f.pongs.Load() >= f.closeAfter {
				io.WriteString(w, "1")
				return
			}
			io.WriteString(w, "6\x1e2")
		}
	}
}

func newFake(t *testing.T) (*fakeEIO, *url.URL) {
	f := &fakeEIO{t: t, pongCh: make(chan struct{}, 1)}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	base, _ := url.Parse(srv.URL + "/socket.io/")
	return f, base
}

func TestPollSessionConnectAndKeepAlive(t *testing.T) {
	f, base := newFake(t)
	s := newPollSession(base, net.IPv4(127, 0, 0, 1), 5*time.Second)
	defer s.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.connect(ctx, "tok-1"); err != nil {
		t.Fatalf("connect: %v", err)
	}
	if s.sid != "fake1" || s.open.PingInterval != 300 {
		t.Fatalf("session %q, open %+v", s.sid, s.open)
	}
	if len(f.tokens) != 1 || f.tokens[0] != "tok-1" {
		t.Fatalf("tokens seen %q, want the one in the CONNECT POST's query", f.tokens)
	}
	// Keep alive until 3 pongs came, then stop: a clean stop is no error.
	kctx, stop := context.WithCancel(ctx)
	var pings atomic.Int64
	errc := make(chan error, 1)
	go func() { errc <- s.keepAlive(kctx, &pings) }()
	for f.pongs.Load() < 3 {
		select {
		case err := <-errc:
			t.Fatalf("keepAlive ended early: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	stop()
	if err := <-errc; err != nil {
		t.Fatalf("keepAlive after stop: %v", err)
	}
	if pings.Load() < 3 {
		t.Errorf("pings answered %d, want >= 3", pings.Load())
	}
	n := 0
	f.conns.Range(func(_, _ any) bool { n++; return true })
	if n > 2 {
		t.Errorf("%d connections for one session, want at most 2", n)
	}
}

func TestPollSessionRefused(t *testing.T) {
	f, base := newFake(t)
	f.refuse = true
	s := newPollSession(base, nil, 5*time.Second)
	defer s.close()
	err := s.connect(context.Background(), "bad")
	if err == nil || pollKind(err) != "connect_error" {
		t.Fatalf("connect: %v (kind %q), want connect_error", err, pollKind(err))
	}
}

func TestPollSessionUnknownSIDAndClose(t *testing.T) {
	f, base := newFake(t)
	f.closeAfter = 2
	s := newPollSession(base, nil, 5*time.Second)
	defer s.close()
	ctx := context.Background()
	if err := s.connect(ctx, "tok"); err != nil {
		t.Fatal(err)
	}
	var pings atomic.Int64
	err := s.keepAlive(ctx, &pings)
	if pollKind(err) != "close packet" {
		t.Fatalf("keepAlive: %v, want the close packet", err)
	}
	s.sid = "gone"
	_, err = s.getPackets(ctx)
	if pollKind(err) != "http 400" {
		t.Fatalf("GET on an unknown sid: %v (%q), want http 400", err, pollKind(err))
	}
}

func TestWritePollSummary(t *testing.T) {
	r := pollResult{Kind: "poll", ServerCmd: "srv", N: 10, Connected: 10, Alive: 9, Closed: 1,
		CloseReasons: map[string]int{"close packet": 1}, PerSessionKiB: 12.5,
		Before: promMap{"go_goroutines": 10}, After: promMap{"go_goroutines": 37, "sidecar_connections": 9}}
	b, _ := json.Marshal(&r)
	var out bytes.Buffer
	if summaryKind(b) != "poll" {
		t.Fatalf("kind %q", summaryKind(b))
	}
	writePollSummary(&out, &r)
	for _, want := range []string{"**12.50 KiB**", "10 → 37", "1 (close packet: 1) / 9"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}
