// Package webhook signs and verifies Standard Webhooks 1.0.0 requests
// (symmetric "v1" signatures: HMAC-SHA256 over "id.timestamp.body").
//
// The Verifier is written here rather than wrapping the reference Go library
// (standard-webhooks/libraries/go v0.0.1) because that library holds one key
// (we need several for rotation), reads time.Now and a package-level tolerance
// itself (tests must freeze the clock), signs over the re-formatted timestamp
// instead of the header bytes, lets '.' into the id, and allocates on every
// call. The tests cross-check both directions against that library.
package webhook

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// SecretPrefix starts every symmetric secret: "whsec_" + base64(key).
const SecretPrefix = "whsec_"

// ErrInvalidSecret is returned (wrapped, with the entry's index) by
// NewVerifier and NewSigner. Its message never contains the secret.
var ErrInvalidSecret = errors.New("webhook: invalid secret")

// ParseSecret turns "whsec_<base64>" into the HMAC key. Padded and unpadded
// standard base64 are both accepted; surrounding white space (a trailing
// newline from a secrets file) is ignored. The spec suggests 24-64 random
// bytes, but any non-empty key is accepted: the sender chose it. Errors
// wrap ErrInvalidSecret and never contain the secret, so config validation
// can print them next to the key's name.
func ParseSecret(s string) ([]byte, error) {
	b64, ok := strings.CutPrefix(strings.TrimSpace(s), SecretPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: missing %q prefix", ErrInvalidSecret, SecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(b64)
	}
	if err != nil {
		// err names a byte offset only, but keep it out anyway: the
		// message must be safe to print next to config values.
		return nil, fmt.Errorf("%w: not base64 after %q", ErrInvalidSecret, SecretPrefix)
	}
	if len(key) == 0 {
		return nil, fmt.Errorf("%w: empty key", ErrInvalidSecret)
	}
	return key, nil
}
