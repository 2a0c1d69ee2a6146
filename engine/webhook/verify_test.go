package webhook_test

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/sidecar/sidecar/engine/webhook"
)

// The Standard Webhooks test vector (spec test suite, reference libraries).
const (
	vecSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vecID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vecTS     = 1614265330
	vecBody   = `{"test": 2432232314}`
	vecSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

	otherSecret = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24tdGVzdHM="
)

var vecNow = time.Unix(vecTS, 0)

// libSign signs with the reference library, so the inputs below do not come
// from the code under test.
func libSign(t testing.TB, secret, id string, ts time.Time, body string) string {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatalf("NewWebhook: %v", err)
	}
	sig, err := wh.Sign(id, ts, []byte(body))
	if err != nil {
		t.Fatalf("library Sign: %v", err)
	}
	return sig
}

func headers(id, ts, sig string) http.Header {
	h := http.Header{}
	if id != "" {
		h.Set(webhook.HeaderID, id)
	}
	if ts != "" {
		h.Set(webhook.HeaderTimestamp, ts)
	}
	if sig != "" {
		h.Set(webhook.HeaderSignature, sig)
	}
	return h
}

func frozenVerifier(t testing.TB, now time.Time, secrets ...string) *webhook.Verifier {
	t.Helper()
	v, err := webhook.NewVerifier(secrets, 5*time.Minute)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	v.SetClock(func() time.Time { return now })
	return v
}

func TestVerify(t *testing.T) {
	ts := strconv.FormatInt(vecTS, 10)
	at := func(d time.Duration) (string, string) {
		when := vecNow.Add(d)
		return strconv.FormatInt(when.Unix(), 10), libSign(t, vecSecret, vecID, when, vecBody)
	}
	tsOld, sigOld := at(-5*time.Minute - time.Second)
	tsNew, sigNew := at(5*time.Minute + time.Second)
	tsEdgeOld, sigEdgeOld := at(-5 * time.Minute)
	tsEdgeNew, sigEdgeNew := at(5 * time.Minute)
	y2000 := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	ts2000, sig2000 := strconv.FormatInt(y2000.Unix(), 10), libSign(t, vecSecret, vecID, y2000, vecBody)
	const junk = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
	dotID := "msg.1"
	dotSig := libSign(t, vecSecret, dotID, vecNow, vecBody)
	longID := strings.Repeat("a", webhook.MaxIDLen+1)

	tests := []struct {
		name    string
		h       http.Header
		body    string
		wantErr error
	}{
		{"spec vector", headers(vecID, ts, vecSig), vecBody, nil},
		{"spec vector, lower-case keys", http.Header{
			"webhook-id": {vecID}, "webhook-timestamp": {ts}, "webhook-signature": {vecSig},
		}, vecBody, nil},
		{"body one byte changed", headers(vecID, ts, vecSig), `{"test": 2432232315}`, webhook.ErrNoMatchingSignature},
		{"body with space removed", headers(vecID, ts, vecSig), `{"test":2432232314}`, webhook.ErrNoMatchingSignature},
		{"id changed", headers("msg_p5jXN8AQM9LWM0D4loKWxJeK", ts, vecSig), vecBody, webhook.ErrNoMatchingSignature},
		{"missing id", headers("", ts, vecSig), vecBody, webhook.ErrMissingHeader},
		{"missing timestamp", headers(vecID, "", vecSig), vecBody, webhook.ErrMissingHeader},
		{"missing signature", headers(vecID, ts, ""), vecBody, webhook.ErrMissingHeader},
		{"empty signature value", http.Header{
			"Webhook-Id": {vecID}, "Webhook-Timestamp": {ts}, "Webhook-Signature": {""},
		}, vecBody, webhook.ErrMissingHeader},
		{"timestamp not a number", headers(vecID, "abc", vecSig), vecBody, webhook.ErrBadTimestamp},
		{"timestamp with fraction", headers(vecID, ts+".5", vecSig), vecBody, webhook.ErrBadTimestamp},
		{"timestamp with sign", headers(vecID, "+"+ts, vecSig), vecBody, webhook.ErrBadTimestamp},
		{"timestamp negative", headers(vecID, "-1", vecSig), vecBody, webhook.ErrBadTimestamp},
		{"timestamp with space", headers(vecID, " "+ts, vecSig), vecBody, webhook.ErrBadTimestamp},
		{"timestamp overflows int64", headers(vecID, "9999999999999999999", vecSig), vecBody, webhook.ErrBadTimestamp},
		{"timestamp 20 digits", headers(vecID, "00000000001614265330", vecSig), vecBody, webhook.ErrBadTimestamp},
		{"now-5m-1s", headers(vecID, tsOld, sigOld), vecBody, webhook.ErrTimestampOutOfRange},
		{"now+5m+1s", headers(vecID, tsNew, sigNew), vecBody, webhook.ErrTimestampOutOfRange},
		{"now-5m exactly", headers(vecID, tsEdgeOld, sigEdgeOld), vecBody, nil},
		{"now+5m exactly", headers(vecID, tsEdgeNew, sigEdgeNew), vecBody, nil},
		{"year 2000, correctly signed", headers(vecID, ts2000, sig2000), vecBody, webhook.ErrTimestampOutOfRange},
		{"4 entries, one good", headers(vecID, ts,
			strings.Join([]string{junk, "v2," + strings.TrimPrefix(vecSig, "v1,"), vecSig, junk}, " ")), vecBody, nil},
		{"good entry among extra spaces", headers(vecID, ts, "  "+junk+"   "+vecSig+" "), vecBody, nil},
		{"good entry in a second header line", http.Header{
			"Webhook-Id": {vecID}, "Webhook-Timestamp": {ts}, "Webhook-Signature": {junk, vecSig},
		}, vecBody, nil},
		{"all bad", headers(vecID, ts, junk+" "+junk+" v1,"), vecBody, webhook.ErrNoMatchingSignature},
		{"right bytes under another version", headers(vecID, ts, "v1a,"+strings.TrimPrefix(vecSig, "v1,")), vecBody, webhook.ErrNoMatchingSignature},
		{"signature unpadded", headers(vecID, ts, strings.TrimSuffix(vecSig, "=")), vecBody, webhook.ErrNoMatchingSignature},
		{"signature without version", headers(vecID, ts, strings.TrimPrefix(vecSig, "v1,")), vecBody, webhook.ErrNoMatchingSignature},
		{"id with a dot, correctly signed", headers(dotID, ts, dotSig), vecBody, webhook.ErrInvalidID},
		{"id too long", headers(longID, ts, vecSig), vecBody, webhook.ErrInvalidID},
	}
	v := frozenVerifier(t, vecNow, vecSecret)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Verify(tc.h, []byte(tc.body))
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Verify() error = %v, want %v", err, tc.wantErr)
			}
			wantID := ""
			if tc.wantErr == nil {
				wantID = tc.h.Get(webhook.HeaderID)
				if wantID == "" {
					wantID = tc.h["webhook-id"][0]
				}
			}
			if id != wantID {
				t.Errorf("Verify() id = %q, want %q", id, wantID)
			}
		})
	}
}

