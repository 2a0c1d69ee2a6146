package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Header names, lower-case as the spec writes them. http.Header stores them
// canonicalised ("Webhook-Id"); Verify looks up both forms.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

const (
	canonID        = "Webhook-Id"
	canonTimestamp = "Webhook-Timestamp"
	canonSignature = "Webhook-Signature"
)

// DefaultTolerance is how far webhook-timestamp may be from now, either way.
const DefaultTolerance = 5 * time.Minute

// MaxIDLen bounds webhook-id. The id becomes a store key, so it is capped.
const MaxIDLen = 256

const (
	maxTimestampLen = 19                                 // digits of max int64
	sigLen          = 44                                 // padded base64 of a SHA-256 sum
	prefixCap       = MaxIDLen + 1 + maxTimestampLen + 1 // "id.ts."
)

// Verification errors, for errors.Is. Status maps them to HTTP codes.
var (
	ErrMissingHeader       = errors.New("webhook: missing header")
	ErrInvalidID           = errors.New("webhook: invalid webhook-id")
	ErrBadTimestamp        = errors.New("webhook: webhook-timestamp is not an integer")
	ErrTimestampOutOfRange = errors.New("webhook: webhook-timestamp outside tolerance")
	ErrNoMatchingSignature = errors.New("webhook: no matching signature")
)

// Status maps a Verify error to the HTTP status to answer: 400 for a
// malformed request (ErrMissingHeader, ErrInvalidID, ErrBadTimestamp), 401 for
// one that is well-formed but not authentic or stale (ErrTimestampOutOfRange,
// ErrNoMatchingSignature). nil is 200; any other error is 500.
func Status(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, ErrMissingHeader), errors.Is(err, ErrInvalidID), errors.Is(err, ErrBadTimestamp):
		return http.StatusBadRequest
	case errors.Is(err, ErrTimestampOutOfRange), errors.Is(err, ErrNoMatchingSignature):
		return http.StatusUnauthorized
	default:
		return http.StatusInternalServerError
	}
}

// Verifier checks Standard Webhooks signatures against one or more secrets
// (several during a rotation). It is safe for concurrent use; Verify does not
// allocate when the request is valid.
type Verifier struct {
	keys      [][]byte
	tolerance time.Duration
	now       func() time.Time
	scratch   sync.Pool // *verifyScratch, one MAC per key
}

// verifyScratch is per-call working space, reused through Verifier.scratch.
type verifyScratch struct {
	macs   []hash.Hash // macs[i] is keyed with Verifier.keys[i]
	prefix [prefixCap]byte
	sum    [sha256.Size]byte
	want   [sigLen]byte
	got    [sigLen]byte
}

// NewVerifier returns a Verifier accepting a signature made with any of
// secrets ("whsec_<base64>"). tolerance 0 means DefaultTolerance. An error
// names the bad entry by its index, never by its value.
func NewVerifier(secrets []string, tolerance time.Duration) (*Verifier, error) {
	if len(secrets) == 0 {
		return nil, fmt.Errorf("%w: no secrets configured", ErrInvalidSecret)
	}
	if tolerance < 0 {
		return nil, fmt.Errorf("webhook: negative tolerance %v", tolerance)
	}
	if tolerance == 0 {
		tolerance = DefaultTolerance
	}
	v := &Verifier{keys: make([][]byte, len(secrets)), tolerance: tolerance, now: time.Now}
	for i, s := range secrets {
		key, err := ParseSecret(s)
		if err != nil {
			return nil, fmt.Errorf("secret %d: %w", i, err)
		}
		v.keys[i] = key
	}
	v.scratch.New = func() any {
		sc := &verifyScratch{macs: make([]hash.Hash, len(v.keys))}
		for i, k := range v.keys {
			sc.macs[i] = hmac.New(sha256.New, k)
		}
		return sc
	}
	return v, nil
}

// SetClock replaces the clock used for the tolerance check (time.Now when
// now is nil). Call it before the Verifier is shared; tests use it to freeze
// time.
func (v *Verifier) SetClock(now func() time.Time) {
	if now == nil {
		now = time.Now
	}
	v.now = now
}

