package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var testSecret = []byte("test-secret-0123456789-abcdefghij")

// rsaTestKey is generated once per test binary: RSA generation is slow
// under the race detector.
var rsaTestKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// signed signs claims with method and key, failing the test on error.
func signed(tb testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims, header map[string]any) string {
	tb.Helper()
	tok := jwt.NewWithClaims(method, claims)
	for k, v := range header {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		tb.Fatalf("sign %s: %v", method.Alg(), err)
	}
	return s
}

// writePEM writes a PEM block of the given type to a file in dir.
func writePEM(tb testing.TB, dir, name, typ string, der []byte) string {
	tb.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// writePublicKey writes pub as a PKIX "PUBLIC KEY" PEM file and returns its
// path and contents.
func writePublicKey(tb testing.TB, pub any) (string, []byte) {
	tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		tb.Fatal(err)
	}
	path := writePEM(tb, tb.TempDir(), "key.pem", "PUBLIC KEY", der)
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return path, data
}

func mustNew(tb testing.TB, cfg Config) *Verifier {
	tb.Helper()
	v, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return v
}

func in(d time.Duration) int64 { return time.Now().Add(d).Unix() }

// checkErr compares err with the sentinel want (nil: success) and, when
// detail is set, also with the wrapped jwt error. It also checks that the
// error text does not contain the token.
func checkErr(t *testing.T, token string, err, want, detail error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("Authenticate: %v, want success", err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Fatalf("Authenticate: %v, want errors.Is %v", err, want)
	}
	if detail != nil && !errors.Is(err, detail) {
		t.Errorf("Authenticate: %v, want it to wrap %v", err, detail)
	}
	if len(token) >= 8 && strings.Contains(err.Error(), token) {
		t.Errorf("error text contains the token: %v", err)
	}
	for i, part := range strings.Split(token, ".") {
		if len(part) >= 8 && strings.Contains(err.Error(), part) {
			t.Errorf("error text contains segment %d of the token: %v", i, err)
		}
	}
}