func TestVerifyRotation(t *testing.T) {
	v := frozenVerifier(t, vecNow, otherSecret, vecSecret)
	ts := strconv.FormatInt(vecTS, 10)
	third := "whsec_dGhpcmQtc2VjcmV0LW5vdC1jb25maWd1cmVkLWhlcmU="
	tests := []struct {
		name    string
		secret  string
		wantErr error
	}{
		{"new secret", otherSecret, nil},
		{"old secret", vecSecret, nil},
		{"secret not configured", third, webhook.ErrNoMatchingSignature},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sig := libSign(t, tc.secret, vecID, vecNow, vecBody)
			_, err := v.Verify(headers(vecID, ts, sig), []byte(vecBody))
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Errorf("Verify(signed with %s) = %v, want %v", tc.name, err, tc.wantErr)
			}
		})
	}
	// A sender mid-rotation sends both signatures; either order verifies
	// against a receiver that knows only one of the secrets.
	both := libSign(t, third, vecID, vecNow, vecBody) + " " + libSign(t, otherSecret, vecID, vecNow, vecBody)
	onlyOther := frozenVerifier(t, vecNow, otherSecret)
	if _, err := onlyOther.Verify(headers(vecID, ts, both), []byte(vecBody)); err != nil {
		t.Errorf("Verify(two signatures, second known) = %v, want nil", err)
	}
}

func TestNewVerifierErrors(t *testing.T) {
	const leaky = "whsec_!!not-base64-but-secret!!"
	tests := []struct {
		name      string
		secrets   []string
		tolerance time.Duration
		wantIndex string // "" when no index applies
		wantIs    error
	}{
		{"no secrets", nil, 0, "", webhook.ErrInvalidSecret},
		{"empty entry", []string{vecSecret, ""}, 0, "secret 1", webhook.ErrInvalidSecret},
		{"missing prefix", []string{"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, 0, "secret 0", webhook.ErrInvalidSecret},
		{"not base64", []string{vecSecret, vecSecret, leaky}, 0, "secret 2", webhook.ErrInvalidSecret},
		{"empty key", []string{"whsec_"}, 0, "secret 0", webhook.ErrInvalidSecret},
		{"negative tolerance", []string{vecSecret}, -time.Second, "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := webhook.NewVerifier(tc.secrets, tc.tolerance)
			if err == nil {
				t.Fatalf("NewVerifier() = %v, nil; want error", v)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("NewVerifier() error = %v, want errors.Is %v", err, tc.wantIs)
			}
			if !strings.Contains(err.Error(), tc.wantIndex) {
				t.Errorf("NewVerifier() error = %q, want it to name %q", err, tc.wantIndex)
			}
			for _, s := range tc.secrets {
				if b64 := strings.TrimPrefix(s, webhook.SecretPrefix); len(b64) > 3 && strings.Contains(err.Error(), b64) {
					t.Errorf("NewVerifier() error %q leaks a secret", err)
				}
			}
		})
	}
}

func TestNewVerifierAccepts(t *testing.T) {
	tests := []struct {
		name   string
		secret string
	}{
		{"spec secret", vecSecret},
		{"unpadded base64", "whsec_" + strings.TrimRight(strings.TrimPrefix(otherSecret, "whsec_"), "=")},
		{"trailing newline", vecSecret + "\n"},
		{"one byte key", "whsec_AA=="},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := webhook.NewVerifier([]string{tc.secret}, 0); err != nil {
				t.Errorf("NewVerifier(%s) = %v, want nil", tc.name, err)
			}
		})
	}
}

