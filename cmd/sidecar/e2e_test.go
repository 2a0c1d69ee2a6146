package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/sidecar/sidecar/config"
	"github.com/sidecar/sidecar/engine/auth"
)

// e2eDir holds the npm clients (ws, standardwebhooks) the tests drive.
const e2eDir = "../../testdata/e2e"

// needNode skips when Node or the npm clients are missing. `make test`
// installs them, so CI always runs these tests.
func needNode(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed: these tests drive real npm clients")
	}
	if _, err := os.Stat(filepath.Join(e2eDir, "node_modules", "ws")); err != nil {
		t.Skip("testdata/e2e/node_modules is missing: run `make test` (it runs npm ci there)")
	}
}

// exampleNode serves config.example.yaml, as a newcomer would run it, on
// 127.0.0.1:0 with a store in a temporary directory.
type exampleNode struct {
	t    *testing.T
	cfg  *config.Config
	addr string
}

func startExample(t *testing.T, env ...string) *exampleNode {
	t.Helper()
	environ := append([]string{"SIDECAR_STORE__PATH=" + filepath.Join(t.TempDir(), "sidecar.db")}, env...)
	cfg, _, err := config.Load("../../config.example.yaml", environ)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, ln, logger, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	n := &exampleNode{t: t, cfg: cfg, addr: ln.Addr().String()}
	waitReady(t, "http://"+n.addr+"/readyz")
	return n
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never answered 200", url)
}

func (n *exampleNode) token(claims map[string]any) string {
	n.t.Helper()
	claims["exp"] = time.Now().Add(time.Hour).Unix()
	tok, err := auth.Sign([]byte(n.cfg.Auth.JWTSecret), claims)
	if err != nil {
		n.t.Fatal(err)
	}
	return tok
}

func (n *exampleNode) post(path, bearer string, body any) (int, map[string]any) {
	n.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", "http://"+n.addr+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+bearer)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// nodeClient runs testdata/e2e/client.mjs: a `ws` client that prints every
// frame it receives as a JSON line.
type nodeClient struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan map[string]any
	done  chan error
}

func startNodeClient(t *testing.T, url string, messages int, protocols ...string) *nodeClient {
	t.Helper()
	return startNodeClientSending(t, url, messages, nil, protocols...)
}

// startNodeClientSending is startNodeClient sending send once open.
func startNodeClientSending(t *testing.T, url string, messages int, send []any, protocols ...string) *nodeClient {
	t.Helper()
	// The client exits by itself after 60 s at most (and is killed at
	// cleanup): long enough for the cluster fault tests, whose clients stay
	// connected through a 10 s Redis pause or three Redis restarts.
	args := []string{"client.mjs", url, itoa(messages), "60000"}
	if len(protocols) > 0 {
		args = append(args, strings.Join(protocols, ","))
	}
	cmd := exec.Command("node", args...)
	cmd.Dir = e2eDir
	if send != nil {
		b, _ := json.Marshal(send)
		cmd.Env = append(os.Environ(), "SEND_ON_OPEN="+string(b))
	}
	return runNodeClient(t, cmd)
}

// runNodeClient starts cmd, a node script that prints JSON lines, and
// reads them into the client's lines.
func runNodeClient(t *testing.T, cmd *exec.Cmd) *nodeClient {
	t.Helper()
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &nodeClient{t: t, cmd: cmd, lines: make(chan map[string]any, 100), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				m = map[string]any{"unparsed": sc.Text()}
			}
			c.lines <- m
		}
		close(c.lines)
		c.done <- cmd.Wait()
	}()
	t.Cleanup(func() { cmd.Process.Kill() })
	return c
}

// next returns the next line the client printed.
func (c *nodeClient) next() map[string]any {
	c.t.Helper()
	select {
	case m, ok := <-c.lines:
		if !ok {
			c.t.Fatalf("node client exited early: %v", <-c.done)
		}
		return m
	case <-time.After(20 * time.Second):
		c.t.Fatal("no line from the node client in 20s")
	}
	return nil
}