// TestAuthenticateHS256 is the table of docs/RELIABILITY.md section 1.
func TestAuthenticateHS256(t *testing.T) {
	plain := mustNew(t, Config{Secret: testSecret})
	scoped := mustNew(t, Config{Secret: testSecret, Issuer: "sidecar-app", Audience: "notify"})
	roomy := mustNew(t, Config{Secret: testSecret, MaxTokenBytes: 2 << 20})
	hs256 := func(c jwt.MapClaims) string { return signed(t, jwt.SigningMethodHS256, testSecret, c, nil) }

	valid := hs256(jwt.MapClaims{"sub": "u1", "exp": in(time.Hour)})
	parts := strings.Split(valid, ".")
	tampered := parts[0] + "." + seg([]byte(`{"sub":"admin","exp":4102444800}`)) + "." + parts[2]

	tests := []struct {
		name   string
		v      *Verifier
		token  string
		want   error // sentinel of this package; nil: accepted
		detail error // jwt error it must wrap
	}{
		{"valid", plain, valid, nil, nil},
		{"alg none", plain, signed(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "u1", "exp": in(time.Hour)}, nil), ErrTokenInvalid, jwt.ErrTokenSignatureInvalid},
		{"HS384 not allowed", plain, signed(t, jwt.SigningMethodHS384, testSecret, jwt.MapClaims{"sub": "u1", "exp": in(time.Hour)}, nil), ErrTokenInvalid, jwt.ErrTokenSignatureInvalid},
		{"unknown alg header", plain, seg([]byte(`{"alg":"XS999","typ":"JWT"}`)) + "." + parts[1] + "." + parts[2], ErrTokenInvalid, jwt.ErrTokenUnverifiable},
		{"exp -60s beyond leeway", plain, hs256(jwt.MapClaims{"sub": "u1", "exp": in(-60 * time.Second)}), ErrTokenExpired, jwt.ErrTokenExpired},
		{"exp -2s within leeway", plain, hs256(jwt.MapClaims{"sub": "u1", "exp": in(-2 * time.Second)}), nil, nil},
		{"no exp", plain, hs256(jwt.MapClaims{"sub": "u1"}), ErrTokenInvalid, jwt.ErrTokenRequiredClaimMissing},
		{"exp as string", plain, hs256(jwt.MapClaims{"sub": "u1", "exp": "4102444800"}), ErrTokenInvalid, jwt.ErrInvalidType},
		{"nbf +60s", plain, hs256(jwt.MapClaims{"sub": "u1", "exp": in(time.Hour), "nbf": in(time.Minute)}), ErrTokenInvalid, jwt.ErrTokenNotValidYet},
		{"nbf +2s within leeway", plain, hs256(jwt.MapClaims{"sub": "u1", "exp": in(time.Hour), "nbf": in(2 * time.Second)}), nil, nil},
		{"iat +60s", plain, hs256(jwt.MapClaims{"sub": "u1", "exp": in(time.Hour), "iat": in(time.Minute)}), ErrTokenInvalid, jwt.ErrTokenUsedBeforeIssued},
		{"iss and aud match", scoped, hs256(jwt.MapClaims{"sub": "u1", "exp": in(time.Hour), "iss": "sidecar-app", "aud": "notify"}), nil, nil},
		{"wrong iss", scoped, hs256(jwt.MapClaims{"sub": "u1", "exp": in(time.Hour), "iss": "evil", "aud": "notify"}), ErrTokenInvalid, jwt.ErrTokenInvalidIssuer},
		{"missing iss", scoped, hs256(jwt.MapClaims{"sub": "u1", "exp": in(time.Hour), "aud": "notify"}), ErrTokenInvalid, jwt.ErrTokenRequiredClaimMissing},
		{"wrong aud", scoped, hs256(jwt.MapClaims{"sub": "u1", "exp": in(time.Hour), "iss": "sidecar-app", "aud": "other"}), ErrTokenInvalid, jwt.ErrTokenInvalidAudience},
		{"aud array containing ours", scoped, hs256(jwt.MapClaims{"sub": "u1", "exp": in(time.Hour), "iss": "sidecar-app", "aud": []string{"x", "notify"}}), nil, nil},
		{"aud array without ours", scoped, hs256(jwt.MapClaims{"sub": "u1", "exp": in(time.Hour), "iss": "sidecar-app", "aud": []string{"x", "y"}}), ErrTokenInvalid, jwt.ErrTokenInvalidAudience},
		{"wrong key", plain, signed(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-xx"), jwt.MapClaims{"sub": "u1", "exp": in(time.Hour)}, nil), ErrTokenInvalid, jwt.ErrTokenSignatureInvalid},
		{"tampered payload", plain, tampered, ErrTokenInvalid, jwt.ErrTokenSignatureInvalid},
		{"kid is ignored", plain, signed(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "u1", "exp": in(time.Hour)}, map[string]any{"kid": "../../etc/passwd"}), nil, nil},
		{"100000 dots", plain, strings.Repeat(".", 100000), ErrTokenTooLong, nil},
		{"100000 dots under a 2 MiB cap", roomy, strings.Repeat(".", 100000), ErrTokenInvalid, jwt.ErrTokenMalformed},
		{"1 MiB token", plain, strings.Repeat("a", 1<<20), ErrTokenTooLong, nil},
		{"abc", plain, "abc", ErrTokenInvalid, jwt.ErrTokenMalformed},
		{"bad base64", plain, "a!b.c!d.e!f", ErrTokenInvalid, jwt.ErrTokenMalformed},
		{"empty", plain, "", ErrNoToken, nil},
		{"no user claim", plain, hs256(jwt.MapClaims{"name": "x", "exp": in(time.Hour)}), ErrNoUser, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := tc.v.Authenticate(tc.token)
			checkErr(t, tc.token, err, tc.want, tc.detail)
			if tc.want == nil {
				if id.UserID != "u1" {
					t.Errorf("UserID = %q, want %q", id.UserID, "u1")
				}
				if id.Expires.IsZero() || id.Expires.Unix() != int64(id.Claims["exp"].(float64)) {
					t.Errorf("Expires = %v, want the exp claim %v", id.Expires, id.Claims["exp"])
				}
			}
		})
	}
}

