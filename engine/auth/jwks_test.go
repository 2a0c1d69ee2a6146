package auth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// value is the value of the one metric c collects.
func value(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

// series counts the series of the named families reg gathers.
func series(tb testing.TB, reg *prometheus.Registry, names ...string) int {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		for _, name := range names {
			if mf.GetName() == name {
				n += len(mf.GetMetric())
			}
		}
	}
	return n
}

// jwk is the JSON of a public JWK for key with kid and alg.
func jwk(tb testing.TB, key any, kid, alg, use string) json.RawMessage {
	tb.Helper()
	b, err := json.Marshal(jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: alg, Use: use})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// jwksDoc is a JWKS document of keys.
func jwksDoc(keys ...json.RawMessage) []byte {
	b, _ := json.Marshal(map[string]any{"keys": keys})
	return b
}

// provider is an identity provider's JWKS endpoint for tests: it serves
// body with status, counts requests, and can be told to block.
type provider struct {
	srv      *httptest.Server
	requests atomic.Int32
	mu       sync.Mutex
	status   int
	ctype    string
	cache    string
	body     []byte
	block    chan struct{} // non-nil: requests wait for it to close
}

func newProvider(t *testing.T, body []byte) *provider {
	p := &provider{status: 200, ctype: "application/json", body: body}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		p.mu.Lock()
		status, ctype, cache, body, block := p.status, p.ctype, p.cache, p.body, p.block
		p.mu.Unlock()
		if block != nil {
			<-block
		}
		w.Header().Set("Content-Type", ctype)
		if cache != "" {
			w.Header().Set("Cache-Control", cache)
		}
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *provider) serve(status int, ctype string, body []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.status, p.ctype, p.body = status, ctype, body
}

// runVerifier runs v's key sources until the test ends.
func runVerifier(t *testing.T, v *Verifier) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- v.Run(ctx, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
}

// waitJWKS waits until the JWKS source has fetched n times.
func waitJWKS(t *testing.T, v *Verifier, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			_, detail := v.Check()
			t.Fatalf("timed out waiting for %s; readiness: %s", what, detail)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func fetched(v *Verifier, result string) int {
	return int(value(v.jwks.refreshes.WithLabelValues(result)))
}

type jwksKeys struct {
	rsa1, rsa2 *rsa.PrivateKey
	ec         *ecdsa.PrivateKey
	ec384      *ecdsa.PrivateKey
	ed         ed25519.PrivateKey
}

var testJWKSKeys = sync.OnceValue(func() jwksKeys {
	k := jwksKeys{rsa1: rsaTestKey()}
	var err error
	if k.rsa2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		panic(err)
	}
	if k.ec384, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader); err != nil {
		panic(err)
	}
	if _, k.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		panic(err)
	}
	return k
})

func withKID(kid string) map[string]any {
	if kid == "" {
		return nil
	}
	return map[string]any{"kid": kid}
}