func (c *nodeClient) waitOpen() map[string]any {
	c.t.Helper()
	m := c.next()
	if m["open"] != true {
		c.t.Fatalf("node client: %v, want open", m)
	}
	return m
}

func TestRealWSClientGetsBroadcastAndTargeted(t *testing.T) {
	needNode(t)
	n := startExample(t)
	admin := n.token(map[string]any{"sub": "ops", "role": "admin"})
	alice := startNodeClient(t, "ws://"+n.addr+"/ws?token="+n.token(map[string]any{"sub": "alice"}), 2)
	bob := startNodeClient(t, "ws://"+n.addr+"/ws", 1, "sidecar.v1", "bearer."+n.token(map[string]any{"sub": "bob"}))
	alice.waitOpen()
	if m := bob.waitOpen(); m["protocol"] != "sidecar.v1" {
		t.Fatalf("bob negotiated %v, want sidecar.v1", m["protocol"])
	}
	if status, resp := n.post("/api/socket-test/broadcast", admin, map[string]any{"title": "Hello all", "message": "m", "type": "info"}); status != 202 || resp["delivered"] != float64(2) {
		t.Fatalf("broadcast: %d %v", status, resp)
	}
	if status, resp := n.post("/api/socket-test/send/alice", admin, map[string]any{"title": "Just Alice"}); status != 202 || resp["delivered"] != float64(1) {
		t.Fatalf("send: %d %v", status, resp)
	}
	for _, want := range []string{"Hello all", "Just Alice"} {
		m := alice.next()
		if m["event"] != "newNotification" || m["data"].(map[string]any)["title"] != want {
			t.Fatalf("alice got %v, want newNotification %q", m, want)
		}
	}
	if m := bob.next(); m["data"].(map[string]any)["title"] != "Hello all" {
		t.Fatalf("bob got %v", m)
	}
	// A plain user may not broadcast (the seed let anyone; we do not).
	if status, _ := n.post("/api/socket-test/broadcast", n.token(map[string]any{"sub": "alice"}), map[string]any{"title": "x"}); status != http.StatusForbidden {
		t.Fatalf("user broadcast: %d, want 403", status)
	}
}

