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
// There is one key per family and no JWKS: a token's "kid" header is
// ignored, and every token is checked against the single configured key.
package auth

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
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
	Secret        []byte        // key for HS256/HS384/HS512
	Algorithms    []string      // allow-list; empty means ["HS256"]
	PublicKeyFile string        // PEM public key for RS*/PS*/ES*/EdDSA
	UserClaim     string        // "" means try sub, then id, then userId
	Issuer        string        // optional, checked when set
	Audience      string        // optional, checked when set; an aud array must contain it
	Leeway        time.Duration // exp/nbf/iat leeway; 0 means DefaultLeeway; more than MaxLeeway is an error
	MaxTokenBytes int           // 0 means DefaultMaxTokenBytes; longer tokens are rejected before parsing
}

// Verifier checks tokens against one Config. It holds no mutable state.
type Verifier struct {
	parser   *jwt.Parser
	keyfunc  jwt.Keyfunc // v.key, bound once so Authenticate does not allocate a method value
	allowed  []string    // exact algorithm names, deduplicated
	secret   []byte      // nil unless an HS* algorithm is allowed
	pubKey   any         // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey; nil if none is allowed
	pubFam   family      // family of pubKey
	claims   []string    // user claim names, tried in order
	maxBytes int
	leeway   time.Duration
}

// New validates cfg and builds a Verifier. It reads PublicKeyFile when an
// asymmetric algorithm is allowed. It fails, naming the problem, on an
// unknown algorithm, "none", HS* without a secret, an asymmetric algorithm
// without a key file or with a key of the wrong type or curve, a key file
// that no allowed algorithm uses, or a leeway outside [0, 30s].
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

	switch {
	case len(asymmetric) > 0 && cfg.PublicKeyFile == "":
		return nil, fmt.Errorf("auth: %s needs a public key file", asymmetric[0])
	case len(asymmetric) == 0 && cfg.PublicKeyFile != "":
		return nil, fmt.Errorf("auth: public key file %s is set but no allowed algorithm (%v) uses it; allow RS256, ES256, EdDSA or similar", cfg.PublicKeyFile, v.allowed)
	case len(asymmetric) > 0:
		key, err := readPublicKey(cfg.PublicKeyFile)
		if err != nil {
			return nil, err
		}
		for _, alg := range asymmetric {
			fam, curve, _ := algorithmFamily(alg)
			if err := keyFits(alg, fam, curve, key); err != nil {
				return nil, err
			}
			v.pubFam = fam
		}
		v.pubKey = key
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
	case *jwt.SigningMethodRSA, *jwt.SigningMethodRSAPSS:
		if v.pubFam == familyRSA {
			return v.pubKey, nil
		}
	case *jwt.SigningMethodECDSA:
		if v.pubFam == familyECDSA {
			return v.pubKey, nil
		}
	case *jwt.SigningMethodEd25519:
		if v.pubFam == familyEdDSA {
			return v.pubKey, nil
		}
	}
	return nil, errNoKey
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
