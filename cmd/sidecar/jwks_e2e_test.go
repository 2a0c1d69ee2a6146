package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/gobwas/ws"
	"github.com/golang-jwt/jwt/v5"
)

// The end-to-end tests of issue 12: tokens from an identity provider
// whose JWKS the test serves on 127.0.0.1, and rotating key files.

// idp is an identity provider stand-in: it publishes a JWKS document,
// counts the requests for it, and can be told to fail in the ways real
// ones do.
type idp struct {
	srv      *httptest.Server
	requests atomic.Int32
	mu       sync.Mutex
	mode     string // ok, 503, reset, html, huge
	doc      []byte
}

func newIdP(t *testing.T) *idp {
	t.Helper()
	p := &idp{mode: "ok"}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		p.mu.Lock()
		mode, doc := p.mode, p.doc
		p.mu.Unlock()
		switch mode {
		case "ok":
			w.Header().Set("Content-Type", "application/json")
			w.Write(doc)
		case "503":
			http.Error(w, "upstream unavailable", http.StatusServiceUnavailable)
		case "reset": // the connection dies without an answer
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		case "html": // a proxy's error page, with 200
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Write([]byte("<!DOCTYPE html><html><body><h1>Service temporarily unavailable</h1></body></html>"))
		case "huge": // 1 MiB of valid JSON, streamed without a Content-Length
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"keys":[`))
			chunk := bytes.Repeat([]byte(" "), 64<<10)
			for range 16 {
				if _, err := w.Write(chunk); err != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
			w.Write([]byte(`]}`))
		}
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *idp) url() string { return p.srv.URL + "/.well-known/jwks.json" }

// publish makes the document the public JWKs of keys, by kid.
func (p *idp) publish(t *testing.T, keys map[string]*rsa.PrivateKey) {
	t.Helper()
	var set jose.JSONWebKeySet
	for kid, k := range keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.PublicKey, KeyID: kid, Algorithm: "RS256", Use: "sig"})
	}
	doc, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.doc, p.mode = doc, "ok"
	p.mu.Unlock()
}

func (p *idp) setMode(mode string) {
	p.mu.Lock()
	p.mode = mode
	p.mu.Unlock()
}

var e2eRSAKeys = sync.OnceValue(func() []*rsa.PrivateKey {
	var keys []*rsa.PrivateKey
	for range 3 {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		keys = append(keys, k)
	}
	return keys
})

const (
	e2eIssuer   = "https://idp.test/"
	e2eAudience = "sidecar"
)

// idpToken is a token as the provider issues them: signed with key,
// naming kid (none if empty).
func idpToken(t *testing.T, method jwt.SigningMethod, key any, kid, sub string) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, jwt.MapClaims{
		"sub": sub, "iss": e2eIssuer, "aud": e2eAudience,
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix(),
	})
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// dialStatus opens a WebSocket with token and returns the handshake's
// status: 101 when it opened (the connection is closed again), else the
// HTTP status the sidecar refused it with.
func dialStatus(t *testing.T, addr, token string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, _, err := ws.Dial(ctx, "ws://"+addr+"/ws?token="+token)
	if err == nil {
		conn.Close()
		return http.StatusSwitchingProtocols
	}
	var se ws.StatusError
	if errors.As(err, &se) {
		return int(se)
	}
	t.Fatalf("dial: %v", err)
	return 0
}

// authCheck is the readiness check "auth" of /readyz, and its status.
func authCheck(t *testing.T, addr string) (int, bool, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Checks map[string]struct {
			Ready  bool   `json:"ready"`
			Detail string `json:"detail"`
		} `json:"checks"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	c := body.Checks["auth"]
	return resp.StatusCode, c.Ready, c.Detail
}

const e2eRules = "rules:\n  - {name: ping, on: ping, emit: {event: pong, to: all()}}\n"

func writeRules(t *testing.T, dir string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(e2eRules), 0o644); err != nil {
		t.Fatal(err)
	}
}

// idpConfig is the three lines of README.md's "Tokens from an identity
// provider", and extra.
func idpConfig(p *idp, algorithms, extra string) string {
	return "auth:\n  jwks_url: " + p.url() + "\n  algorithms: " + algorithms + "\n" +
		"  issuer: " + e2eIssuer + "\n  audience: " + e2eAudience + "\n" + extra
}

