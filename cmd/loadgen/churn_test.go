//go:build linux

package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/golang-jwt/jwt/v5"
)

func TestMinter(t *testing.T) {
	secret := []byte("test-secret-0123456789")
	m := newMinter(secret)
	now := time.Unix(1_800_000_000, 0)
	for _, user := range []string{"u0", "c12345", "churn-7"} {
		tok := m.token(user, now)
		claims := jwt.MapClaims{}
		_, err := jwt.ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return secret, nil },
			jwt.WithValidMethods([]string{"HS256"}), jwt.WithTimeFunc(func() time.Time { return now }))
		if err != nil {
			t.Fatalf("token for %s does not verify: %v (%s)", user, err, tok)
		}
		if claims["sub"] != user || claims["iat"] != float64(now.Unix()) || claims["exp"] != float64(now.Add(24*time.Hour).Unix()) {
			t.Errorf("claims for %s = %v", user, claims)
		}
		if _, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return []byte("other"), nil }); err == nil {
			t.Errorf("token for %s verifies with another secret", user)
		}
	}
	if a, b := m.token("u1", now), m.token("u1", now); a != b {
		t.Errorf("the minter's reused buffers changed a token: %s, then %s", a, b)
	}
}

func TestCheckUpgrade(t *testing.T) {
	key := "dGhlIHNhbXBsZSBub25jZQ=="
	accept := wsAccept(key)
	if accept != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" { // RFC 6455 section 1.3
		t.Fatalf("wsAccept = %s", accept)
	}
	for _, tc := range []struct {
		name, head, want string
	}{
		{"101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n", ""},
		{"header case", "HTTP/1.1 101 Switching Protocols\r\nsec-websocket-accept:" + accept + " \r\n\r\n", ""},
		{"wrong accept", "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: AAAA\r\n\r\n", "bad accept"},
		{"no accept", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", "no accept header"},
		{"503", "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\r\n", "http 503"},
		{"401", "HTTP/1.0 401 Unauthorized\r\n\r\n", "http 401"},
		{"not http", "SSH-2.0-OpenSSH\r\n\r\n", "bad status line"},
		{"bad code", "HTTP/1.1 abc OK\r\n\r\n", "bad status line"},
		{"empty", "\r\n\r\n", "bad status line"},
	} {
		err := checkUpgrade([]byte(tc.head), accept)
		got := ""
		if err != nil {
			got = churnKind(err)
		}
		if got != tc.want {
			t.Errorf("%s: checkUpgrade = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestUpgradeRequest(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"ws://127.0.0.1:8080/ws", "GET /ws?token=a.b.c HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"},
		{"ws://h:1/ws?x=1", "GET /ws?x=1&token=a.b.c HTTP/1.1\r\nHost: h:1\r\n"},
		{"ws://h:1", "GET /?token=a.b.c HTTP/1.1\r\nHost: h:1\r\n"},
	} {
		u, _ := url.Parse(tc.url)
		got := string(upgradeRequest(nil, u, "a.b.c", "KEY"))
		if !strings.HasPrefix(got, tc.want) || !strings.HasSuffix(got, "Sec-WebSocket-Key: KEY\r\n\r\n") ||
			!strings.Contains(got, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n") {
			t.Errorf("upgradeRequest(%s) = %q", tc.url, got)
		}
		// And net/http reads it as an upgrade.
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(got)))
		if err != nil || req.URL.Query().Get("token") != "a.b.c" || req.Header.Get("Upgrade") != "websocket" {
			t.Errorf("upgradeRequest(%s) reads as %v, %v", tc.url, req, err)
		}
	}
}