// TestJWKSKeyChoice is the key function over a JWKS: the kid picks the
// key, the algorithm comes from the key, a token without a kid is tried
// against every key of its family.
func TestJWKSKeyChoice(t *testing.T) {
	k := testJWKSKeys()
	doc := jwksDoc(
		jwk(t, &k.rsa1.PublicKey, "rsa-1", "RS256", "sig"),
		jwk(t, &k.rsa2.PublicKey, "rsa-2", "", ""), // no alg: any allowed RSA algorithm
		jwk(t, &k.ec.PublicKey, "ec-1", "ES256", "sig"),
		jwk(t, &k.ec384.PublicKey, "ec-384", "", "sig"),
		jwk(t, k.ed.Public(), "ed-1", "EdDSA", "sig"),
	)
	p := newProvider(t, doc)
	v := mustNew(t, Config{Algorithms: []string{"RS256", "PS256", "ES256", "ES384", "EdDSA"}, JWKSURL: p.srv.URL})
	runVerifier(t, v)
	waitJWKS(t, v, "the first fetch", func() bool { return v.jwks.current().Len() == 5 })

	claims := func() jwt.MapClaims { return jwt.MapClaims{"sub": "u1", "exp": in(time.Hour)} }
	tests := []struct {
		name   string
		method jwt.SigningMethod
		key    any
		kid    string
		want   error
		detail error
	}{
		{"RS256 by kid", jwt.SigningMethodRS256, k.rsa1, "rsa-1", nil, nil},
		{"PS256 by kid whose JWK says RS256: refused, the alg is the key's", jwt.SigningMethodPS256, k.rsa1, "rsa-1", ErrTokenInvalid, errKIDAlg},
		{"PS256 by a kid without alg", jwt.SigningMethodPS256, k.rsa2, "rsa-2", nil, nil},
		{"RS256 by a kid without alg", jwt.SigningMethodRS256, k.rsa2, "rsa-2", nil, nil},
		{"RS256 signed by rsa-2 under kid rsa-1", jwt.SigningMethodRS256, k.rsa2, "rsa-1", ErrTokenInvalid, jwt.ErrTokenSignatureInvalid},
		{"RS256 without kid: tried in turn (first key)", jwt.SigningMethodRS256, k.rsa1, "", nil, nil},
		{"RS256 without kid: tried in turn (second key)", jwt.SigningMethodRS256, k.rsa2, "", nil, nil},
		{"PS256 without kid: only keys that allow it", jwt.SigningMethodPS256, k.rsa1, "", ErrTokenInvalid, jwt.ErrTokenSignatureInvalid},
		{"ES256 by kid", jwt.SigningMethodES256, k.ec, "ec-1", nil, nil},
		{"ES384 by kid", jwt.SigningMethodES384, k.ec384, "ec-384", nil, nil},
		{"ES384 token naming the P-256 key", jwt.SigningMethodES384, k.ec384, "ec-1", ErrTokenInvalid, errKIDAlg},
		{"ES256 token naming the RSA key", jwt.SigningMethodES256, k.ec, "rsa-1", ErrTokenInvalid, errKIDAlg},
		{"ES256 without kid", jwt.SigningMethodES256, k.ec, "", nil, nil},
		{"EdDSA by kid", jwt.SigningMethodEdDSA, k.ed, "ed-1", nil, nil},
		{"EdDSA without kid", jwt.SigningMethodEdDSA, k.ed, "", nil, nil},
		{"unknown kid", jwt.SigningMethodRS256, k.rsa1, "nope", ErrTokenInvalid, errUnknownKID},
		{"HS256 not allowed", jwt.SigningMethodHS256, []byte("whatever-whatever-whatever-whatev"), "rsa-1", ErrTokenInvalid, jwt.ErrTokenSignatureInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			token := signed(t, tc.method, tc.key, claims(), withKID(tc.kid))
			_, err := v.Authenticate(token)
			checkErr(t, token, err, tc.want, tc.detail)
		})
	}
	t.Run("kid not a string", func(t *testing.T) {
		token := signed(t, jwt.SigningMethodRS256, k.rsa1, claims(), map[string]any{"kid": 7})
		_, err := v.Authenticate(token)
		checkErr(t, token, err, ErrTokenInvalid, errBadKID)
	})
}

// TestJWKSAlgConfusion: a token whose header says HS256, signed with the
// provider's public key as the HMAC secret (its PEM, its JWK's n bytes,
// the whole JWK), is refused, with HS256 allowed or not.
func TestJWKSAlgConfusion(t *testing.T) {
	k := testJWKSKeys()
	pubJWK := jwk(t, &k.rsa1.PublicKey, "rsa-1", "", "sig")
	p := newProvider(t, jwksDoc(pubJWK))
	_, pemBytes := writePublicKey(t, &k.rsa1.PublicKey)
	rsOnly := mustNew(t, Config{Algorithms: []string{"RS256"}, JWKSURL: p.srv.URL})
	withHS := mustNew(t, Config{Algorithms: []string{"RS256", "HS256"}, Secret: testSecret, JWKSURL: p.srv.URL})
	for _, v := range []*Verifier{rsOnly, withHS} {
		runVerifier(t, v)
		waitJWKS(t, v, "the first fetch", func() bool { return v.jwks.current().Len() == 1 })
	}
	secrets := map[string][]byte{
		"PEM":     pemBytes,
		"n bytes": k.rsa1.PublicKey.N.Bytes(),
		"JWK":     pubJWK,
	}
	for name, secret := range secrets {
		for vname, v := range map[string]*Verifier{"RS256 only": rsOnly, "RS256 and HS256": withHS} {
			for _, kid := range []string{"", "rsa-1"} {
				t.Run(fmt.Sprintf("%s/%s/kid=%q", name, vname, kid), func(t *testing.T) {
					token := signed(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "u1", "exp": in(time.Hour)}, withKID(kid))
					_, err := v.Authenticate(token)
					checkErr(t, token, err, ErrTokenInvalid, jwt.ErrTokenSignatureInvalid)
				})
			}
		}
	}
}