// Verify checks the webhook-id, webhook-timestamp and webhook-signature
// headers (canonical or lower-case keys) over the raw body and returns the
// webhook-id, the sender's idempotency key. Checks run cheapest first:
// headers present, id without '.', timestamp an integer within tolerance,
// then the HMAC. The signature header is a space-separated list; entries
// other than "v1,<base64>" are skipped, and the request is authentic when
// any v1 entry matches any secret (compared in constant time).
func (v *Verifier) Verify(h http.Header, body []byte) (id string, err error) {
	id = headerValue(h, canonID, HeaderID)
	ts := headerValue(h, canonTimestamp, HeaderTimestamp)
	sigs := h[canonSignature]
	if len(sigs) == 0 {
		sigs = h[HeaderSignature]
	}
	switch {
	case id == "":
		return "", fmt.Errorf("%w: %s", ErrMissingHeader, HeaderID)
	case ts == "":
		return "", fmt.Errorf("%w: %s", ErrMissingHeader, HeaderTimestamp)
	case len(sigs) == 0 || sigs[0] == "":
		return "", fmt.Errorf("%w: %s", ErrMissingHeader, HeaderSignature)
	}
	// The signed content is '.'-delimited: id "a.1" at ts 2 would sign the
	// same bytes as id "a" at ts 1 with a body starting "2.", so the spec
	// forbids '.' in the id (the timestamp is digits only).
	if len(id) > MaxIDLen || strings.IndexByte(id, '.') >= 0 {
		return "", ErrInvalidID
	}
	sec, ok := parseTimestamp(ts)
	if !ok {
		return "", ErrBadTimestamp
	}
	now := v.now()
	if t := time.Unix(sec, 0); t.Before(now.Add(-v.tolerance)) || t.After(now.Add(v.tolerance)) {
		return "", ErrTimestampOutOfRange
	}
	if !v.match(id, ts, body, sigs) {
		return "", ErrNoMatchingSignature
	}
	return id, nil
}

// match reports whether any v1 entry of sigs is the signature of
// "id.ts.body" under any key. ts is signed as received (digits only, checked
// by parseTimestamp), so it equals what the sender formatted.
func (v *Verifier) match(id, ts string, body []byte, sigs []string) bool {
	sc := v.scratch.Get().(*verifyScratch)
	defer v.scratch.Put(sc)
	n := copy(sc.prefix[:], id)
	sc.prefix[n] = '.'
	n++
	n += copy(sc.prefix[n:], ts)
	sc.prefix[n] = '.'
	n++
	for _, mac := range sc.macs {
		mac.Reset()
		mac.Write(sc.prefix[:n])
		mac.Write(body)
		base64.StdEncoding.Encode(sc.want[:], mac.Sum(sc.sum[:0]))
		if matchAny(sigs, sc) {
			return true
		}
	}
	return false
}

// matchAny compares every v1 entry of every signature header value with
// sc.want. Malformed entries and other versions (v1a, v2, ...) are skipped.
func matchAny(sigs []string, sc *verifyScratch) bool {
	for _, list := range sigs {
		for list != "" {
			var entry string
			entry, list, _ = strings.Cut(list, " ")
			ver, sig, ok := strings.Cut(entry, ",")
			if !ok || ver != "v1" || len(sig) != sigLen {
				continue
			}
			copy(sc.got[:], sig)
			if hmac.Equal(sc.got[:], sc.want[:]) {
				return true
			}
		}
	}
	return false
}

// parseTimestamp accepts 1 to 19 ASCII digits that fit an int64: no sign, no
// space, no fraction.
func parseTimestamp(s string) (int64, bool) {
	if len(s) == 0 || len(s) > maxTimestampLen {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	return sec, err == nil
}

// headerValue returns the first value stored under the canonical key, or
// else under the lower-case one (a literal http.Header{"webhook-id": ...}),
// without canonicalising on every call as http.Header.Get does.
func headerValue(h http.Header, canon, lower string) string {
	if v := h[canon]; len(v) > 0 {
		return v[0]
	}
	if v := h[lower]; len(v) > 0 {
		return v[0]
	}
	return ""
}