func TestAuthenticateAsymmetric(t *testing.T) {
	rsaKey := rsaTestKey()
	rsaPath, rsaPEM := writePublicKey(t, &rsaKey.PublicKey)
	otherRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecPath, ecPEM := writePublicKey(t, &ecKey.PublicKey)
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPath, _ := writePublicKey(t, edPub)

	rs256 := mustNew(t, Config{Algorithms: []string{"RS256"}, PublicKeyFile: rsaPath})
	rsAndHS := mustNew(t, Config{Algorithms: []string{"RS256", "PS256", "HS256"}, PublicKeyFile: rsaPath, Secret: testSecret})
	es256 := mustNew(t, Config{Algorithms: []string{"ES256"}, PublicKeyFile: ecPath})
	eddsa := mustNew(t, Config{Algorithms: []string{"EdDSA"}, PublicKeyFile: edPath})

	claims := func() jwt.MapClaims { return jwt.MapClaims{"sub": "u1", "exp": in(time.Hour)} }
	tests := []struct {
		name   string
		v      *Verifier
		token  string
		want   error
		detail error
	}{
		{"RS256 valid", rs256, signed(t, jwt.SigningMethodRS256, rsaKey, claims(), nil), nil, nil},
		{"RS256 other key", rs256, signed(t, jwt.SigningMethodRS256, otherRSA, claims(), nil), ErrTokenInvalid, jwt.ErrTokenSignatureInvalid},
		{"alg confusion: HS256 signed with the RSA public key PEM", rs256, signed(t, jwt.SigningMethodHS256, rsaPEM, claims(), nil), ErrTokenInvalid, jwt.ErrTokenSignatureInvalid},
		{"alg confusion with HS256 also allowed", rsAndHS, signed(t, jwt.SigningMethodHS256, rsaPEM, claims(), nil), ErrTokenInvalid, jwt.ErrTokenSignatureInvalid},
		{"alg confusion: HS256 signed with the RSA modulus", rs256, signed(t, jwt.SigningMethodHS256, x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey), claims(), nil), ErrTokenInvalid, jwt.ErrTokenSignatureInvalid},
		{"RS256 and HS256 both allowed: RS256", rsAndHS, signed(t, jwt.SigningMethodRS256, rsaKey, claims(), nil), nil, nil},
		{"RS256 and HS256 both allowed: PS256", rsAndHS, signed(t, jwt.SigningMethodPS256, rsaKey, claims(), nil), nil, nil},
		{"RS256 and HS256 both allowed: HS256", rsAndHS, signed(t, jwt.SigningMethodHS256, testSecret, claims(), nil), nil, nil},
		{"RS512 not allowed", rsAndHS, signed(t, jwt.SigningMethodRS512, rsaKey, claims(), nil), ErrTokenInvalid, jwt.ErrTokenSignatureInvalid},
		{"ES256 valid", es256, signed(t, jwt.SigningMethodES256, ecKey, claims(), nil), nil, nil},
		{"ES256 token to RS256 verifier", rs256, signed(t, jwt.SigningMethodES256, ecKey, claims(), nil), ErrTokenInvalid, jwt.ErrTokenSignatureInvalid},
		{"HS256 signed with the EC public key PEM", es256, signed(t, jwt.SigningMethodHS256, ecPEM, claims(), nil), ErrTokenInvalid, jwt.ErrTokenSignatureInvalid},
		{"EdDSA valid", eddsa, signed(t, jwt.SigningMethodEdDSA, edPriv, claims(), nil), nil, nil},
		{"RS256 expired", rs256, signed(t, jwt.SigningMethodRS256, rsaKey, jwt.MapClaims{"sub": "u1", "exp": in(-time.Hour)}, nil), ErrTokenExpired, jwt.ErrTokenExpired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := tc.v.Authenticate(tc.token)
			checkErr(t, tc.token, err, tc.want, tc.detail)
			if tc.want == nil && id.UserID != "u1" {
				t.Errorf("UserID = %q, want %q", id.UserID, "u1")
			}
		})
	}
}