func TestParseProm(t *testing.T) {
	text := `# HELP sidecar_presence_transitions_total Users that went online or offline.
# TYPE sidecar_presence_transitions_total counter
sidecar_presence_transitions_total{state="offline"} 12345
sidecar_presence_transitions_total{state="online"} 1.2346e+04
sidecar_connections 3
sidecar_connections_accepted_total 99 1700000000000
sidecar_connections_accepted_total_other 7
sidecar_rule_errors_total{kind="nil",rule="a b"} 2
  sidecar_users   4  
bad_line
sidecar_deliveries_total NaNx
`
	want := []string{
		`sidecar_presence_transitions_total{state="online"}`,
		`sidecar_presence_transitions_total{state="offline"}`,
		`sidecar_connections`, `sidecar_connections_accepted_total`, `sidecar_rule_errors_total{kind="nil",rule="a b"}`,
		`sidecar_users`, `sidecar_deliveries_total`, `sidecar_absent`, `bad_line`,
	}
	got := parseProm([]byte(text), want)
	for k, v := range map[string]float64{
		want[0]: 12346, want[1]: 12345, want[2]: 3, want[3]: 99, want[4]: 2, want[5]: 4,
	} {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	for _, k := range []string{`sidecar_deliveries_total`, `sidecar_absent`, `bad_line`, `sidecar_connections_accepted_total_other`} {
		if v, ok := got[k]; ok {
			t.Errorf("%s = %v, want absent", k, v)
		}
	}
	if len(parseProm(nil, want)) != 0 {
		t.Error("parseProm(nil) is not empty")
	}
}

func TestSpread(t *testing.T) {
	for _, tc := range []struct {
		in          []int64
		whole       int
		lo, med, hi int64
	}{
		{nil, 30, 0, 0, 0},
		{[]int64{5}, 0, 0, 0, 0},
		{[]int64{3, 1, 2, 9}, 3, 1, 2, 3}, // the partial last second left out
		{[]int64{4, 1, 3, 2}, 10, 1, 3, 4},
	} {
		lo, med, hi := spread(tc.in, tc.whole)
		if lo != tc.lo || med != tc.med || hi != tc.hi {
			t.Errorf("spread(%v, %d) = %d, %d, %d; want %d, %d, %d", tc.in, tc.whole, lo, med, hi, tc.lo, tc.med, tc.hi)
		}
	}
}

func TestTrimZeros(t *testing.T) {
	for _, tc := range []struct{ in, want []int64 }{
		{nil, nil},
		{[]int64{0, 0}, []int64{}},
		{[]int64{1, 0, 2, 0, 0}, []int64{1, 0, 2}},
		{[]int64{5}, []int64{5}},
	} {
		got := trimZeros(tc.in)
		if len(got) != len(tc.want) {
			t.Errorf("trimZeros(%v) = %v, want %v", tc.in, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("trimZeros(%v) = %v, want %v", tc.in, got, tc.want)
			}
		}
	}
}

// TestChurnCycles runs the churner against small in-process servers: one
// that upgrades (and counts the close frames it gets), one that refuses.
func TestChurnCycles(t *testing.T) {
	var upgraded, closes atomic.Int64
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("token") == "" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		conn, _, _, err := ws.UpgradeHTTP(r, w)
		if err != nil {
			return
		}
		upgraded.Add(1)
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		h, err := ws.ReadHeader(conn)
		if err != nil || h.OpCode != ws.OpClose {
			return
		}
		closes.Add(1)
		// Read the payload, echo the close, as a server should.
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(conn, p); err == nil {
			ws.WriteFrame(conn, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))
		}
	}))
	defer ok.Close()
	refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}))
	defer refuse.Close()

	run := func(srv *httptest.Server, mode string) churnTotals {
		u, _ := url.Parse("ws" + strings.TrimPrefix(srv.URL, "http") + "/ws")
		ch := &churner{base: u, timeout: 2 * time.Second, prefix: "t", first: 10, srcs: []net.IP{net.IPv4(127, 0, 0, 1)},
			close: mode, tokens: &tokens{secret: []byte("s")}, perSecond: make([]atomic.Int64, 3)}
		return ch.run(context.Background(), 4, 300*time.Millisecond)
	}
	for _, mode := range []string{"frame", "wait", "tcp"} {
		upgraded.Store(0)
		closes.Store(0)
		tot := run(ok, mode)
		var r churnResult
		tot.fill(&r)
		if r.Completed == 0 || r.Failed != 0 || r.Started != r.Completed || r.PerS <= 0 || r.CycleMs.P50 <= 0 || tot.maxUser < 10 {
			t.Errorf("close %s: %+v", mode, r)
		}
		if len(r.PerSecond) != 1 || r.PerSecond[0] != r.Completed {
			t.Errorf("close %s: per second %v, completed %d", mode, r.PerSecond, r.Completed)
		}
		// The server counts its side a little after the client is done.
		time.Sleep(100 * time.Millisecond)
		if n := upgraded.Load(); n < r.Completed {
			t.Errorf("close %s: the server upgraded %d, the client completed %d", mode, n, r.Completed)
		}
		if c := closes.Load(); mode != "tcp" && c < r.Completed || mode == "tcp" && c != 0 {
			t.Errorf("close %s: %d close frames for %d cycles", mode, c, r.Completed)
		}
	}
	tot := run(refuse, "frame")
	var r churnResult
	tot.fill(&r)
	if r.Completed != 0 || r.Failed == 0 || len(r.Errors) != 1 || r.Errors["http 503"] != int(r.Failed) || r.FirstError != "http 503" {
		t.Errorf("refused: %+v", r)
	}
}