// TestJWKSFromAnIdentityProvider: a token of the provider's current key
// works; after a rotation new tokens work without a restart and a token of
// the removed key is refused on its next connection; the endpoint down,
// resetting connections, answering an HTML error page or a 1 MiB document
// keeps the last good keys serving, shown in /readyz and the metrics; an
// HS256 token made with the public key as its secret is refused.
func TestJWKSFromAnIdentityProvider(t *testing.T) {
	keys := e2eRSAKeys()
	p := newIdP(t)
	p.publish(t, map[string]*rsa.PrivateKey{"2024-a": keys[0]})
	dir := t.TempDir()
	writeRules(t, dir)
	// A short window (the shortest allowed), so that each failure below
	// gets its own early fetch.
	const window = time.Second
	addr, _ := serveConfig(t, dir, idpConfig(p, "[RS256]", "  jwks_min_refresh: 1s\n"), nil, slog.LevelWarn, t.Output())

	oldTok := idpToken(t, jwt.SigningMethodRS256, keys[0], "2024-a", "u1")
	if got := dialStatus(t, addr, oldTok); got != 101 {
		t.Fatalf("token of the current key: %d, want 101", got)
	}
	if got := p.requests.Load(); got != 1 {
		t.Errorf("%d fetches at start, want 1", got)
	}

	// Rotation: a new kid published, the old one removed.
	p.publish(t, map[string]*rsa.PrivateKey{"2024-b": keys[1]})
	newTok := idpToken(t, jwt.SigningMethodRS256, keys[1], "2024-b", "u2")
	if got := dialStatus(t, addr, newTok); got != 101 {
		t.Fatalf("token of the new key after rotation: %d, want 101 without a restart", got)
	}
	if got := dialStatus(t, addr, oldTok); got != 401 {
		t.Fatalf("token of the removed key, new connection: %d, want 401", got)
	}
	if got := p.requests.Load(); got != 2 {
		t.Errorf("%d fetches after the rotation, want 2", got)
	}

	// Failures: each is fetched early (an unknown kid asks for it), fails,
	// and the last good keys keep serving.
	for i, tc := range []struct{ mode, detail string }{
		{"503", "HTTP 503"},
		{"reset", "EOF"},
		{"html", "not a JWKS document"},
		{"huge", "over 512 KiB"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			time.Sleep(window + 100*time.Millisecond) // past jwks_min_refresh
			p.setMode(tc.mode)
			before := p.requests.Load()
			if got := dialStatus(t, addr, idpToken(t, jwt.SigningMethodRS256, keys[2], fmt.Sprintf("unknown-%d", i), "u3")); got != 401 {
				t.Fatalf("token of an unknown kid: %d, want 401", got)
			}
			// (A retry of the failure before may add one.)
			if got := p.requests.Load() - before; got < 1 || got > 2 {
				t.Errorf("%d fetches for the unknown kid, want 1", got)
			}
			if got := dialStatus(t, addr, newTok); got != 101 {
				t.Fatalf("token of the last good key with the provider failing (%s): %d, want 101", tc.mode, got)
			}
			status, ready, detail := authCheck(t, addr)
			if status != 200 || !ready || !strings.HasPrefix(detail, "degraded: jwks") || !strings.Contains(detail, tc.detail) {
				t.Errorf("/readyz = %d, auth %v %q; want 200, ready, degraded, saying %q", status, ready, detail, tc.detail)
			}
		})
	}
	// Each failure is counted (retries with backoff add to them).
	m := metricsText(t, addr)
	var errs int
	if _, err := fmt.Sscanf(m[strings.Index(m, `sidecar_jwks_refresh_total{result="error"}`):], `sidecar_jwks_refresh_total{result="error"} %d`, &errs); err != nil || errs < 4 {
		t.Errorf("sidecar_jwks_refresh_total{result=\"error\"} = %d (%v), want at least 4", errs, err)
	}
	for _, want := range []string{`sidecar_jwks_refresh_total{result="ok"} 2`, "sidecar_jwks_keys 1", "sidecar_jwks_last_success_timestamp_seconds "} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// The algorithm comes from the key: HS256 with the public key as the
	// secret, as PEM or as the JWK's n bytes, with its kid or without.
	der, _ := x509.MarshalPKIXPublicKey(&keys[1].PublicKey)
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	for name, secret := range map[string][]byte{"PEM": pemBytes, "n": keys[1].PublicKey.N.Bytes()} {
		for _, kid := range []string{"2024-b", ""} {
			if got := dialStatus(t, addr, idpToken(t, jwt.SigningMethodHS256, secret, kid, "mallory")); got != 401 {
				t.Errorf("HS256 signed with the public key (%s, kid %q): %d, want 401", name, kid, got)
			}
		}
	}

	// The provider back: the next fetch clears the degraded state.
	p.publish(t, map[string]*rsa.PrivateKey{"2024-b": keys[1], "2024-c": keys[2]})
	time.Sleep(window + 100*time.Millisecond)
	if got := dialStatus(t, addr, idpToken(t, jwt.SigningMethodRS256, keys[2], "2024-c", "u4")); got != 101 {
		t.Fatalf("token of a key published after the outage: %d, want 101", got)
	}
	if _, ready, detail := authCheck(t, addr); !ready || !strings.HasPrefix(detail, "jwks: 2 keys") {
		t.Errorf("auth check after recovery: %v %q", ready, detail)
	}
}