// TestParseJWKS is the document parser's table: what is taken, what is
// skipped and why, and what makes the whole document fail.
func TestParseJWKS(t *testing.T) {
	k := testJWKSKeys()
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	all := []string{"RS256", "PS256", "ES256", "ES384", "ES512", "EdDSA"}
	priv := jwk(t, k.rsa1, "priv", "RS256", "sig") // a private JWK: d, p, q ...
	oct, _ := json.Marshal(jose.JSONWebKey{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "oct", Algorithm: "HS256"})
	tests := []struct {
		name    string
		doc     []byte
		allowed []string
		kids    []string // of the keys taken
		skipped string   // substring of a skip note
		err     string   // substring of the error
	}{
		{"RSA", jwksDoc(jwk(t, &k.rsa1.PublicKey, "a", "RS256", "sig")), all, []string{"a"}, "", ""},
		{"EC P-256, P-384, P-521, Ed25519", jwksDoc(jwk(t, &k.ec.PublicKey, "p256", "", ""), jwk(t, &k.ec384.PublicKey, "p384", "ES384", ""), jwk(t, &p521.PublicKey, "p521", "ES512", ""), jwk(t, k.ed.Public(), "ed", "", "")), all, []string{"p256", "p384", "p521", "ed"}, "", ""},
		{"private key: public part only", jwksDoc(priv), all, []string{"priv"}, "", ""},
		{"enc key skipped", jwksDoc(jwk(t, &k.rsa1.PublicKey, "enc", "", "enc"), jwk(t, &k.rsa2.PublicKey, "sig", "", "sig")), all, []string{"sig"}, `use "enc"`, ""},
		{"oct key skipped", jwksDoc(oct, jwk(t, &k.rsa2.PublicKey, "sig", "", "")), all, []string{"sig"}, "symmetric", ""},
		{"RSA 1024 skipped", jwksDoc(jwk(t, &small.PublicKey, "small", "", ""), jwk(t, &k.rsa2.PublicKey, "big", "", "")), all, []string{"big"}, "1024 bits", ""},
		{"alg not allowed", jwksDoc(jwk(t, &k.rsa1.PublicKey, "rs512", "RS512", ""), jwk(t, &k.rsa2.PublicKey, "ok", "RS256", "")), all, []string{"ok"}, "RS512 is not in auth.algorithms", ""},
		{"family not allowed", jwksDoc(jwk(t, &k.ec.PublicKey, "ec", "", ""), jwk(t, &k.rsa2.PublicKey, "ok", "", "")), []string{"RS256"}, []string{"ok"}, "uses a ECDSA P-256 key", ""},
		{"alg that does not fit its key", jwksDoc([]byte(`{"kty":"EC","crv":"P-256","kid":"x","alg":"RS256","x":"`+b64(k.ec.PublicKey.X.FillBytes(make([]byte, 32)))+`","y":"`+b64(k.ec.PublicKey.Y.FillBytes(make([]byte, 32)))+`"}`), jwk(t, &k.rsa2.PublicKey, "ok", "", "")), all, []string{"ok"}, "does not fit", ""},
		{"unknown kty skipped", jwksDoc([]byte(`{"kty":"XYZ","kid":"x"}`), jwk(t, &k.rsa2.PublicKey, "ok", "", "")), all, []string{"ok"}, "unsupported key type", ""},
		{"X25519 skipped", jwksDoc([]byte(`{"kty":"OKP","crv":"X25519","kid":"x","x":"AAAA"}`), jwk(t, &k.rsa2.PublicKey, "ok", "", "")), all, []string{"ok"}, "unsupported", ""},
		{"broken key skipped", jwksDoc([]byte(`{"kty":"RSA","kid":"x","n":"!!","e":"AQAB"}`), jwk(t, &k.rsa2.PublicKey, "ok", "", "")), all, []string{"ok"}, `key 0 (kid "x")`, ""},
		{"HTML", []byte("<html><body>502 Bad Gateway</body></html>"), all, nil, "", "not a JWKS document"},
		{"garbage", []byte("\x00\x01garbage"), all, nil, "", "not a JWKS document"},
		{"no keys member", []byte(`{"kty":"RSA"}`), all, nil, "", `no "keys" array`},
		{"keys not an array", []byte(`{"keys":{}}`), all, nil, "", "not a JWKS document"},
		{"empty", []byte(`{"keys":[]}`), all, nil, "", "no usable key among the 0"},
		{"nothing usable", jwksDoc(jwk(t, &k.rsa1.PublicKey, "enc", "", "enc")), all, nil, `use "enc"`, "no usable key among the 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			keys, skipped, err := parseJWKS(tc.doc, tc.allowed)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("parseJWKS error = %v, want it to contain %q", err, tc.err)
				}
			} else if err != nil {
				t.Fatalf("parseJWKS: %v", err)
			}
			var kids []string
			for _, k := range keys {
				kids = append(kids, k.KID)
				switch k.Key.(type) {
				case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
				default:
					t.Errorf("key %q is a %T, want a public key", k.KID, k.Key)
				}
			}
			if fmt.Sprint(kids) != fmt.Sprint(tc.kids) {
				t.Errorf("kids = %q, want %q", kids, tc.kids)
			}
			if tc.skipped != "" && !strings.Contains(strings.Join(skipped, "\n"), tc.skipped) {
				t.Errorf("skipped = %q, want a note containing %q", skipped, tc.skipped)
			}
		})
	}
}

