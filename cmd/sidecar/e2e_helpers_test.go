package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sidecar/sidecar/engine/webhook"
)

func newTestSigner() (*webhook.Signer, error) {
	return webhook.NewSigner("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
}

// verifyWith checks Standard Webhooks headers with secret, now.
func verifyWith(secret string, h http.Header, body []byte) error {
	v, err := webhook.NewVerifier([]string{secret}, 5*time.Minute)
	if err != nil {
		return err
	}
	_, err = v.Verify(h, body)
	return err
}

// httptestServer starts an app stand-in and returns its base URL.
func httptestServer(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.URL
}