func TestDefaultTolerance(t *testing.T) {
	v, err := webhook.NewVerifier([]string{vecSecret}, 0)
	if err != nil {
		t.Fatal(err)
	}
	ts := strconv.FormatInt(vecTS, 10)
	tests := []struct {
		name    string
		now     time.Time
		wantErr error
	}{
		{"4m59s later", vecNow.Add(webhook.DefaultTolerance - time.Second), nil},
		{"5m1s later", vecNow.Add(webhook.DefaultTolerance + time.Second), webhook.ErrTimestampOutOfRange},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v.SetClock(func() time.Time { return tc.now })
			_, err := v.Verify(headers(vecID, ts, vecSig), []byte(vecBody))
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Errorf("Verify() = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, http.StatusOK},
		{webhook.ErrMissingHeader, http.StatusBadRequest},
		{webhook.ErrInvalidID, http.StatusBadRequest},
		{webhook.ErrBadTimestamp, http.StatusBadRequest},
		{webhook.ErrTimestampOutOfRange, http.StatusUnauthorized},
		{webhook.ErrNoMatchingSignature, http.StatusUnauthorized},
		{errors.New("something else"), http.StatusInternalServerError},
	}
	for _, tc := range tests {
		if got := webhook.Status(tc.err); got != tc.want {
			t.Errorf("Status(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
	// Wrapped errors map the same way (Verify wraps ErrMissingHeader).
	v := frozenVerifier(t, vecNow, vecSecret)
	_, err := v.Verify(http.Header{}, nil)
	if got := webhook.Status(err); got != http.StatusBadRequest {
		t.Errorf("Status(%v) = %d, want 400", err, got)
	}
}

// FuzzVerify feeds arbitrary headers and bodies. Invariants: no panic; every
// error is one of the sentinels; success only when the header really carries
// the signature of (id, ts, body), which is recomputed with the reference
// library.
func FuzzVerify(f *testing.F) {
	ts := strconv.FormatInt(vecTS, 10)
	f.Add(vecID, ts, vecSig, []byte(vecBody))
	f.Add(vecID, ts, "v1,x v2,"+vecSig+" "+vecSig, []byte(vecBody))
	f.Add(vecID, ts, ",,, v1, v1,,"+vecSig, []byte(vecBody))
	f.Add("a.b", "1.2", "v1a,abc", []byte{})
	f.Add(vecID, "99999999999999999999", "  ", []byte("x"))
	f.Add("", "", "", []byte(nil))
	v := frozenVerifier(f, vecNow, vecSecret)
	sentinels := []error{webhook.ErrMissingHeader, webhook.ErrInvalidID, webhook.ErrBadTimestamp,
		webhook.ErrTimestampOutOfRange, webhook.ErrNoMatchingSignature}
	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte) {
		h := http.Header{"Webhook-Id": {id}, "Webhook-Timestamp": {ts}, "Webhook-Signature": {sig}}
		got, err := v.Verify(h, body)
		if err != nil {
			if got != "" {
				t.Fatalf("Verify() = %q, %v: id returned with an error", got, err)
			}
			for _, s := range sentinels {
				if errors.Is(err, s) {
					return
				}
			}
			t.Fatalf("Verify() error %v is not a sentinel", err)
		}
		if got != id {
			t.Fatalf("Verify() id = %q, want %q", got, id)
		}
		sec, perr := strconv.ParseInt(ts, 10, 64)
		if perr != nil || strconv.FormatInt(sec, 10) != ts {
			// Verify signs ts as received; the library formats it. They
			// agree only for canonical decimal, which a sender produces.
			return
		}
		want := libSign(t, vecSecret, id, time.Unix(sec, 0), string(body))
		if !strings.Contains(" "+sig+" ", " "+want+" ") {
			t.Fatalf("Verify(%q, %q, %q) accepted without the true signature %q", id, ts, sig, want)
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	body := []byte(`{"type":"booking.created","timestamp":"2026-01-01T00:00:00Z","data":{"id":"b_1","providerId":"u_2","customerName":"Ann","serviceName":"Cut"}}`)
	ts := strconv.FormatInt(vecTS, 10)
	for _, bc := range []struct {
		name    string
		secrets []string
		sig     string
	}{
		{"one secret", []string{vecSecret}, libSign(b, vecSecret, vecID, vecNow, string(body))},
		{"rotation, match on second", []string{otherSecret, vecSecret},
			"v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= " + libSign(b, vecSecret, vecID, vecNow, string(body))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			v := frozenVerifier(b, vecNow, bc.secrets...)
			h := headers(vecID, ts, bc.sig)
			if _, err := v.Verify(h, body); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := v.Verify(h, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
