// Package auth verifies the JWTs that clients present at the WebSocket
// handshake and on /api.
//
// A Verifier is built once from Config and is safe for concurrent use. It
// parses with a strict golang-jwt parser: an exact algorithm allow-list,
// exp required, iat and nbf checked, iss and aud checked when configured.
// Its key function hands out a key typed for the token's algorithm family
// only ([]byte for HS*, *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey),
// so an HS256 token signed with an RSA public key is never accepted.
//
// HS* tokens are checked with the one secret; their "kid" is ignored. The
// public keys are a key set, swapped whole at run time: the public key
// files (each file's kid is its name without the extension), reloaded when
// they change or on SIGHUP, and an identity provider's JWKS document,
// refreshed on its Cache-Control max-age and early (at most once per
// window) when a token names a kid the set lacks. A token with a kid gets
// the key of that kid, if the key is of the token's algorithm family and
// its JWK names no other algorithm: the algorithm comes from the key,
// never from the header. A token without a kid is tried against every key
// of its family, in turn. A kid that no key has is refused.
package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// Errors returned by Authenticate, usable with errors.Is. Except for
// ErrNoToken and ErrTokenTooLong, the returned error wraps the jwt error
// for detail. No error text ever contains the token.
var (
	ErrNoToken      = errors.New("auth: no token")
	ErrTokenTooLong = errors.New("auth: token too long")
	ErrTokenExpired = errors.New("auth: token expired")
	ErrTokenInvalid = errors.New("auth: invalid token")
	ErrNoUser       = errors.New("auth: token names no user")
)

// Defaults and bounds for Config.
const (
	DefaultLeeway        = 5 * time.Second
	MaxLeeway            = 30 * time.Second
	DefaultMaxTokenBytes = 8192
)

// Identity is who a token says the caller is.
type Identity struct {
	// UserID is the configured claim as a string: a JSON number 42 becomes
	// "42". Ids are compared as strings everywhere.
	UserID string
	// Claims are the token's claims as encoding/json decodes them (numbers
	// are float64). Read-only: several goroutines may share it.
	Claims map[string]any
	// Expires is the exp claim.
	Expires time.Time
}

// Config configures a Verifier.
type Config struct {
	Secret     []byte   // key for HS256/HS384/HS512
	Algorithms []string // allow-list; empty means ["HS256"]
	// PublicKeyFile and PublicKeyFiles are PEM public keys (or
	// certificates) for RS*/PS*/ES*/EdDSA, all of them used; each file's
	// kid is its name without the extension.
	PublicKeyFile  string
	PublicKeyFiles []string
	// JWKSURL is an identity provider's JWKS document (http or https).
	// JWKSRefresh is the interval between fetches when a response has no
	// Cache-Control max-age (0: DefaultJWKSRefresh); JWKSMinRefresh the
	// window of at most one early fetch for unknown kids (0:
	// DefaultJWKSMinRefresh); JWKSTimeout bounds one fetch (0:
	// DefaultJWKSTimeout). Nothing is fetched until Run.
	JWKSURL        string
	JWKSRefresh    time.Duration
	JWKSMinRefresh time.Duration
	JWKSTimeout    time.Duration
	HTTPClient     *http.Client // for the JWKS; nil: one with JWKSTimeout
	Logger         *slog.Logger // of key reloads and JWKS fetches; nil: discarded

	UserClaim     string        // "" means try sub, then id, then userId
	Issuer        string        // optional, checked when set
	Audience      string        // optional, checked when set; an aud array must contain it
	Leeway        time.Duration // exp/nbf/iat leeway; 0 means DefaultLeeway; more than MaxLeeway is an error
	MaxTokenBytes int           // 0 means DefaultMaxTokenBytes; longer tokens are rejected before parsing
}

// Verifier checks tokens against one Config. Its only mutable state is
// the public key sets, each swapped whole by its source.
type Verifier struct {
	parser   *jwt.Parser
	keyfunc  jwt.Keyfunc // v.key, bound once so Authenticate does not allocate a method value
	allowed  []string    // exact algorithm names, deduplicated
	secret   []byte      // nil unless an HS* algorithm is allowed
	files    *keyFiles   // nil without public key files
	jwks     *jwksSource // nil without a JWKS URL
	claims   []string    // user claim names, tried in order
	maxBytes int
	leeway   time.Duration
}

