package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults and bounds of the JWKS source.
const (
	DefaultJWKSRefresh    = time.Hour       // between fetches when the response has no Cache-Control max-age
	DefaultJWKSMinRefresh = time.Minute     // at most one early fetch (for an unknown kid) per this window
	DefaultJWKSTimeout    = 5 * time.Second // of one fetch
	MaxJWKSBytes          = 512 << 10       // a larger document is refused
	MinJWKSMaxAge         = time.Minute     // Cache-Control max-age is clamped to [MinJWKSMaxAge, MaxJWKSMaxAge]
	MaxJWKSMaxAge         = 24 * time.Hour

	// maxJWKSKeys bounds the usable keys taken from one document: a token
	// without a kid is tried against each key of its family.
	maxJWKSKeys = 100
	// unknownKIDWait is how long a token naming an unknown kid waits for
	// the early fetch it triggered (or joined).
	unknownKIDWait = 2 * time.Second
	// jwksBackoffMin and jwksBackoffMax bound the retry delay after a
	// failed fetch: 1 s, doubled each failure, at most 30 s.
	jwksBackoffMin = time.Second
	jwksBackoffMax = 30 * time.Second
	// jwksLogEvery is how often a run of failures is logged at most (the
	// first failure of a run is always logged).
	jwksLogEvery = time.Minute
	// maxSkipNotes bounds the "key skipped" lines remembered, each logged once.
	maxSkipNotes = 256
)

// errJWKSTooLarge is the error of a document over MaxJWKSBytes.
var errJWKSTooLarge = fmt.Errorf("document over %d KiB refused", MaxJWKSBytes>>10)

// jwksSource is the keys of an identity provider's JWKS document, fetched
// over HTTP(S) and swapped in whole (an atomic.Pointer to an immutable
// KeySet). A fetch that fails keeps the last good set. Fetches are one at a
// time: a scheduled refresh and the early refreshes that tokens with an
// unknown kid ask for share the one in flight.
type jwksSource struct {
	url        string // as configured
	shown      string // the URL without userinfo, for logs and /readyz
	client     *http.Client
	allowed    []string // the allowed asymmetric algorithms
	refresh    time.Duration
	minRefresh time.Duration
	timeout    time.Duration
	log        *slog.Logger
	set        atomic.Pointer[KeySet]
	wake       chan struct{} // tells run that due changed

	refreshes   *prometheus.CounterVec
	keys        prometheus.Gauge
	lastSuccess prometheus.Gauge

	mu           sync.Mutex // guards the fields below
	base         context.Context
	inflight     chan struct{} // closed when the fetch in flight ends; nil if none
	lastEarly    time.Time     // start of the last early fetch
	due          time.Time     // of the next scheduled fetch; zero: now
	failures     int           // consecutive failed fetches
	failingSince time.Time
	lastErr      error
	lastOK       time.Time
	lastLogged   time.Time // of the last failure logged
	suppressed   int       // failures not logged since
	skipNotes    map[string]bool
}

func newJWKSSource(cfg Config, allowed []string, log *slog.Logger) (*jwksSource, error) {
	u, err := url.Parse(cfg.JWKSURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("auth: JWKS URL %q is not an http:// or https:// URL", cfg.JWKSURL)
	}
	j := &jwksSource{
		url:        cfg.JWKSURL,
		shown:      u.Redacted(),
		allowed:    allowed,
		refresh:    orDefault(cfg.JWKSRefresh, DefaultJWKSRefresh),
		minRefresh: orDefault(cfg.JWKSMinRefresh, DefaultJWKSMinRefresh),
		timeout:    orDefault(cfg.JWKSTimeout, DefaultJWKSTimeout),
		log:        log,
		wake:       make(chan struct{}, 1),
		base:       context.Background(),
		skipNotes:  map[string]bool{},
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidecar_jwks_refresh_total",
			Help: "JWKS fetches, by result (ok, error); after an error the last good keys keep serving.",
		}, []string{"result"}),
		keys: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sidecar_jwks_keys",
			Help: "Keys in the JWKS key set in use.",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sidecar_jwks_last_success_timestamp_seconds",
			Help: "When the JWKS key set in use was fetched.",
		}),
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"refresh", j.refresh}, {"min refresh", j.minRefresh}, {"timeout", j.timeout}} {
		if d.v < 0 {
			return nil, fmt.Errorf("auth: JWKS %s %s is negative", d.name, d.v)
		}
	}
	j.refreshes.WithLabelValues("ok")
	j.refreshes.WithLabelValues("error")
	j.client = cfg.HTTPClient
	if j.client == nil {
		j.client = &http.Client{Timeout: j.timeout}
	}
	return j, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// current is the set in use; nil for a nil j or before the first good fetch.
