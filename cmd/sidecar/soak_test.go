package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/sidecar/sidecar/engine/auth"
	"github.com/sidecar/sidecar/engine/webhook"
)

// soakFor is the length of TestSoak's mixed load. The default is the short
// form CI runs; `make soak` runs the long one (-soak 10m).
var soakFor = flag.Duration("soak", 15*time.Second, "TestSoak: how long the mixed load runs")

const (
	soakSecret  = "soak-secret-soak-secret-soak-secret-0"
	soakWebhook = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	soakSteady  = 200 // clients connected for the whole soak
)

// TestSoak runs the real binary on the shipped rules under a mixed load:
// steady clients sending typing events and booking updates (forwarded to an
// app that answers 200 or, one time in five, 500), connect/disconnect churn
// ended in every way, webhooks to users and announcements to all, slow
// consumers closed with 4008, and the rules file rewritten every few
// seconds. Afterwards, with every client gone, the server's goroutines and
// descriptors are exactly at their baseline, and its live heap (after a
// collection, from GODEBUG=gctrace=1) is within 2 MiB of its baseline plus
// what the store keeps by design: every webhook id, for 24 h. The long form
// waits up to 2.5 minutes for the runtime's periodic collection. RSS, which
// also holds what the runtime has not yet given back, is reported and held
// to a looser bound (32 MiB over the baseline, plus the ids with headroom).
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and soaks the binary")
	}
	long := *soakFor >= time.Minute
	dir := t.TempDir()
	var forwards, forwardFails atomic.Int64
	app := httptestServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		// No keep-alive: the forwarder's pooled connections to the app
		// (kept 90 s) would otherwise count as the server's own.
		w.Header().Set("Connection", "close")
		if forwards.Add(1)%5 == 0 {
			forwardFails.Add(1)
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	shipped, err := os.ReadFile("../../rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rulesPath := filepath.Join(dir, "rules.yaml")
	writeFile(t, rulesPath, shipped)
	writeFile(t, filepath.Join(dir, "config.yaml"), []byte(fmt.Sprintf(`
listen: 127.0.0.1:0
auth: {jwt_secret: %s}
api: {keys: [soak-api-key]}
webhooks: {secrets: [%s]}
store: {path: sidecar.db}
rules: {file: rules.yaml}
forward: {initial_backoff: 100ms, max_backoff: 1s}
limits: {outbound_queue_bytes: 262144, write_timeout: 2s, close_timeout: 3s}
log: {level: info}
`, soakSecret, soakWebhook)))
	srv := startSoakBinary(t, filepath.Join(dir, "config.yaml"), "APP_URL="+app)

	// Warm up: connections, events, a webhook, then settle.
	for i := 0; i < 50; i++ {
		c := dialSoak(t, srv.addr, fmt.Sprintf("warm-%d", i), nil)
		c.Close()
	}
	time.Sleep(2 * time.Second)
	base := srv.usage(t)
	t.Logf("baseline: %s", base)

	ctx, stop := context.WithTimeout(context.Background(), *soakFor)
	defer stop()
	var wg sync.WaitGroup
	var acks, steadyLost, churned, slowClosed, slowUsers, webhooks, reloads atomic.Int64
	failures := make(chan string, 100)
	fail := func(format string, args ...any) {
		select {
		case failures <- fmt.Sprintf(format, args...):
		default:
		}
	}

	// Steady clients: every one reads everything and sends a typing event
	// with an ack every ~500 ms, and a booking update every ~5 s.
	for i := 0; i < soakSteady; i++ {
		wg.Go(func() {
			user := fmt.Sprintf("u%d", i)
			c := dialSoak(t, srv.addr, user, nil)
			defer c.Close()
			var mu sync.Mutex // writes: the reader answers pings too
			go func() {       // the reader; ends when c is closed
				br := bufio.NewReader(c)
				for {
					h, err := ws.ReadHeader(br)
					if err != nil {
						if ctx.Err() == nil {
							steadyLost.Add(1)
							fail("steady %s: read: %v", user, err)
						}
						return
					}
					p := make([]byte, h.Length)
					if _, err := io.ReadFull(br, p); err != nil {
						return
					}
					switch h.OpCode {
					case ws.OpPing:
						mu.Lock()
						wsutil.WriteClientMessage(c, ws.OpPong, p)
						mu.Unlock()
					case ws.OpClose:
						if ctx.Err() == nil {
							steadyLost.Add(1)
							code, reason := ws.ParseCloseFrameData(p)
							fail("steady %s: closed %d %s", user, code, reason)
						}
						return
					case ws.OpText:
						if strings.HasPrefix(string(p), `{"ack":`) {
							acks.Add(1)
						}
					}
				}
			}()
			tick := time.NewTicker(time.Duration(400+rand.IntN(200)) * time.Millisecond)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-ctx.Done():
					mu.Lock()
					wsutil.WriteClientMessage(c, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
					mu.Unlock()
					return
				case <-tick.C:
				}
				msg := fmt.Sprintf(`{"event":"typing","data":{"to":"u%d"},"ack":%d}`, rand.IntN(soakSteady), n)
				if n%10 == 9 {
					msg = fmt.Sprintf(`{"event":"bookingUpdate","data":{"id":"b%d","status":"confirmed"},"ack":%d}`, n, n)
				}
				mu.Lock()
				err := wsutil.WriteClientMessage(c, ws.OpText, []byte(msg))
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}

	// Churn: connections that come and go, closed every way there is.
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			c := dialSoak(t, srv.addr, fmt.Sprintf("churn-%d", i%500), nil)
			switch i % 4 {
			case 0:
				wsutil.WriteClientMessage(c, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
			case 1:
				wsutil.WriteClientMessage(c, ws.OpText, []byte(`{"event":"updateStatus","data":{"status":"busy"},"ack":1}`))
			case 2:
				c.Write([]byte{0x81}) // half a frame, then the peer vanishes
			}
			c.Close()
			churned.Add(1)
			time.Sleep(20 * time.Millisecond)
		}
	})

	// Slow consumers: a client that never reads, buried in announcements
	// until the server closes it.
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			slowUsers.Add(1)
			c := dialSoak(t, srv.addr, fmt.Sprintf("slow-%d", i), func(fd uintptr) {
				syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			})
			// Through the test API: webhooks would leave an idempotency key
			// each, which the store keeps for a day by design.
			pad := strings.Repeat("x", 8000)
			for k := 0; k < 200 && ctx.Err() == nil; k++ {
				body := fmt.Sprintf(`{"title":"bulk","n":%d,"pad":"%s"}`, k, pad)
				if status := soakAPI(srv.addr, "/api/socket-test/send/"+fmt.Sprintf("slow-%d", i), body); status != http.StatusAccepted {
					fail("send to a slow consumer: %d", status)
				}
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if code := readUntilClose(c); code == 4008 {
				slowClosed.Add(1)
			}
			c.Close()
			sleepCtx(ctx, time.Second)
		}
	})

	// Webhooks: bookings for steady users, and an announcement to all.
	wg.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			body := fmt.Sprintf(`{"type":"booking.created","data":{"id":"b%d","providerId":"u%d","customerName":"Ana"}}`, i, rand.IntN(soakSteady))
			if i%50 == 0 {
				body = `{"type":"announcement","data":{"title":"Hello","message":"everyone"}}`
			}
			if status := soakPost(srv.addr, fmt.Sprintf("msg_soak_%d", i), body); status != http.StatusAccepted {
				fail("webhook %d: %d", i, status)
			}
			webhooks.Add(1)
		}
	})

	// Reloads: the rules file rewritten every 3 s, alternating two versions.
	wg.Go(func() {
		extra := []byte("\n  - name: soak-extra\n    on: soak.nothing\n    emit: {event: never, to: all()}\n")
		for i := 0; sleepCtx(ctx, 3*time.Second); i++ {
			content := shipped
			if i%2 == 0 {
				content = append(append([]byte(nil), shipped...), extra...)
			}
			replaceFile(t, rulesPath, content)
			reloads.Add(1)
		}
		replaceFile(t, rulesPath, shipped)
	})

	wg.Wait()
	close(failures)
	for f := range failures {
		t.Error(f)
	}
	t.Logf("load: %d acks, %d churned connections, %d webhooks, %d slow consumers closed 4008, %d reloads, %d forwards (%d answered 500)",
		acks.Load(), churned.Load(), webhooks.Load(), slowClosed.Load(), reloads.Load(), forwards.Load(), forwardFails.Load())
	if steadyLost.Load() > 0 {
		t.Errorf("%d steady clients lost their connection", steadyLost.Load())
	}
	if acks.Load() == 0 || forwards.Load() == 0 || slowClosed.Load() == 0 {
		t.Errorf("the load did not exercise the server: acks %d, forwards %d, slow closes %d", acks.Load(), forwards.Load(), slowClosed.Load())
	}
	peak := srv.usage(t)
	t.Logf("after the load: %s", peak)

	// Back to the baseline: descriptors and goroutines exactly; the live
	// heap within 2 MiB, plus what the store keeps by design: every
	// webhook id for webhooks.dedup_ttl (24 h), about 180 B each
	// (measured: 100,000 MarkSeen calls). The long form waits for a
	// collection after the load (the runtime forces one every 2 minutes).
	//
	// And the replay streams (replay.max_events, 100 per stream, for
	// replay.ttl): each slow consumer's stream holds its last 100 sends of
	// 8 KB, 10 KiB each in the heap (the key, buntdb's item, and the
	// allocator's size class); each steady user's its last 100
	// notifications, and everyone's its last 100 announcements, of about
	// 500 B with the keys.
	ids := webhooks.Load()
	kept := slowUsers.Load()*100*(10<<10) + min(ids, 100*(soakSteady+1))*500
	liveMargin := int64(2<<20) + ids*180 + kept
	rssMargin := int64(32<<20) + ids*400 + 2*kept // the collector's headroom on what is kept
	wait := 30 * time.Second
	if long {
		wait = 150 * time.Second
	}
	loadEnd := time.Now()
	deadline := loadEnd.Add(wait)
	var after soakUsage
	for {
		after = srv.usage(t)
		collected := after.lastGC.After(loadEnd)
		if after.fds == base.fds && after.goroutines == base.goroutines && (collected || !long) && (after.live <= base.live+liveMargin || !collected && !long) {
			break
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	t.Logf("settled: %s; live heap %+.1f MiB over the baseline (margin %.1f MiB, of which %.1f MiB for %d webhook ids and %.1f MiB for replay streams kept), RSS %+.1f MiB",
		after, float64(after.live-base.live)/(1<<20), float64(liveMargin)/(1<<20), float64(ids*180)/(1<<20), ids,
		float64(kept)/(1<<20), float64(after.rss-base.rss)/(1<<20))
	if after.fds != base.fds {
		t.Errorf("server has %d descriptors open, baseline %d", after.fds, base.fds)
	}
	if after.goroutines != base.goroutines {
		t.Errorf("server has %d goroutines, baseline %d", after.goroutines, base.goroutines)
	}
	switch {
	case !after.lastGC.After(loadEnd) && !long:
		// An idle server collects nothing: its last figure is from during
		// the load, garbage and all. The long form waits past Go's forced
		// collection (2 minutes) and always checks it.
		t.Logf("no collection since the load ended: the live heap (%d MiB, from during the load) is not checked; `make soak` checks it", after.live>>20)
	case after.live > base.live+liveMargin:
		t.Errorf("server live heap %d MiB, baseline %d MiB: over the %.1f MiB margin", after.live>>20, base.live>>20, float64(liveMargin)/(1<<20))
	}
	if after.rss > base.rss+rssMargin {
		t.Errorf("server RSS %.1f MiB, baseline %.1f MiB: over the %.1f MiB margin", float64(after.rss)/(1<<20), float64(base.rss)/(1<<20), float64(rssMargin)/(1<<20))
	}
}

type soakServer struct {
	addr string
	pid  int
	// live and lastGC are the live heap (bytes) after the server's last
	// collection and when it was seen, from its GODEBUG=gctrace=1 lines.
	mu     sync.Mutex
	live   int64
	lastGC time.Time
}

type soakUsage struct {
	rss        int64
	live       int64
	lastGC     time.Time
	fds        int
	goroutines int
}

func (u soakUsage) String() string {
	return fmt.Sprintf("RSS %.1f MiB, live heap %d MiB, %d descriptors, %d goroutines", float64(u.rss)/(1<<20), u.live>>20, u.fds, u.goroutines)
}

// usage reads the server's RSS and descriptors from /proc, and its
// goroutines from /metrics.
func (s *soakServer) usage(t *testing.T) soakUsage {
	t.Helper()
	var u soakUsage
	s.mu.Lock()
	u.live, u.lastGC = s.live, s.lastGC
	s.mu.Unlock()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.pid))
	if err != nil {
		t.Skip("no /proc")
	}
	if m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(status); m != nil {
		kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
		u.rss = kb << 10
	}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", s.pid))
	u.fds = len(fds)
	resp, err := http.Get("http://" + s.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			u.goroutines, _ = strconv.Atoi(v)
		}
	}
	http.DefaultClient.CloseIdleConnections() // our own keep-alive is one of its descriptors
	return u
}

