package webhook_test

import (
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/sidecar/sidecar/engine/webhook"
)

func TestSignSpecVector(t *testing.T) {
	s, err := webhook.NewSigner(vecSecret)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Sign(vecID, vecNow, []byte(vecBody)); got != vecSig {
		t.Errorf("Sign(spec vector) = %q, want %q", got, vecSig)
	}
}

// TestSignMatchesLibrary cross-checks Sign against the reference library on
// inputs other than the vector.
func TestSignMatchesLibrary(t *testing.T) {
	tests := []struct {
		name   string
		secret string
		id     string
		ts     time.Time
		body   string
	}{
		{"vector", vecSecret, vecID, vecNow, vecBody},
		{"empty body", vecSecret, "msg_1", time.Unix(1, 0), ""},
		{"binary body", otherSecret, "evt_Z", time.Unix(1700000000, 999), "\x00\xff\n."},
		{"large body", otherSecret, "evt_large", time.Unix(2000000000, 0), string(make([]byte, 1<<16))},
		{"unicode id", vecSecret, "évènement-1", time.Unix(1614265330, 0), `{"a":"ü"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := webhook.NewSigner(tc.secret)
			if err != nil {
				t.Fatal(err)
			}
			got := s.Sign(tc.id, tc.ts, []byte(tc.body))
			if want := libSign(t, tc.secret, tc.id, tc.ts, tc.body); got != want {
				t.Errorf("Sign() = %q, library says %q", got, want)
			}
		})
	}
}

// TestHeadersVerify: what a Signer sends, our Verifier and the reference
// library both accept.
func TestHeadersVerify(t *testing.T) {
	s, err := webhook.NewSigner(otherSecret)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	body := []byte(`{"event":"booking.update","data":{"id":7}}`)
	h := s.Headers("fwd_01", now, body)

	if got := h.Get(webhook.HeaderTimestamp); got != strconv.FormatInt(now.Unix(), 10) {
		t.Errorf("Headers() timestamp = %q, want %d", got, now.Unix())
	}
	if got := h.Get(webhook.HeaderID); got != "fwd_01" {
		t.Errorf("Headers() id = %q, want fwd_01", got)
	}
	v := frozenVerifier(t, now, otherSecret)
	if id, err := v.Verify(h, body); err != nil || id != "fwd_01" {
		t.Errorf("Verify(Headers()) = %q, %v; want fwd_01, nil", id, err)
	}
	lib, err := standardwebhooks.NewWebhook(otherSecret)
	if err != nil {
		t.Fatal(err)
	}
	if err := lib.Verify(body, h); err != nil {
		t.Errorf("library Verify(Headers()) = %v", err)
	}
	body[0] = '['
	if _, err := v.Verify(h, body); !errors.Is(err, webhook.ErrNoMatchingSignature) {
		t.Errorf("Verify(tampered body) = %v, want ErrNoMatchingSignature", err)
	}
}

func TestNewSignerErrors(t *testing.T) {
	for _, secret := range []string{"", "whsec_", "plain", "whsec_%%%"} {
		if _, err := webhook.NewSigner(secret); !errors.Is(err, webhook.ErrInvalidSecret) {
			t.Errorf("NewSigner(%q) = %v, want ErrInvalidSecret", secret, err)
		}
	}
}

func BenchmarkSign(b *testing.B) {
	s, err := webhook.NewSigner(vecSecret)
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(`{"event":"booking.update","data":{"id":7,"status":"confirmed"}}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		_ = s.Headers(vecID, vecNow, body)
	}
}

// The headers a Signer produces must survive a round trip through net/http's
// canonicalisation, which the forwarder relies on.
func TestHeadersCanonical(t *testing.T) {
	s, err := webhook.NewSigner(vecSecret)
	if err != nil {
		t.Fatal(err)
	}
	h := s.Headers(vecID, vecNow, []byte(vecBody))
	req, err := http.NewRequest(http.MethodPost, "http://x", nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range h {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if got := req.Header.Get(webhook.HeaderSignature); got != vecSig {
		t.Errorf("request signature header = %q, want %q", got, vecSig)
	}
}