func (j *jwksSource) current() *KeySet {
	if j == nil {
		return nil
	}
	return j.set.Load()
}

// run fetches now, then again when the last response's max-age (or the
// refresh interval) has passed, and after a failure with backoff, until ctx
// is done. It never blocks the caller's start-up: run it on its own
// goroutine.
func (j *jwksSource) run(ctx context.Context) {
	j.mu.Lock()
	j.base = ctx
	j.mu.Unlock()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	defer func() {
		// A fetch in flight ends at once, its context being done: wait
		// for it, so that nothing of the source outlives run.
		j.mu.Lock()
		ch := j.inflight
		j.mu.Unlock()
		if ch != nil {
			<-ch
		}
	}()
	for {
		j.mu.Lock()
		wait := time.Until(j.due)
		j.mu.Unlock()
		if wait <= 0 {
			select {
			case <-j.start():
			case <-ctx.Done():
				return
			}
			continue
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-j.wake:
			timer.Stop()
		}
	}
}

// start starts a fetch, or joins the one in flight, and returns a channel
// closed when it has ended and its result is in place.
func (j *jwksSource) start() <-chan struct{} {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.inflight != nil {
		return j.inflight
	}
	done := make(chan struct{})
	j.inflight = done
	ctx := j.base
	go func() {
		ctx, cancel := context.WithTimeout(ctx, j.timeout)
		set, maxAge, err := j.fetch(ctx)
		cancel()
		j.record(set, maxAge, err)
		j.mu.Lock()
		j.inflight = nil
		j.mu.Unlock()
		close(done)
	}()
	return done
}

// refreshForUnknownKID is called for a token whose kid no key has. It joins
// the fetch in flight, or starts one unless an early fetch started within
// the last minRefresh (so a flood of made-up kids costs the provider at
// most one request per window), and waits for it at most unknownKIDWait.
func (j *jwksSource) refreshForUnknownKID() {
	j.mu.Lock()
	var ch <-chan struct{}
	if j.inflight != nil {
		ch = j.inflight
	} else {
		if !j.lastEarly.IsZero() && time.Since(j.lastEarly) < j.minRefresh {
			j.mu.Unlock()
			return
		}
		j.lastEarly = time.Now()
	}
	j.mu.Unlock()
	if ch == nil {
		ch = j.start()
	}
	t := time.NewTimer(unknownKIDWait)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	}
}

// fetch gets and parses the document. maxAge is the response's
// Cache-Control max-age, or -1 without one.
func (j *jwksSource) fetch(ctx context.Context) (*KeySet, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	req.Header.Set("User-Agent", "sidecar")
	resp, err := j.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	ct := resp.Header.Get("Content-Type")
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("HTTP %s%s", resp.Status, contentType(ct))
	}
	if resp.ContentLength > MaxJWKSBytes {
		return nil, 0, fmt.Errorf("%w (Content-Length %d)", errJWKSTooLarge, resp.ContentLength)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxJWKSBytes+1))
	if err != nil {
		return nil, 0, fmt.Errorf("read: %w", err)
	}
	if len(data) > MaxJWKSBytes {
		return nil, 0, errJWKSTooLarge
	}
	keys, skipped, err := parseJWKS(data, j.allowed)
	for _, s := range skipped {
		j.noteSkipped(s)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("%w%s", err, contentType(ct))
	}
	return newKeySet(keys, j.allowed), maxAge(resp.Header), nil
}

func contentType(ct string) string {
	if ct == "" {
		return ""
	}
	return " (Content-Type " + ct + ")"
}

// maxAge is the Cache-Control max-age of h, or -1 when there is none.
func maxAge(h http.Header) time.Duration {
	for _, cc := range h.Values("Cache-Control") {
		for _, d := range strings.Split(cc, ",") {
			name, val, ok := strings.Cut(strings.TrimSpace(d), "=")
			if !ok || !strings.EqualFold(name, "max-age") {
				continue
			}
			n, err := strconv.ParseInt(strings.Trim(val, `"`), 10, 64)
			if err != nil || n < 0 {
				return -1
			}
			if n > int64(MaxJWKSMaxAge/time.Second) {
				n = int64(MaxJWKSMaxAge / time.Second)
			}
			return time.Duration(n) * time.Second
		}
	}
	return -1
}

