package auth

import (
	"crypto"
	"slices"
	"sort"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// Key is one verification key of a key set.
type Key struct {
	// KID is the key's id: the JWK's "kid", or a key file's name without
	// its extension. It may be empty.
	KID string
	// Alg is the one algorithm the key is for (a JWK's "alg"), or empty:
	// every allowed algorithm of the key's family (and, for ECDSA, curve).
	// It comes from the key's source, never from a token's header.
	Alg string
	// Key is *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey.
	Key crypto.PublicKey
}

// KeySet is an immutable set of asymmetric verification keys, built for
// one list of allowed algorithms. A source (the key files, a JWKS URL)
// swaps in a whole new set, atomically; the key function reads whichever
// set is current without locking.
type KeySet struct {
	keys  []Key
	byKID map[string][]int // kid -> indexes into keys
	// byAlg is, for each allowed asymmetric algorithm, the keys that can
	// verify it: one key, or a jwt.VerificationKeySet tried in turn.
	byAlg map[string]any
}

// newKeySet builds the set of keys for the algorithms allowed. Callers
// have already dropped keys that no allowed algorithm can use.
func newKeySet(keys []Key, allowed []string) *KeySet {
	s := &KeySet{keys: keys, byKID: map[string][]int{}, byAlg: map[string]any{}}
	for i, k := range keys {
		if k.KID != "" {
			s.byKID[k.KID] = append(s.byKID[k.KID], i)
		}
	}
	for _, alg := range allowed {
		var fit []jwt.VerificationKey
		for _, k := range keys {
			if keyUsable(k, alg) {
				fit = append(fit, k.Key)
			}
		}
		switch len(fit) {
		case 0:
		case 1:
			s.byAlg[alg] = fit[0]
		default:
			s.byAlg[alg] = jwt.VerificationKeySet{Keys: fit}
		}
	}
	return s
}

// Len is the number of keys in s; a nil set has none.
func (s *KeySet) Len() int {
	if s == nil {
		return 0
	}
	return len(s.keys)
}

// KIDs are the key ids in s, sorted, with "" for keys without one.
func (s *KeySet) KIDs() []string {
	if s == nil {
		return nil
	}
	out := make([]string, 0, len(s.keys))
	for _, k := range s.keys {
		out = append(out, k.KID)
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// forAlg is every key of s that can verify alg: nil, one key or a
// jwt.VerificationKeySet.
func (s *KeySet) forAlg(alg string) any {
	if s == nil {
		return nil
	}
	return s.byAlg[alg]
}

// forKID looks kid up in s. found reports whether s has the kid at all;
// key is the one key (or a jwt.VerificationKeySet) under that kid that can
// verify alg, nil if the kid names only keys for other algorithms.
func (s *KeySet) forKID(kid, alg string) (key any, found bool) {
	if s == nil {
		return nil, false
	}
	idx, found := s.byKID[kid]
	if !found {
		return nil, false
	}
	var fit []jwt.VerificationKey
	for _, i := range idx {
		if keyUsable(s.keys[i], alg) {
			fit = append(fit, s.keys[i].Key)
		}
	}
	switch len(fit) {
	case 0:
		return nil, true
	case 1:
		return fit[0], true
	}
	return jwt.VerificationKeySet{Keys: fit}, true
}

// keyUsable reports whether k may verify a token of algorithm alg: the
// key is of alg's family (and curve), and k names no other algorithm.
func keyUsable(k Key, alg string) bool {
	if k.Alg != "" && k.Alg != alg {
		return false
	}
	fam, curve, ok := algorithmFamily(alg)
	if !ok || fam == familyHMAC {
		return false
	}
	return fits(fam, curve, k.Key)
}

// usableBy returns the allowed algorithms that can verify with k.
func usableBy(k Key, allowed []string) []string {
	var algs []string
	for _, alg := range allowed {
		if keyUsable(k, alg) {
			algs = append(algs, alg)
		}
	}
	return algs
}

// mergeKeys joins the keys of two sources for one algorithm into one
// value for the parser: nil, one key or a jwt.VerificationKeySet.
func mergeKeys(a, b any) any {
	if a == nil {
		return b
	}
	if b == nil {
		return a
	}
	var keys []jwt.VerificationKey
	for _, p := range []any{a, b} {
		if set, ok := p.(jwt.VerificationKeySet); ok {
			keys = append(keys, set.Keys...)
		} else {
			keys = append(keys, p)
		}
	}
	return jwt.VerificationKeySet{Keys: keys}
}

// describeKIDs lists kids for a log line or a readiness detail.
func describeKIDs(kids []string) string {
	if len(kids) == 0 {
		return "none"
	}
	q := make([]string, len(kids))
	for i, k := range kids {
		if k == "" {
			q[i] = "(no kid)"
		} else {
			q[i] = k
		}
	}
	return strings.Join(q, ", ")
}