func TestStandardWebhooksNPMReachesProviderByShippedRules(t *testing.T) {
	needNode(t)
	n := startExample(t)
	provider := startNodeClient(t, "ws://"+n.addr+"/ws?token="+n.token(map[string]any{"sub": "prov-1", "role": "provider"}), 1)
	other := startNodeClient(t, "ws://"+n.addr+"/ws?token="+n.token(map[string]any{"sub": "cust-1", "role": "customer"}), 1)
	provider.waitOpen()
	other.waitOpen()
	body := `{"type":"booking.created","timestamp":"2026-11-25T10:00:00Z","data":{"id":"bk-1","status":"pending","providerId":"prov-1","customerId":"cust-1","customerName":"Ana","serviceName":"Haircut"}}`
	out, err := exec.Command("node", filepath.Join(e2eDir, "webhook.mjs"), "http://"+n.addr+"/webhooks", n.cfg.Webhooks.Secrets[0], "msg_npm_1", body).Output()
	if err != nil {
		t.Fatalf("webhook.mjs: %v", err)
	}
	var res struct {
		Status int            `json:"status"`
		Body   map[string]any `json:"body"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.Status != http.StatusAccepted {
		t.Fatalf("webhook answer %s (%v), want 202", out, err)
	}
	m := provider.next()
	if m["event"] != "newNotification" || m["data"].(map[string]any)["bookingId"] != "bk-1" {
		t.Fatalf("provider got %v", m)
	}
	select {
	case m := <-other.lines:
		t.Fatalf("the customer got %v; booking.created is for the provider only", m)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestBinaryRunsExampleAndStopsOnSIGTERM builds the real binary, runs it as
// the README says, and stops it: clients get 1001 and the exit status is 0.
func TestBinaryRunsExampleAndStopsOnSIGTERM(t *testing.T) {
	bin, cmd, addr := startBinary(t, "", "SIDECAR_STORE__PATH="+filepath.Join(t.TempDir(), "s.db"))
	tokOut, err := exec.Command(bin, "token", "--config", "../../config.example.yaml", "--sub", "u1").Output()
	if err != nil {
		t.Fatalf("sidecar token: %v", err)
	}
	tok := strings.TrimSpace(string(tokOut))
	if strings.Count(tok, ".") != 2 || strings.ContainsAny(tok, " \n") {
		t.Fatalf("token output %q is not a bare JWT", tokOut)
	}
	conn, br, _, err := ws.Dial(context.Background(), "ws://"+addr+"/ws?token="+tok)
	if err != nil {
		t.Fatalf("dial with the minted token: %v", err)
	}
	defer conn.Close()
	cmd.Process.Signal(syscall.SIGTERM)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var r io.Reader = conn
	if br != nil {
		r = br
	}
	for {
		msg, op, err := wsutil.ReadServerData(struct {
			io.Reader
			io.Writer
		}{r, conn})
		if err != nil {
			var ce wsutil.ClosedError
			if asClosed(err, &ce) && ce.Code == ws.StatusGoingAway {
				break
			}
			t.Fatalf("waiting for 1001: %v", err)
		}
		_ = msg
		_ = op
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v, want status 0", err)
	}
}

func asClosed(err error, target *wsutil.ClosedError) bool {
	ce, ok := err.(wsutil.ClosedError)
	if ok {
		*target = ce
	}
	return ok
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestWebhookCommandPostsSignedEvent(t *testing.T) {
	n := startExample(t)
	url := "http://" + n.addr + "/webhooks"
	var out, errOut bytes.Buffer
	args := []string{"webhook", "--config", "../../config.example.yaml", "--url", url, "--id", "msg_cmd",
		"--type", "booking.created", "--data", `{"id":"b1","providerId":"p1"}`}
	if err := run(context.Background(), args, &out, &errOut); err != nil {
		t.Fatalf("webhook command: %v\n%s%s", err, out.String(), errOut.String())
	}
	if !strings.HasPrefix(out.String(), "202") || !strings.Contains(out.String(), "booking-created") {
		t.Fatalf("first post printed %q, want 202 with the matched rule", out.String())
	}
	out.Reset()
	if err := run(context.Background(), args, &out, &errOut); err != nil || !strings.Contains(out.String(), `"duplicate":true`) {
		t.Fatalf("same id again: %v %q, want 200 duplicate", err, out.String())
	}
	out.Reset()
	bad := []string{"webhook", "--config", "../../config.example.yaml", "--url", url, "--type", "x", "--data", "{nope"}
	if err := run(context.Background(), bad, &out, &errOut); err == nil {
		t.Fatal("invalid --data accepted")
	}
}

func TestExamplePageIsServed(t *testing.T) {
	n := startExample(t)
	resp, err := http.Get("http://" + n.addr + "/socket-example.html")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	page, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(string(page), `"sidecar.v1", "bearer." + tok`) {
		t.Fatalf("example page: %d %s, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(page))
	}
}

// serveWith runs serve on a config written for the test: the given rules
// file contents, a store in the temp dir, and extra YAML.
func serveWith(t *testing.T, rulesYAML, extra string) (addr string, cfg *config.Config, rulesPath string) {
	t.Helper()
	dir := t.TempDir()
	rulesPath = filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesPath, []byte(rulesYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := "auth: {jwt_secret: e2e-secret-e2e-secret-e2e-secret-32}\n" + extra
	addr, cfg = serveConfig(t, dir, conf, nil, slog.LevelWarn, t.Output())
	return addr, cfg, rulesPath
}

// serveConfig runs serve on the config conf, written to dir/config.yaml
// after the webhook secret, the store and the rules file (dir/rules.yaml,
// which the caller writes) are set, until the test ends, and waits until
// it is ready. hup is its SIGHUP channel; the log goes to logs at level.
func serveConfig(t *testing.T, dir, conf string, hup <-chan os.Signal, level slog.Level, logs io.Writer) (addr string, cfg *config.Config) {
	t.Helper()
	addr, cfg = startServe(t, dir, conf, hup, level, logs)
	waitReady(t, "http://"+addr+"/readyz")
	return addr, cfg
}

// startServe is serveConfig without waiting for /readyz.
func startServe(t *testing.T, dir, conf string, hup <-chan os.Signal, level slog.Level, logs io.Writer) (addr string, cfg *config.Config) {
	t.Helper()
	conf = "webhooks: {secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]}\n" +
		"store: {path: sidecar.db}\nrules: {file: rules.yaml}\n" + conf
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Load(cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: level}))
	go func() { done <- serve(ctx, cfg, ln, logger, hup) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String(), cfg
}

// signedPost posts a webhook signed with the test secret.
func signedPost(t *testing.T, addr, id, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.DefaultClient.Do(signedRequest(t, addr, id, body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// signedRequest is the request signedPost sends.
func signedRequest(t *testing.T, addr, id, body string) *http.Request {
	t.Helper()
	s, err := newTestSigner()
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", "http://"+addr+"/webhooks", strings.NewReader(body))
	for k, v := range s.Headers(id, time.Now(), []byte(body)) {
		req.Header[k] = v
	}
	return req
}

func readyDetail(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestEditingRulesChangesBehaviourAndABrokenEditDoesNot edits the rules
// file of a running sidecar: a good edit takes effect without a restart, a
// broken one is refused with file:line and the previous rules keep serving.
func TestEditingRulesChangesBehaviourAndABrokenEditDoesNot(t *testing.T) {
	v1 := "rules:\n  - name: first\n    on: ping\n    emit: {event: pong, to: all()}\n"
	addr, _, rulesPath := serveWith(t, v1, "")
	matched := func(id string) []any {
		t.Helper()
		status, resp := signedPost(t, addr, id, `{"type":"ping","data":{}}`)
		if status != http.StatusAccepted {
			t.Fatalf("webhook %s: %d %v", id, status, resp)
		}
		m, _ := resp["matched"].([]any)
		return m
	}
	if m := matched("w1"); len(m) != 1 || m[0] != "first" {
		t.Fatalf("before the edit: matched %v", m)
	}
	v2 := "rules:\n  - name: second\n    on: ping\n    emit: {event: pong, to: all()}\n"
	if err := os.WriteFile(rulesPath, []byte(v2), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for n := 2; ; n++ {
		if m := matched("w" + itoa(n)); len(m) == 1 && m[0] == "second" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the edited rules never took effect")
		}
		time.Sleep(50 * time.Millisecond)
	}
	broken := "rules:\n  - name: third\n    on: ping\n    if: data.x +\n    emit: {event: pong, to: all()}\n"
	if err := os.WriteFile(rulesPath, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for !strings.Contains(readyDetail(t, addr), "rules.yaml:4") {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never showed the broken edit's file:line: %s", readyDetail(t, addr))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if m := matched("w-after-broken"); len(m) != 1 || m[0] != "second" {
		t.Fatalf("after a broken edit: matched %v, want the previous rules (second)", m)
	}
}

// TestClientEventIsForwardedSignedToTheApp: a client's bookingUpdate goes
// to the app through the forward rule, signed, with the sender's identity.
func TestClientEventIsForwardedSignedToTheApp(t *testing.T) {
	got := make(chan *http.Request, 1)
	bodies := make(chan []byte, 1)
	app := httptestServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r
		bodies <- b
	})
	fwdSecret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	rulesYAML := "rules:\n  - name: to-app\n    on: client.bookingUpdate\n    forward: {url: \"" + app + "/api/bookings/socket-update\"}\n"
	addr, cfg, _ := serveWith(t, rulesYAML, "forward: {secret: "+fwdSecret+", initial_backoff: 50ms}\n")
	tok, _ := auth.Sign([]byte(cfg.Auth.JWTSecret), map[string]any{"sub": "cust-1", "role": "customer", "exp": time.Now().Add(time.Hour).Unix()})
	conn, br, _, err := ws.Dial(context.Background(), "ws://"+addr+"/ws?token="+tok)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	wsutil.WriteClientMessage(conn, ws.OpText, []byte(`{"event":"bookingUpdate","data":{"id":"b1","status":"cancelled"},"ack":1}`))
	var r io.Reader = conn
	if br != nil {
		r = br
	}
	ack, _, err := wsutil.ReadServerData(struct {
		io.Reader
		io.Writer
	}{r, conn})
	if err != nil || !strings.Contains(string(ack), `"ok":true`) {
		t.Fatalf("ack %s %v", ack, err)
	}
	select {
	case req := <-got:
		body := <-bodies
		if err := verifyWith(fwdSecret, req.Header, body); err != nil {
			t.Fatalf("forwarded request does not verify: %v", err)
		}
		var ev map[string]any
		json.Unmarshal(body, &ev)
		if ev["type"] != "client.bookingUpdate" || ev["sender"].(map[string]any)["id"] != "cust-1" ||
			ev["data"].(map[string]any)["status"] != "cancelled" {
			t.Fatalf("forwarded body %s", body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing reached the app")
	}
}

// TestDescriptorExhaustion runs the binary with 64 descriptors: past the
// limit new connections are refused, the server does not spin, and once
// descriptors free up it accepts again.
func TestDescriptorExhaustion(t *testing.T) {
	_, cmd, addr := startBinary(t, "ulimit -n 64", "SIDECAR_STORE__PATH=:memory:")
	cfg, _, err := config.Load("../../config.example.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := auth.Sign([]byte(cfg.Auth.JWTSecret), map[string]any{"sub": "u", "exp": time.Now().Add(time.Hour).Unix()})
	url := "ws://" + addr + "/ws?token=" + tok
	var conns []net.Conn
	failed := 0
	for i := 0; i < 80; i++ {
		d := ws.Dialer{Timeout: 2 * time.Second}
		c, _, _, err := d.Dial(context.Background(), url)
		if err != nil {
			failed++
			continue
		}
		conns = append(conns, c)
	}
	if failed == 0 {
		t.Fatalf("all 80 connections accepted under a 64-descriptor limit")
	}
	// At the limit, with connections knocking, the server must not spin.
	pending, err := net.Dial("tcp", addr)
	if err == nil {
		defer pending.Close()
	}
	before := procCPU(t, cmd.Process.Pid)
	time.Sleep(2 * time.Second)
	if used := procCPU(t, cmd.Process.Pid) - before; used > time.Second {
		t.Fatalf("server used %v of CPU in 2 s at the descriptor limit: a busy loop", used)
	}
	for _, c := range conns {
		c.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		d := ws.Dialer{Timeout: 2 * time.Second}
		c, _, _, err := d.Dial(context.Background(), url)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after descriptors freed: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// procCPU is a process's user+system CPU time from /proc.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Skip("no /proc")
	}
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	var utime, stime int64
	fmt.Sscan(fields[11], &utime)
	fmt.Sscan(fields[12], &stime)
	return time.Duration(utime+stime) * 10 * time.Millisecond // USER_HZ = 100
}

// startBinary builds the sidecar, runs `sidecar serve --config
// config.example.yaml` on 127.0.0.1:0 (after the shell command prefix, if
// any, e.g. a ulimit) with env added, and returns the binary, the process
// and the address it logged. The process is killed at cleanup.
func startBinary(t *testing.T, prefix string, env ...string) (bin string, cmd *exec.Cmd, addr string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin = filepath.Join(t.TempDir(), "sidecar")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd, addr = runBinary(t, bin, prefix, env...)
	return bin, cmd, addr
}

// runBinary runs bin (built by startBinary) on config.example.yaml with env,
// after the shell command prefix if set, and returns once it listens.
func runBinary(t *testing.T, bin, prefix string, env ...string) (cmd *exec.Cmd, addr string) {
	t.Helper()
	script := `exec "$0" serve --config ../../config.example.yaml`
	if prefix != "" {
		script = prefix + " && " + script
	}
	cmd = exec.Command("sh", "-c", script, bin)
	cmd.Env = append(append(os.Environ(), "SIDECAR_LISTEN=127.0.0.1:0"), env...)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addrRe := regexp.MustCompile(`msg=listening .*addr=(\S+)`)
	addrc := make(chan string, 1)
	// Reads the log until the process exits and closes the pipe.
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := addrRe.FindStringSubmatch(sc.Text()); m != nil {
				addrc <- m[1]
			}
		}
	}()
	select {
	case addr = <-addrc:
	case <-time.After(20 * time.Second):
		t.Fatal("the binary never logged its address")
	}
	return cmd, addr
}

