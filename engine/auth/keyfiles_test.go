package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// syncBuffer is a log sink safe for the key sources' goroutines and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// pemOf is pub as a PKIX PEM block.
func pemOf(tb testing.TB, pub any) []byte {
	tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// replaceFile writes data to path as editors and Kubernetes do: a new file
// renamed over the old one.
func replaceFile(tb testing.TB, path string, data []byte) {
	tb.Helper()
	tmp := path + ".tmp~"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		tb.Fatal(err)
	}
}

// TestKeyFilesKeyChoice: each file's kid is its name without extension; a
// token's kid picks its file, a token without one, or with a kid that names
// no file, tries them in turn.
func TestKeyFilesKeyChoice(t *testing.T) {
	k := testJWKSKeys()
	dir := t.TempDir()
	a, b, ec := filepath.Join(dir, "2024-01.pem"), filepath.Join(dir, "2024-06.pem"), filepath.Join(dir, "ec.key.pem")
	replaceFile(t, a, pemOf(t, &k.rsa1.PublicKey))
	replaceFile(t, b, pemOf(t, &k.rsa2.PublicKey))
	replaceFile(t, ec, pemOf(t, &k.ec.PublicKey))
	v := mustNew(t, Config{Algorithms: []string{"RS256", "ES256"}, PublicKeyFiles: []string{a, b, ec}})
	other, err := rsa.GenerateKey(rand.Reader, 2048) // in no file
	if err != nil {
		t.Fatal(err)
	}
	claims := func() jwt.MapClaims { return jwt.MapClaims{"sub": "u1", "exp": in(time.Hour)} }
	tests := []struct {
		name   string
		method jwt.SigningMethod
		key    any
		kid    string
		want   error
		detail error
	}{
		{"kid of the first file", jwt.SigningMethodRS256, k.rsa1, "2024-01", nil, nil},
		{"kid of the second file", jwt.SigningMethodRS256, k.rsa2, "2024-06", nil, nil},
		{"no kid: first key", jwt.SigningMethodRS256, k.rsa1, "", nil, nil},
		{"no kid: second key", jwt.SigningMethodRS256, k.rsa2, "", nil, nil},
		{"kid of the other file", jwt.SigningMethodRS256, k.rsa2, "2024-01", ErrTokenInvalid, jwt.ErrTokenSignatureInvalid},
		{"only the last extension goes", jwt.SigningMethodES256, k.ec, "ec.key", nil, nil},
		{"ES256 naming an RSA file", jwt.SigningMethodES256, k.ec, "2024-01", ErrTokenInvalid, errKIDAlg},
		// Files alone: a kid that names no file tries each in turn (the
		// app's own key ids); with a JWKS it would be refused.
		{"unknown kid, its key a file's", jwt.SigningMethodRS256, k.rsa1, "2023-12", nil, nil},
		{"unknown kid, the second file's key", jwt.SigningMethodRS256, k.rsa2, "app-key-7", nil, nil},
		{"unknown kid, no file's key", jwt.SigningMethodRS256, other, "2023-12", ErrTokenInvalid, jwt.ErrTokenSignatureInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			token := signed(t, tc.method, tc.key, claims(), withKID(tc.kid))
			_, err := v.Authenticate(token)
			checkErr(t, token, err, tc.want, tc.detail)
		})
	}
}

func TestKeyFilesConfig(t *testing.T) {
	k := testJWKSKeys()
	dir := t.TempDir()
	rsa1, rsa2, ec := filepath.Join(dir, "a.pem"), filepath.Join(dir, "sub", "a.crt"), filepath.Join(dir, "ec.pem")
	os.Mkdir(filepath.Dir(rsa2), 0o700)
	replaceFile(t, rsa1, pemOf(t, &k.rsa1.PublicKey))
	replaceFile(t, rsa2, pemOf(t, &k.rsa2.PublicKey))
	replaceFile(t, ec, pemOf(t, &k.ec.PublicKey))
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"two kids alike", Config{Algorithms: []string{"RS256"}, PublicKeyFiles: []string{rsa1, rsa2}}, `same kid "a"`},
		{"an algorithm no file serves", Config{Algorithms: []string{"RS256", "ES256", "EdDSA"}, PublicKeyFiles: []string{rsa1, ec}}, "EdDSA is allowed but none of the public key files"},
		{"a file no algorithm uses", Config{Algorithms: []string{"RS256"}, PublicKeyFiles: []string{rsa1, ec}}, "public key " + ec + ": no allowed algorithm"},
		{"with a JWKS, files need not serve every algorithm", Config{Algorithms: []string{"RS256", "EdDSA"}, PublicKeyFiles: []string{rsa1, ec}, JWKSURL: "https://idp/jwks"}, "ec.pem: no allowed algorithm"},
		{"file and files together, deduplicated", Config{Algorithms: []string{"RS256", "ES256"}, PublicKeyFile: rsa1, PublicKeyFiles: []string{rsa1, ec}}, ""},
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

// keyFilesFixture is two RSA key files, "current" and "next", and a
// Verifier over them.
type keyFilesFixture struct {
	dir, current, next string
	v                  *Verifier
	logs               *syncBuffer
}

