package engine

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"
)

// apiKeys are the keys api.keys admits to /api/*, kept as SHA-256 digests:
// a key may be given in clear or as "sha256:<64 hex digits>" (the digest
// of the key), so that a config file or a ConfigMap need not hold it.
// A presented key is hashed and compared with every digest in constant
// time, so neither its length nor which key it matched shows in the time
// the answer takes.
type apiKeys [][sha256.Size]byte

const sha256Prefix = "sha256:"

// parseAPIKeys reads api.keys; a "sha256:" entry that is not 64 hex
// digits is an error (config validation says so first).
func parseAPIKeys(keys []string) (apiKeys, error) {
	out := make(apiKeys, 0, len(keys))
	for i, k := range keys {
		var d [sha256.Size]byte
		if hexDigest, ok := strings.CutPrefix(k, sha256Prefix); ok {
			b, err := hex.DecodeString(hexDigest)
			if err != nil || len(b) != sha256.Size {
				return nil, fmt.Errorf("api.keys[%d]: %q: want sha256: and 64 hex digits", i, sha256Prefix+"…")
			}
			copy(d[:], b)
		} else {
			d = sha256.Sum256([]byte(k))
		}
		out = append(out, d)
	}
	return out, nil
}

// match reports whether key is one of the keys.
func (ks apiKeys) match(key string) bool {
	d := sha256.Sum256([]byte(key))
	found := 0
	for i := range ks {
		found |= subtle.ConstantTimeCompare(ks[i][:], d[:])
	}
	return found == 1
}
