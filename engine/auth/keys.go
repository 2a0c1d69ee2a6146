package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
)

// family is the kind of key an algorithm verifies with. The key function
// hands out a key only of the family the token's method belongs to, so a
// token cannot choose to be checked with a key meant for another family
// (the HS256-with-the-RSA-public-key forgery).
type family int

const (
	familyHMAC  family = iota + 1
	familyRSA          // RS* and PS*: *rsa.PublicKey
	familyECDSA        // ES*: *ecdsa.PublicKey on the algorithm's curve
	familyEdDSA        // EdDSA: ed25519.PublicKey
)

// knownAlgorithms lists every algorithm New accepts, for error messages.
const knownAlgorithms = "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA"

// minRSABits is the smallest RSA modulus accepted for verification keys
// (NIST SP 800-131A).
const minRSABits = 2048

// algorithmFamily reports the key family of a JWS algorithm name, and for
// ES* the curve its key must be on. Names are case-sensitive (RFC 7518).
func algorithmFamily(alg string) (family, elliptic.Curve, bool) {
	switch alg {
	case "HS256", "HS384", "HS512":
		return familyHMAC, nil, true
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		return familyRSA, nil, true
	case "ES256":
		return familyECDSA, elliptic.P256(), true
	case "ES384":
		return familyECDSA, elliptic.P384(), true
	case "ES512":
		return familyECDSA, elliptic.P521(), true
	case "EdDSA":
		return familyEdDSA, nil, true
	}
	return 0, nil, false
}

// checkAlgorithm explains why alg is not an algorithm New accepts, or
// returns nil.
func checkAlgorithm(alg string) error {
	if strings.EqualFold(alg, "none") {
		return fmt.Errorf("auth: algorithm %q is not allowed: it accepts unsigned tokens", alg)
	}
	if _, _, ok := algorithmFamily(alg); ok {
		return nil
	}
	for _, known := range strings.Split(knownAlgorithms, ", ") {
		if strings.EqualFold(alg, known) {
			return fmt.Errorf("auth: unknown algorithm %q (names are case-sensitive: did you mean %q?)", alg, known)
		}
	}
	return fmt.Errorf("auth: unknown algorithm %q (known: %s)", alg, knownAlgorithms)
}

// readPublicKey reads the first PEM block of path: a PKIX "PUBLIC KEY", a
// PKCS #1 "RSA PUBLIC KEY" or a "CERTIFICATE", and returns its key as
// *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey.
func readPublicKey(path string) (any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: public key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("auth: public key %s: no PEM block found", path)
	}
	var key any
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	default:
		if strings.Contains(block.Type, "PRIVATE KEY") {
			return nil, fmt.Errorf("auth: public key %s holds a private key (%s); give the public key only (openssl pkey -pubout)", path, block.Type)
		}
		return nil, fmt.Errorf("auth: public key %s: unsupported PEM block %q (want PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE)", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("auth: public key %s: %w", path, err)
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("auth: public key %s: RSA key of %d bits; need at least %d", path, k.N.BitLen(), minRSABits)
		}
	case *ecdsa.PublicKey, ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("auth: public key %s: unsupported key type %T", path, key)
	}
	return key, nil
}

// keyFits checks that key can verify alg, whose family is asymmetric.
func keyFits(alg string, fam family, curve elliptic.Curve, key any) error {
	if fits(fam, curve, key) {
		return nil
	}
	if k, ok := key.(*ecdsa.PublicKey); ok && fam == familyECDSA {
		return fmt.Errorf("auth: %s needs a %s key, the public key is on %s", alg, curve.Params().Name, k.Curve.Params().Name)
	}
	return fmt.Errorf("auth: %s cannot verify with the configured public key (%s)", alg, keyKind(key))
}

// fits reports whether key is of family fam and, for ECDSA, on curve.
func fits(fam family, curve elliptic.Curve, key any) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return fam == familyRSA
	case *ecdsa.PublicKey:
		return fam == familyECDSA && k.Curve == curve
	case ed25519.PublicKey:
		return fam == familyEdDSA
	}
	return false
}

func keyKind(key any) string {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return "RSA"
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", key)
}

// errNoKey is returned by the key function for a method whose family has no
// configured key. The parser's allow-list normally stops such tokens first.
var errNoKey = errors.New("no key for this algorithm")