func newKeyFilesFixture(t *testing.T) *keyFilesFixture {
	k := testJWKSKeys()
	f := &keyFilesFixture{dir: t.TempDir(), logs: &syncBuffer{}}
	f.current, f.next = filepath.Join(f.dir, "current.pem"), filepath.Join(f.dir, "next.pem")
	replaceFile(t, f.current, pemOf(t, &k.rsa1.PublicKey))
	replaceFile(t, f.next, pemOf(t, &k.rsa2.PublicKey))
	f.v = mustNew(t, Config{Algorithms: []string{"RS256"}, PublicKeyFiles: []string{f.current, f.next},
		Logger: slog.New(slog.NewTextHandler(f.logs, nil))})
	return f
}

func tokenOf(t *testing.T, key any, kid string) string {
	return signed(t, jwt.SigningMethodRS256, key, jwt.MapClaims{"sub": "u1", "exp": in(time.Hour)}, withKID(kid))
}

// TestKeyFilesReload is the SIGHUP path: rotating by rewriting a file
// takes effect on reload; a broken file keeps its previous key, is logged
// with its name, and shows in Check.
func TestKeyFilesReload(t *testing.T) {
	k := testJWKSKeys()
	f := newKeyFilesFixture(t)
	if _, err := f.v.Authenticate(tokenOf(t, k.rsa1, "current")); err != nil {
		t.Fatal(err)
	}
	// Rotate: "current" now holds what was "next".
	replaceFile(t, f.current, pemOf(t, &k.rsa2.PublicKey))
	if err := f.v.ReloadKeyFiles(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.v.Authenticate(tokenOf(t, k.rsa2, "current")); err != nil {
		t.Errorf("token of the rotated key: %v", err)
	}
	if _, err := f.v.Authenticate(tokenOf(t, k.rsa1, "current")); !errors.Is(err, jwt.ErrTokenSignatureInvalid) {
		t.Errorf("token of the replaced key = %v, want refused", err)
	}
	// Broken: "next" keeps its key.
	replaceFile(t, f.next, []byte("-----BEGIN GARBAGE"))
	err := f.v.ReloadKeyFiles()
	if err == nil || !strings.Contains(err.Error(), "next.pem") {
		t.Fatalf("reload with a broken file = %v, want an error naming it", err)
	}
	if _, err := f.v.Authenticate(tokenOf(t, k.rsa2, "next")); err != nil {
		t.Errorf("token of the broken file's previous key: %v", err)
	}
	if logs := f.logs.String(); !strings.Contains(logs, "previous key kept") || !strings.Contains(logs, f.next) {
		t.Errorf("broken file not logged with its name:\n%s", logs)
	}
	if ready, detail := f.v.Check(); !ready || !strings.Contains(detail, "last reload failed, previous keys kept") || !strings.Contains(detail, "next.pem") {
		t.Errorf("Check = %v %q", ready, detail)
	}
	// Missing: the same.
	os.Remove(f.next)
	if err := f.v.ReloadKeyFiles(); err == nil {
		t.Error("reload with a missing file succeeded")
	}
	if _, err := f.v.Authenticate(tokenOf(t, k.rsa2, "next")); err != nil {
		t.Errorf("token of the missing file's previous key: %v", err)
	}
	// A private key written by mistake is refused too.
	replaceFile(t, f.next, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k.rsa1)}))
	if err := f.v.ReloadKeyFiles(); err == nil || !strings.Contains(err.Error(), "holds a private key") {
		t.Errorf("reload with a private key = %v", err)
	}
	// Fixed.
	replaceFile(t, f.next, pemOf(t, &k.rsa1.PublicKey))
	if err := f.v.ReloadKeyFiles(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.v.Authenticate(tokenOf(t, k.rsa1, "next")); err != nil {
		t.Errorf("token of the fixed file: %v", err)
	}
	if _, detail := f.v.Check(); strings.Contains(detail, "failed") {
		t.Errorf("Check after the fix: %q", detail)
	}
}

// TestKeyFilesWatched: Run notices a rewritten key file without a signal,
// and reloads on SIGHUP.
func TestKeyFilesWatched(t *testing.T) {
	k := testJWKSKeys()
	f := newKeyFilesFixture(t)
	hup := make(chan os.Signal, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.v.Run(ctx, hup) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	time.Sleep(50 * time.Millisecond) // let the watch start
	replaceFile(t, f.next, pemOf(t, &k.ec.PublicKey))
	// An EC key where only RS256 is allowed: refused, previous kept.
	waitFor(t, "the broken rotation to be seen", func() bool { return strings.Contains(f.logs.String(), "previous key kept") })
	replaceFile(t, f.next, pemOf(t, &k.rsa1.PublicKey))
	waitFor(t, "the rotation to load", func() bool {
		_, err := f.v.Authenticate(tokenOf(t, k.rsa1, "next"))
		return err == nil
	})
	// SIGHUP reloads even when the watch saw nothing new.
	n := strings.Count(f.logs.String(), "public key files reloaded")
	hup <- syscall.SIGHUP
	waitFor(t, "the SIGHUP reload", func() bool { return strings.Count(f.logs.String(), "public key files reloaded") > n })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