// TestKeyfuncTyped checks the key function itself: a typed key for the
// token's family, nothing for another family even if the parser let it by.
func TestKeyfuncTyped(t *testing.T) {
	rsaPath, _ := writePublicKey(t, &rsaTestKey().PublicKey)
	v := mustNew(t, Config{Algorithms: []string{"RS256", "HS256"}, PublicKeyFile: rsaPath, Secret: testSecret})
	tests := []struct {
		name   string
		method jwt.SigningMethod
		check  func(any) bool
	}{
		{"RS256 gets *rsa.PublicKey", jwt.SigningMethodRS256, func(k any) bool { _, ok := k.(*rsa.PublicKey); return ok }},
		{"HS256 gets []byte", jwt.SigningMethodHS256, func(k any) bool { _, ok := k.([]byte); return ok }},
		{"HS384 gets nothing", jwt.SigningMethodHS384, nil},
		{"ES256 gets nothing", jwt.SigningMethodES256, nil},
		{"none gets nothing", jwt.SigningMethodNone, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key, err := v.key(&jwt.Token{Method: tc.method})
			if tc.check == nil {
				if err == nil {
					t.Fatalf("key(%s) = %T, want an error", tc.method.Alg(), key)
				}
				return
			}
			if err != nil || !tc.check(key) {
				t.Fatalf("key(%s) = %T, %v", tc.method.Alg(), key, err)
			}
		})
	}
}

func TestUserID(t *testing.T) {
	tests := []struct {
		name   string
		claim  string // Config.UserClaim
		claims jwt.MapClaims
		want   string // "" means ErrNoUser
	}{
		{"sub", "", jwt.MapClaims{"sub": "u1"}, "u1"},
		{"id", "", jwt.MapClaims{"id": "u2"}, "u2"},
		{"userId", "", jwt.MapClaims{"userId": "u3"}, "u3"},
		{"sub before id before userId", "", jwt.MapClaims{"sub": "a", "id": "b", "userId": "c"}, "a"},
		{"id before userId", "", jwt.MapClaims{"id": "b", "userId": "c"}, "b"},
		{"empty sub falls through", "", jwt.MapClaims{"sub": "", "id": "b"}, "b"},
		{"numeric id", "", jwt.MapClaims{"id": 42}, "42"},
		{"numeric zero", "", jwt.MapClaims{"id": 0}, "0"},
		{"negative id", "", jwt.MapClaims{"userId": -7}, "-7"},
		{"large exact id", "", jwt.MapClaims{"id": int64(1) << 52}, "4503599627370496"},
		{"1e15 not in e-notation", "", jwt.MapClaims{"id": 1e15}, "1000000000000000"},
		{"id beyond 2^53", "", jwt.MapClaims{"id": uint64(1) << 60}, ""},
		{"fractional id", "", jwt.MapClaims{"id": 4.5}, ""},
		{"object id", "", jwt.MapClaims{"sub": map[string]any{"a": 1}}, ""},
		{"boolean id", "", jwt.MapClaims{"sub": true}, ""},
		{"array id", "", jwt.MapClaims{"id": []string{"a"}}, ""},
		{"null sub falls through", "", jwt.MapClaims{"sub": nil, "userId": "c"}, "c"},
		{"missing", "", jwt.MapClaims{"name": "x"}, ""},
		{"custom claim", "uid", jwt.MapClaims{"uid": "c1", "sub": "s"}, "c1"},
		{"custom numeric claim", "uid", jwt.MapClaims{"uid": 42}, "42"},
		{"custom claim missing, sub not used", "uid", jwt.MapClaims{"sub": "s"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := mustNew(t, Config{Secret: testSecret, UserClaim: tc.claim})
			tc.claims["exp"] = in(time.Hour)
			token := signed(t, jwt.SigningMethodHS256, testSecret, tc.claims, nil)
			id, err := v.Authenticate(token)
			if tc.want == "" {
				checkErr(t, token, err, ErrNoUser, nil)
				return
			}
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			if id.UserID != tc.want {
				t.Errorf("UserID = %q, want %q", id.UserID, tc.want)
			}
		})
	}
}