func b64(b []byte) string { return seg(b) }

func TestMaxAge(t *testing.T) {
	j := &jwksSource{refresh: DefaultJWKSRefresh}
	tests := []struct {
		header []string
		want   time.Duration
	}{
		{nil, time.Hour},
		{[]string{"public, max-age=600"}, 10 * time.Minute},
		{[]string{"max-age=30"}, time.Minute},
		{[]string{"max-age=0"}, time.Minute},
		{[]string{"MAX-AGE=7200, must-revalidate"}, 2 * time.Hour},
		{[]string{"max-age=172800"}, 24 * time.Hour},
		{[]string{"max-age=99999999999999999999"}, time.Hour},
		{[]string{"max-age=abc"}, time.Hour},
		{[]string{"no-cache"}, time.Hour},
		{[]string{"s-maxage=60"}, time.Hour},
		{[]string{"private", `max-age="120"`}, 2 * time.Minute},
	}
	for _, tc := range tests {
		h := http.Header{"Cache-Control": tc.header}
		if got := j.nextRefresh(maxAge(h)); got != tc.want {
			t.Errorf("Cache-Control %q: next refresh in %s, want %s", tc.header, got, tc.want)
		}
	}
}

// TestJWKSRotation: the provider publishes a new kid and drops the old
// one; a token under the new kid triggers an early fetch and works, one
// under the removed kid is refused.
func TestJWKSRotation(t *testing.T) {
	k := testJWKSKeys()
	p := newProvider(t, jwksDoc(jwk(t, &k.rsa1.PublicKey, "old", "RS256", "sig")))
	v := mustNew(t, Config{Algorithms: []string{"RS256"}, JWKSURL: p.srv.URL})
	runVerifier(t, v)
	waitJWKS(t, v, "the first fetch", func() bool { return v.jwks.current().Len() == 1 })
	claims := jwt.MapClaims{"sub": "u1", "exp": in(time.Hour)}
	oldTok := signed(t, jwt.SigningMethodRS256, k.rsa1, claims, withKID("old"))
	newTok := signed(t, jwt.SigningMethodRS256, k.rsa2, claims, withKID("new"))
	if _, err := v.Authenticate(oldTok); err != nil {
		t.Fatalf("token of the current key: %v", err)
	}
	p.serve(200, "application/json", jwksDoc(jwk(t, &k.rsa2.PublicKey, "new", "RS256", "sig")))
	if _, err := v.Authenticate(newTok); err != nil {
		t.Fatalf("token of the new key, after rotation: %v", err)
	}
	if _, err := v.Authenticate(oldTok); !errors.Is(err, errUnknownKID) {
		t.Fatalf("token of the removed key = %v, want refused as an unknown kid", err)
	}
	if n := p.requests.Load(); n != 2 {
		t.Errorf("%d fetches, want 2 (the first, and one early for the new kid)", n)
	}
}