// startSoakBinary builds the sidecar and serves configPath with env added.
func startSoakBinary(t *testing.T, configPath string, env ...string) *soakServer {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sidecar")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "serve", "--config", configPath)
	cmd.Env = append(append(os.Environ(), "GODEBUG=gctrace=1"), env...)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	srv := &soakServer{pid: cmd.Process.Pid}
	addrc := make(chan string, 1)
	// Reads the log until the process exits and closes the pipe: the
	// address, the collector's trace, and errors for the test's output.
	go func() {
		re := regexp.MustCompile(`msg=listening .*addr=(\S+)`)
		gc := regexp.MustCompile(`^gc \d+ .* \d+->\d+->(\d+) MB`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addrc <- m[1]
				continue
			}
			if m := gc.FindStringSubmatch(sc.Text()); m != nil {
				mb, _ := strconv.ParseInt(m[1], 10, 64)
				srv.mu.Lock()
				srv.live, srv.lastGC = mb<<20, time.Now()
				srv.mu.Unlock()
				continue
			}
			if strings.Contains(sc.Text(), "level=ERROR") {
				fmt.Fprintln(os.Stderr, "sidecar:", sc.Text())
			}
		}
	}()
	select {
	case addr := <-addrc:
		waitReady(t, "http://"+addr+"/readyz")
		srv.addr = addr
		return srv
	case <-time.After(20 * time.Second):
		t.Fatal("the binary never logged its address")
		return nil
	}
}