// New validates cfg and builds a Verifier. It reads the public key files
// when an asymmetric algorithm is allowed; it fetches nothing (Run does).
// It fails, naming the problem, on an unknown algorithm, "none", HS*
// without a secret, an asymmetric algorithm with neither a key file nor a
// JWKS URL, a key file with a key of the wrong type or curve, a key file
// or JWKS URL that no allowed algorithm uses, or a leeway outside [0, 30s].
func New(cfg Config) (*Verifier, error) {
	algs := cfg.Algorithms
	if len(algs) == 0 {
		algs = []string{"HS256"}
	}
	leeway := cfg.Leeway
	switch {
	case leeway < 0:
		return nil, fmt.Errorf("auth: leeway %s is negative", leeway)
	case leeway > MaxLeeway:
		return nil, fmt.Errorf("auth: leeway %s is more than %s", leeway, MaxLeeway)
	case leeway == 0:
		leeway = DefaultLeeway
	}
	maxBytes := cfg.MaxTokenBytes
	switch {
	case maxBytes < 0:
		return nil, fmt.Errorf("auth: max token bytes %d is negative", maxBytes)
	case maxBytes == 0:
		maxBytes = DefaultMaxTokenBytes
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	v := &Verifier{maxBytes: maxBytes, leeway: leeway}
	var asymmetric []string
	for _, alg := range algs {
		if err := checkAlgorithm(alg); err != nil {
			return nil, err
		}
		if slices.Contains(v.allowed, alg) {
			continue
		}
		v.allowed = append(v.allowed, alg)
		fam, _, _ := algorithmFamily(alg)
		if fam == familyHMAC {
			if len(cfg.Secret) == 0 {
				return nil, fmt.Errorf("auth: %s needs a secret", alg)
			}
			v.secret = append([]byte(nil), cfg.Secret...)
		} else {
			asymmetric = append(asymmetric, alg)
		}
	}

	var files []string
	if cfg.PublicKeyFile != "" {
		files = append(files, cfg.PublicKeyFile)
	}
	for _, f := range cfg.PublicKeyFiles {
		if f != "" && !slices.Contains(files, f) {
			files = append(files, f)
		}
	}
	switch {
	case len(asymmetric) > 0 && len(files) == 0 && cfg.JWKSURL == "":
		return nil, fmt.Errorf("auth: %s needs a public key file or a JWKS URL", asymmetric[0])
	case len(asymmetric) == 0 && len(files) > 0:
		return nil, fmt.Errorf("auth: public key file %s is set but no allowed algorithm (%v) uses it; allow RS256, ES256, EdDSA or similar", files[0], v.allowed)
	case len(asymmetric) == 0 && cfg.JWKSURL != "":
		return nil, fmt.Errorf("auth: JWKS URL is set but no allowed algorithm (%v) uses it; allow RS256, ES256, EdDSA or similar", v.allowed)
	}
	if len(files) > 0 {
		f, err := newKeyFiles(files, asymmetric, log.With("source", "public_key_file"))
		if err != nil {
			return nil, err
		}
		if cfg.JWKSURL == "" {
			// The files are the only keys: each allowed algorithm needs one.
			for _, alg := range asymmetric {
				if f.current().forAlg(alg) != nil {
					continue
				}
				if len(files) == 1 {
					fam, curve, _ := algorithmFamily(alg)
					return nil, keyFits(alg, fam, curve, f.keys[0].Key)
				}
				return nil, fmt.Errorf("auth: %s is allowed but none of the public key files holds a key for it", alg)
			}
		}
		v.files = f
	}
	if cfg.JWKSURL != "" {
		j, err := newJWKSSource(cfg, asymmetric, log.With("source", "jwks"))
		if err != nil {
			return nil, err
		}
		v.jwks = j
	}

	if cfg.UserClaim != "" {
		v.claims = []string{cfg.UserClaim}
	} else {
		v.claims = []string{"sub", "id", "userId"}
	}

	opts := []jwt.ParserOption{
		jwt.WithValidMethods(v.allowed),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(leeway),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	v.keyfunc = v.key
	return v, nil
}

// Authenticate verifies token and returns the identity it carries. It
// rejects an empty token with ErrNoToken and one longer than the configured
// limit with ErrTokenTooLong before parsing anything, without allocating.
// An expired token (beyond the leeway) gives ErrTokenExpired, a token without
// a usable user claim ErrNoUser, and anything else ErrTokenInvalid.
func (v *Verifier) Authenticate(token string) (Identity, error) {
	if token == "" {
		return Identity{}, ErrNoToken
	}
	if len(token) > v.maxBytes {
		return Identity{}, ErrTokenTooLong
	}
	claims := jwt.MapClaims{}
	if _, err := v.parser.ParseWithClaims(token, claims, v.keyfunc); err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			return Identity{}, fmt.Errorf("%w: %w", ErrTokenExpired, err)
		}
		return Identity{}, fmt.Errorf("%w: %w", ErrTokenInvalid, err)
	}
	// The parser required exp and checked its type, so this cannot fail.
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil {
		return Identity{}, fmt.Errorf("%w: exp unreadable after validation", ErrTokenInvalid)
	}
	id, err := v.userID(claims)
	if err != nil {
		return Identity{}, err
	}
	return Identity{UserID: id, Claims: claims, Expires: exp.Time}, nil
}