func TestNew(t *testing.T) {
	dir := t.TempDir()
	rsaKey := rsaTestKey()
	rsaPath, _ := writePublicKey(t, &rsaKey.PublicKey)
	pkcs1Path := writePEM(t, dir, "pkcs1.pem", "RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey))
	privPath := writePEM(t, dir, "priv.pem", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey))
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &rsaKey.PublicKey, rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	certPath := writePEM(t, dir, "cert.pem", "CERTIFICATE", certDER)
	smallRSA, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	smallPath, _ := writePublicKey(t, &smallRSA.PublicKey)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecPath, _ := writePublicKey(t, &ecKey.PublicKey)
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPath, _ := writePublicKey(t, edPub)
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	otherBlock := writePEM(t, dir, "csr.pem", "CERTIFICATE REQUEST", []byte{1, 2, 3})

	tests := []struct {
		name string
		cfg  Config
		want string // substring of the error; "" means success
	}{
		{"defaults", Config{Secret: testSecret}, ""},
		{"duplicates", Config{Secret: testSecret, Algorithms: []string{"HS256", "HS256", "HS512"}}, ""},
		{"RS256 with PKIX key", Config{Algorithms: []string{"RS256", "PS512"}, PublicKeyFile: rsaPath}, ""},
		{"RS256 with PKCS1 key", Config{Algorithms: []string{"RS256"}, PublicKeyFile: pkcs1Path}, ""},
		{"RS256 with certificate", Config{Algorithms: []string{"RS256"}, PublicKeyFile: certPath}, ""},
		{"EdDSA", Config{Algorithms: []string{"EdDSA"}, PublicKeyFile: edPath}, ""},
		{"leeway 30s", Config{Secret: testSecret, Leeway: 30 * time.Second}, ""},
		{"none", Config{Secret: testSecret, Algorithms: []string{"HS256", "none"}}, `algorithm "none" is not allowed`},
		{"None", Config{Secret: testSecret, Algorithms: []string{"None"}}, `algorithm "None" is not allowed`},
		{"unknown", Config{Secret: testSecret, Algorithms: []string{"XS256"}}, `unknown algorithm "XS256"`},
		{"wrong case", Config{Secret: testSecret, Algorithms: []string{"hs256"}}, `did you mean "HS256"`},
		{"HS256 without secret", Config{}, "HS256 needs a secret"},
		{"HS512 without secret", Config{Algorithms: []string{"HS512"}}, "HS512 needs a secret"},
		{"RS256 without key file", Config{Algorithms: []string{"RS256"}}, "RS256 needs a public key file"},
		{"key file but only HS256", Config{Secret: testSecret, PublicKeyFile: rsaPath}, "no allowed algorithm"},
		{"RS256 with EC key", Config{Algorithms: []string{"RS256"}, PublicKeyFile: ecPath}, "RS256 cannot verify with the configured public key (ECDSA P-256)"},
		{"ES256 with RSA key", Config{Algorithms: []string{"ES256"}, PublicKeyFile: rsaPath}, "ES256 cannot verify with the configured public key (RSA)"},
		{"ES384 with P-256 key", Config{Algorithms: []string{"ES384"}, PublicKeyFile: ecPath}, "ES384 needs a P-384 key"},
		{"EdDSA with RSA key", Config{Algorithms: []string{"EdDSA"}, PublicKeyFile: rsaPath}, "EdDSA cannot verify"},
		{"private key file", Config{Algorithms: []string{"RS256"}, PublicKeyFile: privPath}, "holds a private key"},
		{"not PEM", Config{Algorithms: []string{"RS256"}, PublicKeyFile: garbage}, "no PEM block"},
		{"other PEM block", Config{Algorithms: []string{"RS256"}, PublicKeyFile: otherBlock}, `unsupported PEM block "CERTIFICATE REQUEST"`},
		{"missing file", Config{Algorithms: []string{"RS256"}, PublicKeyFile: filepath.Join(dir, "nope.pem")}, "no such file"},
		{"RSA 1024", Config{Algorithms: []string{"RS256"}, PublicKeyFile: smallPath}, "RSA key of 1024 bits"},
		{"leeway 31s", Config{Secret: testSecret, Leeway: 31 * time.Second}, "leeway 31s is more than 30s"},
		{"negative leeway", Config{Secret: testSecret, Leeway: -time.Second}, "leeway -1s is negative"},
		{"negative max token bytes", Config{Secret: testSecret, MaxTokenBytes: -1}, "max token bytes -1 is negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := New(tc.cfg)
			if tc.want == "" {
				if err != nil || v == nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("New succeeded, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestDefaults checks what a zero Config field means.
func TestDefaults(t *testing.T) {
	v := mustNew(t, Config{Secret: testSecret})
	if v.maxBytes != DefaultMaxTokenBytes {
		t.Errorf("maxBytes = %d, want %d", v.maxBytes, DefaultMaxTokenBytes)
	}
	if len(v.allowed) != 1 || v.allowed[0] != "HS256" {
		t.Errorf("allowed = %v, want [HS256]", v.allowed)
	}
	tests := []struct {
		name  string
		size  int
		want  error
		bytes int
	}{
		{"at the limit", DefaultMaxTokenBytes, ErrTokenInvalid, 0},
		{"one over", DefaultMaxTokenBytes + 1, ErrTokenTooLong, 0},
		{"custom limit", 101, ErrTokenTooLong, 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := mustNew(t, Config{Secret: testSecret, MaxTokenBytes: tc.bytes})
			_, err := v.Authenticate(strings.Repeat("a", tc.size))
			if !errors.Is(err, tc.want) {
				t.Errorf("Authenticate(%d bytes) = %v, want %v", tc.size, err, tc.want)
			}
		})
	}
}

// TestOversizeIsCheap is case 34: a 1 MiB token or 100,000 dots is refused
// by the length cap, without allocating and well under 5 ms.
func TestOversizeIsCheap(t *testing.T) {
	v := mustNew(t, Config{Secret: testSecret})
	tests := []struct {
		name  string
		token string
	}{
		{"100000 dots", strings.Repeat(".", 100000)},
		{"1 MiB", strings.Repeat("x", 1<<20)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			start := time.Now()
			allocs := testing.AllocsPerRun(100, func() { _, err = v.Authenticate(tc.token) })
			if !errors.Is(err, ErrTokenTooLong) {
				t.Fatalf("Authenticate = %v, want ErrTokenTooLong", err)
			}
			if allocs != 0 {
				t.Errorf("Authenticate allocates %v times, want 0", allocs)
			}
			if per := time.Since(start) / 101; per > 5*time.Millisecond {
				t.Errorf("Authenticate took %v, want < 5ms", per)
			}
		})
	}
}

// TestConcurrent runs one Verifier from many goroutines, for the race
// detector.
func TestConcurrent(t *testing.T) {
	v := mustNew(t, Config{Secret: testSecret})
	good := signed(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "u1", "exp": in(time.Hour)}, nil)
	bad := signed(t, jwt.SigningMethodHS256, []byte("wrong-secret-wrong-secret-wrong!!"), jwt.MapClaims{"sub": "u1", "exp": in(time.Hour)}, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			for range 50 {
				if _, err := v.Authenticate(good); err != nil {
					errs <- err
					return
				}
				if _, err := v.Authenticate(bad); !errors.Is(err, ErrTokenInvalid) {
					errs <- errors.Join(errors.New("bad token accepted"), err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestSign(t *testing.T) {
	v := mustNew(t, Config{Secret: testSecret})
	tests := []struct {
		name    string
		secret  []byte
		claims  map[string]any
		wantErr bool
		wantID  string
	}{
		{"round trip", testSecret, map[string]any{"sub": "u1", "role": "admin", "exp": in(time.Hour)}, false, "u1"},
		{"numeric id", testSecret, map[string]any{"id": 42, "exp": in(time.Hour)}, false, "42"},
		{"empty secret", nil, map[string]any{"sub": "u1"}, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			token, err := Sign(tc.secret, tc.claims)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("Sign = %q, want an error", token)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tok, _, err := jwt.NewParser().ParseUnverified(token, jwt.MapClaims{})
			if err != nil || tok.Method.Alg() != "HS256" {
				t.Fatalf("Sign made a %v token (%v), want HS256", tok.Header["alg"], err)
			}
			id, err := v.Authenticate(token)
			if err != nil {
				t.Fatalf("Authenticate(Sign(...)): %v", err)
			}
			if id.UserID != tc.wantID || id.Claims["role"] != tc.claims["role"] {
				t.Errorf("Authenticate = %+v, want user %q and the claims signed", id, tc.wantID)
			}
		})
	}
}

func FuzzAuthenticate(f *testing.F) {
	v := mustNew(f, Config{Secret: testSecret})
	f.Add(signed(f, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "u1", "exp": in(time.Hour)}, nil))
	f.Add(signed(f, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"id": 42.5, "exp": in(time.Hour)}, nil))
	f.Add(signed(f, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "u1", "exp": "soon"}, nil))
	f.Add(signed(f, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "u1", "exp": in(time.Hour)}, nil))
	f.Add("eyJhbGciOiJIUzI1NiJ9.e30.")
	f.Add("..")
	f.Add("abc")
	f.Add("")
	f.Add(strings.Repeat(".", 9000))
	f.Fuzz(func(t *testing.T, token string) {
		id, err := v.Authenticate(token)
		if err == nil {
			if id.UserID == "" || id.Expires.IsZero() || id.Claims == nil {
				t.Fatalf("accepted %q with incomplete identity %+v", token, id)
			}
			return
		}
		if !errors.Is(err, ErrNoToken) && !errors.Is(err, ErrTokenTooLong) && !errors.Is(err, ErrTokenExpired) &&
			!errors.Is(err, ErrTokenInvalid) && !errors.Is(err, ErrNoUser) {
			t.Fatalf("error %v matches no sentinel", err)
		}
		if len(token) >= 24 && strings.Contains(err.Error(), token) {
			t.Fatalf("error contains the token: %v", err)
		}
	})
}

func BenchmarkAuthenticate(b *testing.B) {
	rsaKey := rsaTestKey()
	rsaPath, _ := writePublicKey(b, &rsaKey.PublicKey)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	ecPath, _ := writePublicKey(b, &ecKey.PublicKey)
	claims := func() jwt.MapClaims {
		return jwt.MapClaims{"sub": "user-123", "role": "user", "iat": in(0), "exp": in(time.Hour)}
	}
	benches := []struct {
		name  string
		v     *Verifier
		token string
		ok    bool
	}{
		{"HS256", mustNew(b, Config{Secret: testSecret}), signed(b, jwt.SigningMethodHS256, testSecret, claims(), nil), true},
		{"RS256", mustNew(b, Config{Algorithms: []string{"RS256"}, PublicKeyFile: rsaPath}), signed(b, jwt.SigningMethodRS256, rsaKey, claims(), nil), true},
		{"ES256", mustNew(b, Config{Algorithms: []string{"ES256"}, PublicKeyFile: ecPath}), signed(b, jwt.SigningMethodES256, ecKey, claims(), nil), true},
		{"HS256-bad-signature", mustNew(b, Config{Secret: testSecret}), signed(b, jwt.SigningMethodHS256, []byte("wrong-secret-wrong-secret-wrong!!"), claims(), nil), false},
		{"too-long", mustNew(b, Config{Secret: testSecret}), strings.Repeat(".", 100000), false},
	}
	for _, bc := range benches {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.v.Authenticate(bc.token); (err == nil) != bc.ok {
					b.Fatalf("Authenticate: %v", err)
				}
			}
		})
	}
}

// seg base64url-encodes one token segment, as JWS does.
func seg(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