// TestDryRunShowsWhatTheShippedRulesWouldDo: matched rules and their
// commands, and nothing sent.
func TestDryRunShowsWhatTheShippedRulesWouldDo(t *testing.T) {
	n := startExample(t)
	admin := n.token(map[string]any{"sub": "ops", "role": "admin"})
	c, _, _, err := ws.Dial(context.Background(), "ws://"+n.addr+"/ws?token="+n.token(map[string]any{"sub": "c1"}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	status, resp := n.post("/api/rules/dry-run", admin, map[string]any{
		"type": "booking.status_changed",
		"data": map[string]any{"id": "b1", "status": "confirmed", "customerId": "c1", "providerId": "p1"},
	})
	if status != http.StatusOK {
		t.Fatalf("dry-run: %d %v", status, resp)
	}
	matched := fmt.Sprint(resp["matched"])
	if !strings.Contains(matched, "booking-status-changed") || !strings.Contains(matched, "booking-status-notify-customer") {
		t.Fatalf("matched %v", resp["matched"])
	}
	cmds, _ := resp["commands"].([]any)
	if len(cmds) != 2 || cmds[0].(map[string]any)["event"] != "bookingUpdated" {
		t.Fatalf("commands %v", resp["commands"])
	}
	// Nothing was sent to c1.
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if msg, _, err := wsutil.ReadServerData(c); err == nil {
		t.Fatalf("dry run delivered %s", msg)
	}
	// A plain user may not dry-run, and a body without a type is refused.
	if status, _ := n.post("/api/rules/dry-run", n.token(map[string]any{"sub": "c1"}), map[string]any{"type": "x"}); status != http.StatusForbidden {
		t.Fatalf("user dry-run: %d, want 403", status)
	}
	if status, _ := n.post("/api/rules/dry-run", admin, map[string]any{"data": 1}); status != http.StatusBadRequest {
		t.Fatalf("no type: %d, want 400", status)
	}
}

// TestWebhookMissingAFieldIsToldWhichRuleFailed: with the shipped rules, a
// booking.created without providerId is accepted (a retry would fail the
// same way), and the answer names the rule that failed and why, so the
// app's developer sees it without the sidecar's logs.
func TestWebhookMissingAFieldIsToldWhichRuleFailed(t *testing.T) {
	n := startExample(t)
	var out, errOut bytes.Buffer
	args := []string{"webhook", "--config", "../../config.example.yaml", "--url", "http://" + n.addr + "/webhooks",
		"--type", "booking.created", "--data", `{"id":"b1","customerName":"Ana"}`}
	if err := run(context.Background(), args, &out, &errOut); err != nil {
		t.Fatalf("webhook command: %v\n%s%s", err, out.String(), errOut.String())
	}
	status, body, _ := strings.Cut(out.String(), " Accepted ")
	var resp struct {
		Matched []string `json:"matched"`
		Errors  []struct {
			Rule, Kind, Message string
		} `json:"errors"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil || status != "202" {
		t.Fatalf("answer %q (%v), want 202 and JSON", out.String(), err)
	}
	if len(resp.Matched) != 0 || len(resp.Errors) != 1 || !strings.Contains(resp.Errors[0].Message, "user(): id is nil") {
		t.Fatalf("answer %s, want no rule matched and booking-created's error (user(): id is nil)", body)
	}
	// The engine takes the rule and the kind from the rules' error.
	if e := resp.Errors[0]; e.Rule != "booking-created" || e.Kind != "nil" {
		t.Fatalf("error %+v, want rule booking-created, kind nil", e)
	}
}