// Leeway is how long after its exp a token is still accepted: a
// connection authenticated with it is closed (4001) only once exp plus the
// leeway has passed, so a token is never accepted and then refused.
func (v *Verifier) Leeway() time.Duration { return v.leeway }

// Sender is the identity as rules and the app see it: a copy of the
// token's claims (shared and read-only) with "id" set to the user id. No
// identity (a webhook) is an empty map, so sender.x reads nil everywhere.
func (id *Identity) Sender() map[string]any {
	if id == nil {
		return map[string]any{}
	}
	m := make(map[string]any, len(id.Claims)+1)
	for k, v := range id.Claims {
		m[k] = v
	}
	m["id"] = id.UserID
	return m
}

// key is the jwt.Keyfunc. The parser has already checked the algorithm
// against the allow-list; key checks it again and returns the key typed for
// the method's family, so a key can never verify a method of another family.
func (v *Verifier) key(t *jwt.Token) (any, error) {
	if !slices.Contains(v.allowed, t.Method.Alg()) {
		return nil, errNoKey
	}
	switch t.Method.(type) {
	case *jwt.SigningMethodHMAC:
		if v.secret != nil {
			return v.secret, nil
		}
	case *jwt.SigningMethodRSA, *jwt.SigningMethodRSAPSS, *jwt.SigningMethodECDSA, *jwt.SigningMethodEd25519:
		return v.publicKey(t)
	}
	return nil, errNoKey
}

// Errors of the key function for public keys; the parser wraps them in
// jwt.ErrTokenUnverifiable. They never quote the kid.
var (
	errBadKID     = errors.New(`the "kid" header is not a string`)
	errUnknownKID = errors.New("no key has the token's kid")
	errKIDAlg     = errors.New("the key named by the token's kid is not for its algorithm")
)

// publicKey is the key function for RS*, PS*, ES* and EdDSA: the key of
// the token's kid, or without a kid every key that can verify its
// algorithm, tried in turn. An unknown kid asks the JWKS for an early
// refresh (rate-limited, shared by concurrent tokens) and looks again;
// with key files alone, it tries them all in turn.
func (v *Verifier) publicKey(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	var kid string
	switch k := t.Header["kid"].(type) {
	case nil:
	case string:
		kid = k
	default:
		return nil, errBadKID
	}
	if kid == "" {
		if key := mergeKeys(v.files.current().forAlg(alg), v.jwks.current().forAlg(alg)); key != nil {
			return key, nil
		}
		return nil, errNoKey
	}
	key, found := v.keyForKID(kid, alg)
	if !found && v.jwks != nil {
		v.jwks.refreshForUnknownKID()
		key, found = v.keyForKID(kid, alg)
	}
	if !found && v.jwks == nil {
		// Key files alone: a kid that names none of them (the app's own
		// key ids, not our file names) tries each in turn, as before there
		// were several. A JWKS is the provider's word on its kids: there,
		// an unknown one is refused.
		if key := v.files.current().forAlg(alg); key != nil {
			return key, nil
		}
	}
	switch {
	case !found:
		return nil, errUnknownKID
	case key == nil:
		return nil, errKIDAlg
	}
	return key, nil
}

// keyForKID looks kid up in the key files, then in the JWKS. found
// reports whether either has the kid; key is nil if the kid's keys are
// not for alg.
func (v *Verifier) keyForKID(kid, alg string) (key any, found bool) {
	if key, found = v.files.current().forKID(kid, alg); key != nil {
		return key, true
	}
	k, inJWKS := v.jwks.current().forKID(kid, alg)
	return k, found || inJWKS
}