// nextRefresh is the delay before the scheduled fetch after a good one.
func (j *jwksSource) nextRefresh(age time.Duration) time.Duration {
	if age < 0 {
		return j.refresh
	}
	return min(max(age, MinJWKSMaxAge), MaxJWKSMaxAge)
}

// record puts a fetch's result in place: a good set replaces the one in
// use; an error keeps it, and is logged without flooding.
func (j *jwksSource) record(set *KeySet, age time.Duration, err error) {
	now := time.Now()
	j.mu.Lock()
	defer j.mu.Unlock()
	defer func() {
		select {
		case j.wake <- struct{}{}:
		default:
		}
	}()
	if err == nil {
		prev := j.set.Load()
		j.set.Store(set)
		failed, since := j.failures, j.failingSince
		j.failures, j.lastErr, j.lastOK, j.suppressed = 0, nil, now, 0
		next := j.nextRefresh(age)
		j.due = now.Add(next)
		j.refreshes.WithLabelValues("ok").Inc()
		j.keys.Set(float64(set.Len()))
		j.lastSuccess.Set(float64(now.UnixNano()) / 1e9)
		attrs := []any{"url", j.shown, "keys", set.Len(), "kids", describeKIDs(set.KIDs()), "next_refresh", next}
		switch {
		case failed > 0:
			j.log.Info("jwks fetched again after failures", append(attrs, "failures", failed, "failing_for", now.Sub(since).Round(time.Second))...)
		case !slices.Equal(prev.KIDs(), set.KIDs()) || prev.Len() != set.Len():
			j.log.Info("jwks keys loaded", attrs...)
		default:
			j.log.Debug("jwks refreshed, keys unchanged", attrs...)
		}
		return
	}
	j.failures++
	if j.failures == 1 {
		j.failingSince = now
	}
	j.lastErr = err
	backoff := min(jwksBackoffMin<<min(j.failures-1, 10), jwksBackoffMax)
	j.due = now.Add(backoff)
	j.refreshes.WithLabelValues("error").Inc()
	if j.failures > 1 && now.Sub(j.lastLogged) < jwksLogEvery {
		j.suppressed++
		return
	}
	serving := "no keys yet: tokens of its algorithms are refused"
	level := slog.LevelError
	if s := j.set.Load(); s != nil {
		serving = fmt.Sprintf("last good keys kept (%d, fetched %s)", s.Len(), j.lastOK.UTC().Format(time.RFC3339))
		level = slog.LevelWarn
	}
	j.log.Log(context.Background(), level, "jwks fetch failed", "url", j.shown, "err", err, "failures", j.failures,
		"not_logged", j.suppressed, "retry_in", backoff, "serving", serving)
	j.lastLogged, j.suppressed = now, 0
}

// noteSkipped logs a skipped key once.
func (j *jwksSource) noteSkipped(note string) {
	j.mu.Lock()
	seen := j.skipNotes[note]
	if !seen && len(j.skipNotes) < maxSkipNotes {
		j.skipNotes[note] = true
	}
	j.mu.Unlock()
	if !seen {
		j.log.Warn("jwks key skipped", "url", j.shown, "key", note)
	}
}

// status is the JWKS part of the readiness detail. haveKeys reports
// whether a good set was ever fetched; the detail starts with "degraded:"
// when the last fetch failed and the last good keys serve.
func (j *jwksSource) status() (haveKeys bool, detail string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	s := j.set.Load()
	switch {
	case s == nil && j.lastErr == nil:
		return false, fmt.Sprintf("jwks: no keys yet, first fetch from %s in progress", j.shown)
	case s == nil:
		return false, fmt.Sprintf("jwks: no keys yet from %s: %d fetches failed since %s, retrying: %v",
			j.shown, j.failures, j.failingSince.UTC().Format(time.RFC3339), j.lastErr)
	case j.lastErr != nil:
		return true, fmt.Sprintf("degraded: jwks fetch from %s failing since %s (%d failures): %v; last good keys kept (%d keys: %s, fetched %s)",
			j.shown, j.failingSince.UTC().Format(time.RFC3339), j.failures, j.lastErr, s.Len(), describeKIDs(s.KIDs()), j.lastOK.UTC().Format(time.RFC3339))
	}
	return true, fmt.Sprintf("jwks: %d keys (%s) from %s, fetched %s", s.Len(), describeKIDs(s.KIDs()), j.shown, j.lastOK.UTC().Format(time.RFC3339))
}