// dialSoak connects user; control, if set, runs on the socket first.
func dialSoak(t *testing.T, addr, user string, control func(fd uintptr)) net.Conn {
	t.Helper()
	tok, err := auth.Sign([]byte(soakSecret), map[string]any{"sub": user, "exp": time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	d := ws.Dialer{Timeout: 10 * time.Second}
	if control != nil {
		d.NetDial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			nd := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error { return rc.Control(control) }}
			return nd.DialContext(ctx, network, addr)
		}
	}
	c, _, _, err := d.Dial(context.Background(), "ws://"+addr+"/ws?token="+tok)
	if err != nil {
		t.Errorf("dial %s: %v", user, err)
		return &net.TCPConn{}
	}
	return c
}

var soakSigner = func() *webhook.Signer { s, _ := webhook.NewSigner(soakWebhook); return s }()

// soakAPI posts body to an /api path with the soak's API key.
func soakAPI(addr, path, body string) int {
	req, _ := http.NewRequest("POST", "http://"+addr+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer soak-api-key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// soakPost posts a signed webhook and returns the status.
func soakPost(addr, id, body string) int {
	req, _ := http.NewRequest("POST", "http://"+addr+"/webhooks", strings.NewReader(body))
	for k, v := range soakSigner.Headers(id, time.Now(), []byte(body)) {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// readUntilClose reads frames until a close frame and returns its code; 0
// if the stream ended without one.
func readUntilClose(c net.Conn) ws.StatusCode {
	br := bufio.NewReader(c)
	for {
		h, err := ws.ReadHeader(br)
		if err != nil {
			return 0
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(br, p); err != nil {
			return 0
		}
		if h.OpCode == ws.OpClose {
			code, _ := ws.ParseCloseFrameData(p)
			return code
		}
	}
}

// sleepCtx sleeps d, and reports false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// replaceFile writes b to a new file and renames it over path, as editors
// and ConfigMap updates do: a reader never sees it half written.
func replaceFile(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	writeFile(t, tmp, b)
	if err := os.Rename(tmp, path); err != nil {
		t.Error(err)
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Error(err)
	}
}