// Run follows the key sources until ctx is done: it fetches the JWKS now
// and keeps it fresh, and reloads the public key files when they change
// and on each value from hup (SIGHUP). It returns at once, nil, when there
// is neither. It never waits for the JWKS endpoint: with it down, tokens of
// its keys are refused (Check says so) until a fetch succeeds.
func (v *Verifier) Run(ctx context.Context, hup <-chan os.Signal) error {
	var wg sync.WaitGroup
	var err error
	if v.jwks != nil {
		wg.Go(func() { v.jwks.run(ctx) })
	}
	if v.files != nil {
		err = v.files.run(ctx, hup)
	}
	wg.Wait()
	return err
}

// ReloadKeyFiles reads the public key files again, as SIGHUP does. A file
// that fails keeps its previous key; the errors name the files. Without
// key files it does nothing.
func (v *Verifier) ReloadKeyFiles() error {
	if v.files == nil {
		return nil
	}
	return v.files.Reload()
}

// HasKeySources reports whether the Verifier has public keys that change
// at run time (key files or a JWKS URL), and so a readiness Check to show.
func (v *Verifier) HasKeySources() bool { return v.files != nil || v.jwks != nil }

// Check is the /readyz check of the key sources, an engine.Check. Ready
// unless the JWKS never gave a good key set and nothing else (an HS*
// secret, a key file) can verify a token. When the JWKS fails and its
// last good keys (or the other keys) serve, the detail starts with
// "degraded: jwks".
func (v *Verifier) Check() (bool, string) {
	ready := true
	var parts []string
	if v.jwks != nil {
		have, detail := v.jwks.status()
		if !have {
			if v.secret != nil || v.files.current().Len() > 0 {
				detail = "degraded: " + detail + "; tokens signed with its keys are refused"
			} else {
				ready = false
				detail += "; no other key is configured (only asymmetric algorithms are allowed), so every token is refused"
			}
		}
		parts = append(parts, detail)
	}
	if v.files != nil {
		parts = append(parts, v.files.status())
	}
	return ready, strings.Join(parts, "; ")
}

// RegisterMetrics registers the JWKS metrics with reg (the Verifier owns
// the fetcher): sidecar_jwks_refresh_total{result}, sidecar_jwks_keys and
// sidecar_jwks_last_success_timestamp_seconds. Without a JWKS URL it
// registers nothing.
func (v *Verifier) RegisterMetrics(reg prometheus.Registerer) {
	if v.jwks == nil || reg == nil {
		return
	}
	reg.MustRegister(v.jwks.refreshes, v.jwks.keys, v.jwks.lastSuccess)
}

// userID returns the first configured user claim present in claims, as a
// string. An empty string counts as absent.
func (v *Verifier) userID(claims map[string]any) (string, error) {
	for _, name := range v.claims {
		switch val := claims[name].(type) {
		case nil:
			continue
		case string:
			if val == "" {
				continue
			}
			return val, nil
		case float64:
			// Only integers that float64 holds exactly: a larger id would
			// silently become another user's.
			if val != math.Trunc(val) || math.Abs(val) > 1<<53-1 {
				return "", fmt.Errorf("%w: claim %q is a number that is not an exact integer; send large ids as strings", ErrNoUser, name)
			}
			return strconv.FormatInt(int64(val), 10), nil
		default:
			return "", fmt.Errorf("%w: claim %q is a %s, want a string or an integer", ErrNoUser, name, jsonKind(val))
		}
	}
	if len(v.claims) == 1 {
		return "", fmt.Errorf("%w: no claim %q", ErrNoUser, v.claims[0])
	}
	return "", fmt.Errorf("%w: none of the claims %q", ErrNoUser, v.claims)
}

func jsonKind(v any) string {
	switch v.(type) {
	case bool:
		return "boolean"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	}
	return fmt.Sprintf("%T", v)
}

// Sign returns an HS256 token for claims, signed with secret. It adds no
// claim: callers set exp (Authenticate requires it) and the user claim. It
// serves `sidecar token` and tests.
func Sign(secret []byte, claims map[string]any) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("auth: sign: empty secret")
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(claims)).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("auth: sign: %w", err)
	}
	return s, nil
}
