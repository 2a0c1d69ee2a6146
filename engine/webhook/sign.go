package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"time"
)

// Signer signs outbound webhooks with one secret. It is safe for concurrent
// use. Sign allocates (a MAC and the result); it runs once per delivery
// attempt, not per recipient.
type Signer struct {
	key []byte
}

// NewSigner returns a Signer for secret ("whsec_<base64>"). The error never
// contains the secret.
func NewSigner(secret string) (*Signer, error) {
	key, err := ParseSecret(secret)
	if err != nil {
		return nil, err
	}
	return &Signer{key: key}, nil
}

// Sign returns "v1,<base64 HMAC-SHA256 of id.unix(ts).body>". id must not
// contain '.', or a Verifier will refuse it.
func (s *Signer) Sign(id string, ts time.Time, body []byte) string {
	buf := make([]byte, 0, len(id)+2+maxTimestampLen)
	buf = append(buf, id...)
	buf = append(buf, '.')
	buf = strconv.AppendInt(buf, ts.Unix(), 10)
	buf = append(buf, '.')
	mac := hmac.New(sha256.New, s.key)
	mac.Write(buf)
	mac.Write(body)
	var sum [sha256.Size]byte
	out := make([]byte, 3+sigLen)
	copy(out, "v1,")
	base64.StdEncoding.Encode(out[3:], mac.Sum(sum[:0]))
	return string(out)
}

// Headers returns the three Standard Webhooks headers for one attempt:
// webhook-id, webhook-timestamp (ts in Unix seconds) and webhook-signature.
// Keys are canonical, as http.Header.Set would store them. ts is the attempt
// time, so a retry gets a fresh timestamp and signature but the same id.
func (s *Signer) Headers(id string, ts time.Time, body []byte) http.Header {
	return http.Header{
		canonID:        {id},
		canonTimestamp: {strconv.FormatInt(ts.Unix(), 10)},
		canonSignature: {s.Sign(id, ts, body)},
	}
}