// TestJWKSUnknownKIDsRateLimited is case 33: 1,000 tokens with random kids,
// from 50 goroutines, cost the provider one fetch per window; those that
// arrive while it is in flight wait for it and share it.
func TestJWKSUnknownKIDsRateLimited(t *testing.T) {
	k := testJWKSKeys()
	p := newProvider(t, jwksDoc(jwk(t, &k.rsa1.PublicKey, "a", "RS256", "sig")))
	v := mustNew(t, Config{Algorithms: []string{"RS256"}, JWKSURL: p.srv.URL, JWKSMinRefresh: time.Hour})
	runVerifier(t, v)
	waitJWKS(t, v, "the first fetch", func() bool { return v.jwks.current().Len() == 1 })
	// The early fetch is held until every goroutine has a token in hand.
	block := make(chan struct{})
	p.mu.Lock()
	p.block = block
	p.mu.Unlock()
	var refused atomic.Int32
	var wg sync.WaitGroup
	start := time.Now()
	for g := range 50 {
		wg.Go(func() {
			for i := range 20 {
				tok := signed(t, jwt.SigningMethodRS256, k.rsa1, jwt.MapClaims{"sub": "u1", "exp": in(time.Hour)}, withKID(fmt.Sprintf("random-%d-%d", g, i)))
				if _, err := v.Authenticate(tok); errors.Is(err, errUnknownKID) {
					refused.Add(1)
				}
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	close(block)
	wg.Wait()
	if refused.Load() != 1000 {
		t.Errorf("%d of 1000 random kids refused, want all", refused.Load())
	}
	if n := p.requests.Load(); n != 2 {
		t.Errorf("%d fetches for 1000 unknown kids, want 2 (the first, one early)", n)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("1000 unknown kids took %s", d)
	}
	// A known kid still works, without a fetch.
	if _, err := v.Authenticate(signed(t, jwt.SigningMethodRS256, k.rsa1, jwt.MapClaims{"sub": "u1", "exp": in(time.Hour)}, withKID("a"))); err != nil {
		t.Fatal(err)
	}
	if n := p.requests.Load(); n != 2 {
		t.Errorf("%d fetches after a known kid, want 2", n)
	}
}

// TestJWKSEarlyWaitIsBounded: a token with an unknown kid waits for the
// early fetch at most unknownKIDWait, and is then refused.
func TestJWKSEarlyWaitIsBounded(t *testing.T) {
	k := testJWKSKeys()
	p := newProvider(t, jwksDoc(jwk(t, &k.rsa1.PublicKey, "a", "RS256", "sig")))
	v := mustNew(t, Config{Algorithms: []string{"RS256"}, JWKSURL: p.srv.URL, JWKSTimeout: 4 * time.Second})
	runVerifier(t, v)
	waitJWKS(t, v, "the first fetch", func() bool { return v.jwks.current().Len() == 1 })
	block := make(chan struct{})
	p.mu.Lock()
	p.block = block
	p.mu.Unlock()
	defer close(block)
	start := time.Now()
	_, err := v.Authenticate(signed(t, jwt.SigningMethodRS256, k.rsa1, jwt.MapClaims{"sub": "u1", "exp": in(time.Hour)}, withKID("b")))
	if d := time.Since(start); !errors.Is(err, errUnknownKID) || d < unknownKIDWait || d > unknownKIDWait+time.Second {
		t.Fatalf("unknown kid with the provider hanging: %v after %s, want refused after %s", err, d, unknownKIDWait)
	}
}

// TestJWKSFailuresKeepLastGoodKeys: down, 5xx, an HTML error page,
// garbage, an empty set, a 1 MiB document: each keeps the last good keys
// serving, is counted, and shows in Check as degraded.
func TestJWKSFailuresKeepLastGoodKeys(t *testing.T) {
	k := testJWKSKeys()
	good := jwksDoc(jwk(t, &k.rsa1.PublicKey, "a", "RS256", "sig"))
	p := newProvider(t, good)
	logs := &syncBuffer{}
	v := mustNew(t, Config{Algorithms: []string{"RS256"}, JWKSURL: p.srv.URL, JWKSMinRefresh: time.Nanosecond,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	runVerifier(t, v)
	waitJWKS(t, v, "the first fetch", func() bool { return v.jwks.current().Len() == 1 })
	tok := signed(t, jwt.SigningMethodRS256, k.rsa1, jwt.MapClaims{"sub": "u1", "exp": in(time.Hour)}, withKID("a"))
	huge := append([]byte(`{"keys":[`), bytes.Repeat([]byte(" "), 1<<20)...)
	huge = append(huge, []byte(`]}`)...)
	tests := []struct {
		name   string
		status int
		ctype  string
		body   []byte
		err    string
	}{
		{"503", 503, "text/plain", []byte("down"), "HTTP 503"},
		{"HTML error page with 200", 200, "text/html", []byte("<!doctype html><h1>Oops</h1>"), "not a JWKS document"},
		{"garbage", 200, "application/json", []byte("{{{"), "not a JWKS document"},
		{"zero usable keys", 200, "application/json", []byte(`{"keys":[]}`), "no usable key"},
		{"1 MiB", 200, "application/json", huge, "over 512 KiB"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p.serve(tc.status, tc.ctype, tc.body)
			before := fetched(v, "error")
			// An unknown kid asks for a fetch now.
			v.Authenticate(signed(t, jwt.SigningMethodRS256, k.rsa1, jwt.MapClaims{"sub": "u1", "exp": in(time.Hour)}, withKID(fmt.Sprintf("x%d", i))))
			waitJWKS(t, v, "the failed fetch", func() bool { return fetched(v, "error") > before })
			if _, err := v.Authenticate(tok); err != nil {
				t.Fatalf("token of the last good key: %v", err)
			}
			ready, detail := v.Check()
			if !ready || !strings.HasPrefix(detail, "degraded: jwks") || !strings.Contains(detail, tc.err) {
				t.Errorf("Check = %v %q, want ready, degraded, with %q", ready, detail, tc.err)
			}
		})
	}
	if n := strings.Count(logs.String(), "jwks fetch failed"); n != 1 {
		t.Errorf("%d failure lines logged for a run of failures within a minute, want 1:\n%s", n, logs.String())
	}
	p.serve(200, "application/json", good)
	v.Authenticate(signed(t, jwt.SigningMethodRS256, k.rsa1, jwt.MapClaims{"sub": "u1", "exp": in(time.Hour)}, withKID("again")))
	waitJWKS(t, v, "recovery", func() bool { _, d := v.Check(); return strings.HasPrefix(d, "jwks: 1 keys") })
	if !strings.Contains(logs.String(), "jwks fetched again after failures") {
		t.Errorf("recovery not logged:\n%s", logs.String())
	}
}

// countingBody is a response body that counts what is read from it.
type countingBody struct {
	r    io.Reader
	read *atomic.Int64
}

func (c countingBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.read.Add(int64(n))
	return n, err
}
func (c countingBody) Close() error { return nil }

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestJWKSTooLargeIsNotHeld: a 1 MiB document is refused after reading at
// most MaxJWKSBytes+1 bytes of it, and none when its Content-Length says
// so up front.
func TestJWKSTooLargeIsNotHeld(t *testing.T) {
	for _, declared := range []bool{false, true} {
		t.Run(fmt.Sprintf("Content-Length declared %v", declared), func(t *testing.T) {
			var read atomic.Int64
			body := io.MultiReader(strings.NewReader(`{"keys":[`), strings.NewReader(strings.Repeat(" ", 1<<20)), strings.NewReader("]}"))
			client := &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
				cl := int64(-1)
				if declared {
					cl = 1<<20 + 11
				}
				return &http.Response{StatusCode: 200, Status: "200 OK", Header: http.Header{}, ContentLength: cl,
					Body: countingBody{body, &read}, Request: r}, nil
			})}
			v := mustNew(t, Config{Algorithms: []string{"RS256"}, JWKSURL: "https://idp.invalid/jwks", HTTPClient: client})
			_, _, err := v.jwks.fetch(context.Background())
			if !errors.Is(err, errJWKSTooLarge) {
				t.Fatalf("fetch = %v, want too large", err)
			}
			limit := int64(MaxJWKSBytes + 1)
			if declared {
				limit = 0
			}
			if n := read.Load(); n > limit {
				t.Errorf("read %d bytes of the 1 MiB document, want at most %d", n, limit)
			}
		})
	}
}

// TestJWKSDownAtStart: with the endpoint down, Run returns control at
// once, readiness is false (only RS256 allowed) and says why, fetches are
// retried with backoff, and the first good answer makes it ready.
func TestJWKSDownAtStart(t *testing.T) {
	k := testJWKSKeys()
	p := newProvider(t, nil)
	p.serve(503, "text/html", []byte("<h1>maintenance</h1>"))
	v := mustNew(t, Config{Algorithms: []string{"RS256"}, JWKSURL: p.srv.URL})
	reg := prometheus.NewRegistry()
	v.RegisterMetrics(reg)
	start := time.Now()
	runVerifier(t, v)
	waitJWKS(t, v, "the first failure", func() bool { return fetched(v, "error") >= 1 })
	ready, detail := v.Check()
	if ready || !strings.Contains(detail, "no keys yet") || !strings.Contains(detail, "every token is refused") {
		t.Errorf("Check with the endpoint down at start = %v %q, want not ready, saying so", ready, detail)
	}
	waitJWKS(t, v, "a retry after 1s", func() bool { return fetched(v, "error") >= 2 })
	if d := time.Since(start); d < jwksBackoffMin {
		t.Errorf("retried after %s, want a backoff of at least %s", d, jwksBackoffMin)
	}
	p.serve(200, "application/json", jwksDoc(jwk(t, &k.rsa1.PublicKey, "a", "RS256", "sig")))
	waitJWKS(t, v, "the provider back", func() bool { return v.jwks.current().Len() == 1 })
	if ready, detail := v.Check(); !ready || !strings.HasPrefix(detail, "jwks: 1 keys") {
		t.Errorf("Check once fetched = %v %q", ready, detail)
	}
	if n := series(t, reg, "sidecar_jwks_refresh_total", "sidecar_jwks_keys", "sidecar_jwks_last_success_timestamp_seconds"); n != 4 {
		t.Errorf("JWKS metrics: %d series, want 4", n)
	}
	if got := value(v.jwks.keys); got != 1 {
		t.Errorf("sidecar_jwks_keys = %v, want 1", got)
	}
	if ts := value(v.jwks.lastSuccess); time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Errorf("sidecar_jwks_last_success_timestamp_seconds = %v", ts)
	}
}

// TestJWKSScheduledRefresh: without max-age, the configured interval.
func TestJWKSScheduledRefresh(t *testing.T) {
	k := testJWKSKeys()
	p := newProvider(t, jwksDoc(jwk(t, &k.rsa1.PublicKey, "a", "RS256", "sig")))
	v := mustNew(t, Config{Algorithms: []string{"RS256"}, JWKSURL: p.srv.URL, JWKSRefresh: 50 * time.Millisecond})
	runVerifier(t, v)
	waitJWKS(t, v, "three scheduled fetches", func() bool { return p.requests.Load() >= 3 })
}

// TestJWKSWithHS256AndFiles: when the JWKS has never answered, tokens of
// the other keys still verify and readiness stays true, degraded.
func TestJWKSWithOtherKeys(t *testing.T) {
	p := newProvider(t, nil)
	p.serve(500, "text/plain", nil)
	v := mustNew(t, Config{Algorithms: []string{"RS256", "HS256"}, Secret: testSecret, JWKSURL: p.srv.URL})
	runVerifier(t, v)
	waitJWKS(t, v, "the first failure", func() bool { return fetched(v, "error") >= 1 })
	if ready, detail := v.Check(); !ready || !strings.HasPrefix(detail, "degraded: jwks: no keys yet") {
		t.Errorf("Check = %v %q, want ready and degraded", ready, detail)
	}
	if _, err := v.Authenticate(signed(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "u1", "exp": in(time.Hour)}, nil)); err != nil {
		t.Errorf("HS256 with the JWKS down: %v", err)
	}
}

func TestJWKSConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"ftp", Config{Algorithms: []string{"RS256"}, JWKSURL: "ftp://idp/jwks"}, "not an http:// or https:// URL"},
		{"no host", Config{Algorithms: []string{"RS256"}, JWKSURL: "https:///jwks"}, "not an http:// or https:// URL"},
		{"only HS256", Config{Secret: testSecret, JWKSURL: "https://idp/jwks"}, "no allowed algorithm"},
		{"negative refresh", Config{Algorithms: []string{"RS256"}, JWKSURL: "https://idp/jwks", JWKSRefresh: -time.Second}, "negative"},
		{"ok", Config{Algorithms: []string{"RS256", "ES256"}, JWKSURL: "https://idp/jwks"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New = %v, want %q", err, tc.want)
			}
		})
	}
}

// FuzzParseJWKS: whatever the document, parseJWKS does not panic, and
// every key it returns is a public key an allowed algorithm can use, never
// a symmetric one.
func FuzzParseJWKS(f *testing.F) {
	k := testJWKSKeys()
	f.Add(jwksDoc(jwk(f, &k.rsa1.PublicKey, "a", "RS256", "sig")))
	f.Add(jwksDoc(jwk(f, &k.ec.PublicKey, "b", "", ""), jwk(f, k.ed.Public(), "c", "EdDSA", "sig")))
	f.Add(jwksDoc(jwk(f, k.rsa1, "priv", "", "")))
	f.Add([]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0","alg":"HS256"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"","y":""}]}`))
	f.Add([]byte(`{"keys":null}`))
	f.Add([]byte(`<html>`))
	f.Add([]byte(``))
	allowed := []string{"RS256", "PS256", "ES256", "ES384", "EdDSA"}
	f.Fuzz(func(t *testing.T, doc []byte) {
		keys, _, err := parseJWKS(doc, allowed)
		if err == nil && len(keys) == 0 {
			t.Fatal("no error and no key")
		}
		if len(keys) > maxJWKSKeys {
			t.Fatalf("%d keys, more than %d", len(keys), maxJWKSKeys)
		}
		for _, key := range keys {
			switch pk := key.Key.(type) {
			case *rsa.PublicKey:
				if pk.N.BitLen() < minRSABits {
					t.Fatalf("RSA key of %d bits taken", pk.N.BitLen())
				}
			case *ecdsa.PublicKey, ed25519.PublicKey:
			default:
				t.Fatalf("key %T taken", key.Key)
			}
			if len(usableBy(key, allowed)) == 0 {
				t.Fatalf("key %q (alg %q) that no allowed algorithm can use taken", key.KID, key.Alg)
			}
		}
		set := newKeySet(keys, allowed)
		for _, alg := range allowed {
			set.forAlg(alg)
		}
	})
}