// parseJWKS reads a JWKS document (RFC 7517) and returns the keys that
// the allowed algorithms can use. Each key is parsed by go-jose on its
// own, so that one key sidecar cannot use (another kty, an encryption key,
// a symmetric "oct" key, an RSA key under 2048 bits, an alg not allowed)
// is skipped, with a note saying why, and does not spoil the others, as
// RFC 7517 section 5 asks. A private key's private part is dropped. It is
// an error when the document is not a JWKS or holds no usable key.
func parseJWKS(data []byte, allowed []string) (keys []Key, skipped []string, err error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, nil, fmt.Errorf("not a JWKS document: %w", err)
	}
	if doc.Keys == nil {
		return nil, nil, errors.New(`not a JWKS document: no "keys" array`)
	}
	for i, raw := range doc.Keys {
		k, why := parseJWK(raw, allowed)
		if why != "" {
			skipped = append(skipped, fmt.Sprintf("key %d%s: %s", i, kidNote(raw), why))
			continue
		}
		if len(keys) == maxJWKSKeys {
			skipped = append(skipped, fmt.Sprintf("keys %d and after: more than %d usable keys", i, maxJWKSKeys))
			break
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		msg := fmt.Sprintf("no usable key among the %d in the document", len(doc.Keys))
		if len(skipped) > 0 {
			msg += " (" + skipped[0] + ")"
		}
		return nil, skipped, errors.New(msg)
	}
	return keys, skipped, nil
}

// kidNote is ` (kid "x")` for a key that has a string kid, for skip notes.
func kidNote(raw json.RawMessage) string {
	var h struct {
		Kid any `json:"kid"`
	}
	if json.Unmarshal(raw, &h) != nil {
		return ""
	}
	kid, ok := h.Kid.(string)
	if !ok || kid == "" {
		return ""
	}
	if len(kid) > 64 {
		kid = kid[:64] + "..."
	}
	return fmt.Sprintf(" (kid %q)", kid)
}

// parseJWK parses one key of a JWKS, or says why it is skipped.
func parseJWK(raw json.RawMessage, allowed []string) (Key, string) {
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(raw); err != nil {
		if errors.Is(err, jose.ErrUnsupportedKeyType) {
			return Key{}, "unsupported key type"
		}
		return Key{}, err.Error()
	}
	if jwk.Use != "" && jwk.Use != "sig" {
		return Key{}, fmt.Sprintf("use %q, not sig", jwk.Use)
	}
	pub := jwk.Public() // drops a private part; an invalid key for a symmetric one
	k := Key{KID: jwk.KeyID, Alg: jwk.Algorithm, Key: pub.Key}
	switch key := pub.Key.(type) {
	case *rsa.PublicKey:
		if key.N.BitLen() < minRSABits {
			return Key{}, fmt.Sprintf("RSA key of %d bits; need at least %d", key.N.BitLen(), minRSABits)
		}
	case *ecdsa.PublicKey:
		if c := key.Curve; c != elliptic.P256() && c != elliptic.P384() && c != elliptic.P521() {
			return Key{}, "unsupported curve"
		}
	case ed25519.PublicKey:
	default:
		if _, sym := jwk.Key.([]byte); sym {
			return Key{}, `symmetric ("oct") keys are never used: the algorithm comes from the key, and HMAC secrets come only from auth.jwt_secret`
		}
		return Key{}, fmt.Sprintf("unsupported key type %T", jwk.Key)
	}
	if k.Alg != "" {
		fam, _, known := algorithmFamily(k.Alg)
		switch {
		case !known || fam == familyHMAC:
			return Key{}, fmt.Sprintf("alg %q is not a signature algorithm sidecar verifies with a public key", k.Alg)
		case !keyUsable(k, k.Alg):
			return Key{}, fmt.Sprintf("alg %q does not fit its %s key", k.Alg, keyKind(k.Key))
		case !slices.Contains(allowed, k.Alg):
			return Key{}, fmt.Sprintf("alg %s is not in auth.algorithms %v", k.Alg, allowed)
		}
		return k, ""
	}
	if len(usableBy(k, allowed)) == 0 {
		return Key{}, fmt.Sprintf("no algorithm of auth.algorithms %v uses a %s key", allowed, keyKind(k.Key))
	}
	return k, ""
}