// TestJWKSRandomKIDsOneFetchPerWindow is case 33: 1,000 tokens with random
// kids cost the provider at most one fetch in the window; with HS256 also
// allowed, an HS256 token made with the public key is still refused.
func TestJWKSRandomKIDsOneFetchPerWindow(t *testing.T) {
	keys := e2eRSAKeys()
	p := newIdP(t)
	p.publish(t, map[string]*rsa.PrivateKey{"k1": keys[0]})
	dir := t.TempDir()
	writeRules(t, dir)
	const secret = "e2e-secret-e2e-secret-e2e-secret-32"
	addr, _ := serveConfig(t, dir, idpConfig(p, "[RS256, ES256, HS256]", "  jwt_secret: "+secret+"\n"), nil, slog.LevelWarn, t.Output())
	// With HS256 allowed the node is ready before the first fetch ends.
	waitUntil(t, "the first fetch", func() bool { _, _, d := authCheck(t, addr); return strings.HasPrefix(d, "jwks: 1 keys") })
	if got := p.requests.Load(); got != 1 {
		t.Fatalf("%d fetches at start, want 1", got)
	}
	// ES256 signs faster than RS256; the kid is what matters.
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tokens := make(chan string, 1000)
	for i := range 1000 {
		tokens <- idpToken(t, jwt.SigningMethodES256, ec, fmt.Sprintf("random-%d-%x", i, time.Now().UnixNano()), "u1")
	}
	close(tokens)
	var wrong atomic.Int32
	var wg sync.WaitGroup
	start := time.Now()
	for range 16 {
		wg.Go(func() {
			for tok := range tokens {
				if dialStatus(t, addr, tok) != 401 {
					wrong.Add(1)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("1000 tokens with random kids refused in %s", time.Since(start).Round(time.Millisecond))
	if wrong.Load() != 0 {
		t.Errorf("%d of 1000 tokens with random kids not refused with 401", wrong.Load())
	}
	if got := p.requests.Load() - 1; got > 1 {
		t.Errorf("%d fetches for 1000 random kids within jwks_min_refresh (1m), want at most 1", got)
	}
	if got := dialStatus(t, addr, idpToken(t, jwt.SigningMethodRS256, keys[0], "k1", "u1")); got != 101 {
		t.Errorf("token of the provider's key after the flood: %d, want 101", got)
	}
	der, _ := x509.MarshalPKIXPublicKey(&keys[0].PublicKey)
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	for name, key := range map[string][]byte{"PEM": pemBytes, "n": keys[0].PublicKey.N.Bytes()} {
		if got := dialStatus(t, addr, idpToken(t, jwt.SigningMethodHS256, key, "k1", "mallory")); got != 401 {
			t.Errorf("HS256 signed with the public key (%s) while HS256 is allowed: %d, want 401", name, got)
		}
	}
	if got := dialStatus(t, addr, idpToken(t, jwt.SigningMethodHS256, []byte(secret), "", "u2")); got != 101 {
		t.Errorf("HS256 token of the app's secret: %d, want 101", got)
	}
}

// TestJWKSDownAtStart: the sidecar starts with the provider down, serves
// /readyz at once (not ready, saying why), retries, and is ready once the
// provider answers.
func TestJWKSDownAtStart(t *testing.T) {
	keys := e2eRSAKeys()
	p := newIdP(t)
	p.setMode("503")
	dir := t.TempDir()
	writeRules(t, dir)
	start := time.Now()
	addr, _ := startServe(t, dir, idpConfig(p, "[RS256]", ""), nil, slog.LevelError, t.Output())
	var status int
	var detail string
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if status, _, detail = authCheck(t, addr); strings.Contains(detail, "fetches failed") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz with the provider down: %d %q", status, detail)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("start-up with the provider down took %s", d)
	}
	if status != 503 || !strings.Contains(detail, "no keys yet") || !strings.Contains(detail, "every token is refused") {
		t.Errorf("/readyz with the provider down at start = %d %q, want 503 saying why", status, detail)
	}
	p.publish(t, map[string]*rsa.PrivateKey{"k1": keys[0]})
	waitReady(t, "http://"+addr+"/readyz")
	if got := dialStatus(t, addr, idpToken(t, jwt.SigningMethodRS256, keys[0], "k1", "u1")); got != 101 {
		t.Errorf("token once the provider is back: %d, want 101", got)
	}
}

// syncLog is a log sink safe for serve's goroutines and the test.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncLog) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncLog) count(sub string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), sub)
}

// TestKeyFilesRotateWithoutRestart: two key files; rewriting one rotates
// its key (the watcher sees it), a broken rewrite keeps its previous key,
// and SIGHUP reaches both the rules and the key files.
func TestKeyFilesRotateWithoutRestart(t *testing.T) {
	keys := e2eRSAKeys()
	dir := t.TempDir()
	writeRules(t, dir)
	if err := os.Mkdir(filepath.Join(dir, "keys"), 0o755); err != nil {
		t.Fatal(err)
	}
	current, next := filepath.Join(dir, "keys", "current.pem"), filepath.Join(dir, "keys", "next.pem")
	writeKey := func(path string, data []byte) {
		t.Helper()
		if err := os.WriteFile(path+".tmp", data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	pemOf := func(k *rsa.PrivateKey) []byte {
		der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	writeKey(current, pemOf(keys[0]))
	writeKey(next, pemOf(keys[1]))
	hup := make(chan os.Signal, 1)
	logs := &syncLog{}
	conf := "auth:\n  algorithms: [RS256]\n  public_key_file: [keys/current.pem, keys/next.pem]\n"
	addr, _ := serveConfig(t, dir, conf, hup, slog.LevelInfo, logs)
	tok := func(k *rsa.PrivateKey, kid string) string { return idpToken(t, jwt.SigningMethodRS256, k, kid, "u1") }

	for _, tc := range []struct {
		name string
		tok  string
		want int
	}{
		{"kid current", tok(keys[0], "current"), 101},
		{"kid next", tok(keys[1], "next"), 101},
		{"no kid: tried in turn", tok(keys[1], ""), 101},
		{"kid naming no file: tried in turn", tok(keys[0], "app-key-1"), 101},
		{"kid naming no file, key in none", tok(keys[2], "old"), 401},
		{"kid of the other file", tok(keys[0], "next"), 401},
	} {
		if got := dialStatus(t, addr, tc.tok); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}

	// Rotate "current" to a new key by rewriting the file.
	writeKey(current, pemOf(keys[2]))
	waitUntil(t, "the rewritten key file to be used", func() bool { return dialStatus(t, addr, tok(keys[2], "current")) == 101 })
	if got := dialStatus(t, addr, tok(keys[0], "current")); got != 401 {
		t.Errorf("token of the replaced key: %d, want 401", got)
	}

	// A broken rewrite keeps the previous key, and says so.
	writeKey(next, []byte("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n"))
	waitUntil(t, "the broken key file to be logged", func() bool { return logs.count("previous key kept") > 0 && logs.count(next) > 0 })
	if got := dialStatus(t, addr, tok(keys[1], "next")); got != 101 {
		t.Errorf("token of the broken file's previous key: %d, want 101", got)
	}
	if _, ready, detail := authCheck(t, addr); !ready || !strings.Contains(detail, "last reload failed, previous keys kept") {
		t.Errorf("auth check with a broken key file: %v %q", ready, detail)
	}

	// SIGHUP reaches the rules reloader and the key files both.
	rules, keyReloads := logs.count("rules loaded"), logs.count("public key files reloaded")
	hup <- syscall.SIGHUP
	waitUntil(t, "SIGHUP to reload rules and keys", func() bool {
		return logs.count("rules loaded") > rules && logs.count("public key files reloaded") > keyReloads
	})
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestREADMEIdentityProviderSnippet: README.md's three lines, with the
// provider's URLs replaced by the test's, run as they are.
func TestREADMEIdentityProviderSnippet(t *testing.T) {
	snippet := readmeBlock(t, "yaml", "jwks_url")
	const url, issuer = "https://YOUR_TENANT.auth0.com/.well-known/jwks.json", "https://YOUR_TENANT.auth0.com/"
	if !strings.Contains(snippet, url) || !strings.Contains(snippet, "issuer: "+issuer) {
		t.Fatalf("README's snippet changed; update this test:\n%s", snippet)
	}
	keys := e2eRSAKeys()
	p := newIdP(t)
	p.publish(t, map[string]*rsa.PrivateKey{"k1": keys[0]})
	snippet = strings.ReplaceAll(snippet, url, p.url())
	snippet = strings.ReplaceAll(snippet, issuer, e2eIssuer)
	dir := t.TempDir()
	writeRules(t, dir)
	addr, _ := serveConfig(t, dir, snippet, nil, slog.LevelWarn, t.Output())
	if got := dialStatus(t, addr, idpToken(t, jwt.SigningMethodRS256, keys[0], "k1", "u1")); got != 101 {
		t.Errorf("provider's token with README's config: %d, want 101", got)
	}
}