const churnJSON = `{"kind":"churn",` + testMachine + `,"server_cmd":"/tmp/sidecar serve","server_go":"go1.26.8","server_pid":1,
"store":"file x.db, sync everysecond","concurrency":8,"close":"frame","for_s":30,"first_user":"c0","last_user":"c99",
"write_floor_us":9.876,"per_second_min":1,"per_second_median":3,"per_second_max":5,"completed":100,"failed":3,"errors":{"reset":1,"http 503":2},"wall_s":30.1,"cycles_per_s":3.32,
"cycle_ms":{"p50":1.234,"p99":5.5,"max":12},"connect_ms":{"p50":0.1,"p99":0.5},"upgrade_ms":{"p50":1,"p99":5},
"server_cores":0.9,"client_cores":0.4,"other_cores":0.05,"settle_s":6,"server_rss_before_kib":10240,"server_rss_after_kib":20480,
"server_rss_peak_kib":30720,"metrics_before":{"sidecar_presence_store_errors_total":0},"metrics_after":{"sidecar_presence_store_errors_total":2},
"presence_online":100,"presence_offline":99}`

const churnWant = "#### connect/disconnect churn: `/tmp/sidecar serve`, 2025-01-02\n\n" +
	"2 CPUs (Test CPU), Linux 6.1.0, 4 GiB RAM; loadgen go1.26.8, server go1.26.8; store file x.db, sync everysecond; " +
	"8 cycles in flight, close by frame, for 30s; users c0..c99; loopback write floor 9.88 µs\n\n" +
	"| cycles/s | each second min / median / max | completed | failed | cycle p50 / p99 / max ms | connect p50 / p99 ms | upgrade p50 / p99 ms | server cores | client cores | others |\n" +
	"|---|---|---|---|---|---|---|---|---|---|\n" +
	"| **3** | 1 / 3 / 5 | 100 | 3 (http 503: 2, reset: 1) | 1.23 / 5.50 / 12.0 | 0.10 / 0.50 | 1.00 / 5.00 | 0.90 | 0.40 | 0.05 |\n\n" +
	"Presence transitions during the run and a 6 s settle: **100 online, 99 offline** (2 presence store errors). " +
	"Server RSS 10.0 MiB before, 20.0 MiB after the settle, peak 30.0 MiB.\n\n"

// gorilla has no metrics: no presence line.
const churnBareJSON = `{"kind":"churn",` + testMachine + `,"server_cmd":"gorilla","concurrency":1,"close":"tcp","for_s":1,
"first_user":"u0","last_user":"u0","completed":1,"cycles_per_s":1,"presence_online":-1,"presence_offline":-1}`

const churnBareWant = "#### connect/disconnect churn: `gorilla`, 2025-01-02\n\n" +
	"2 CPUs (Test CPU), Linux 6.1.0, 4 GiB RAM; loadgen go1.26.8; 1 cycles in flight, close by tcp, for 1s; users u0..u0\n\n" +
	"| cycles/s | each second min / median / max | completed | failed | cycle p50 / p99 / max ms | connect p50 / p99 ms | upgrade p50 / p99 ms | server cores | client cores | others |\n" +
	"|---|---|---|---|---|---|---|---|---|---|\n" +
	"| **1** | 0 / 0 / 0 | 1 | 0 | 0.00 / 0.00 / 0.0 | 0.00 / 0.00 | 0.00 / 0.00 | 0.00 | 0.00 | 0.00 |\n\n"

func TestSummarizeChurnAndReplay(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files []string
		want  string
	}{
		{"churn", []string{churnJSON}, churnWant},
		{"churn without metrics or pid", []string{churnBareJSON}, churnBareWant},
		{"replay", []string{replayJSON}, replayWant},
		{"replay, not all ok", []string{replayBadJSON}, replayBadWant},
		{"mixed", []string{churnBareJSON, runBare, replayJSON}, churnBareWant + runBareWant + replayWant},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var names []string
			for i, c := range tc.files {
				names = append(names, writeTemp(t, "s"+string(rune('0'+i))+".json", c))
			}
			var out strings.Builder
			if err := runSummarize(names, &out); err != nil {
				t.Fatalf("runSummarize: %v", err)
			}
			if got := out.String(); got != tc.want {
				t.Errorf("runSummarize output:\n%q\nwant:\n%q", got, tc.want)
			}
		})
	}
}
