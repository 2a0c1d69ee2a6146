package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"testing"
)

func TestAPIKeys(t *testing.T) {
	sum := sha256.Sum256([]byte("hashed-key-0123456789"))
	digest := hex.EncodeToString(sum[:])
	ks, err := parseAPIKeys([]string{"clear-key-0123456789", "sha256:" + digest, "SHA256:not-a-prefix"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key  string
		want bool
	}{
		{"clear-key-0123456789", true},
		{"hashed-key-0123456789", true},
		{"sha256:" + digest, false},   // the digest is not the key
		{"SHA256:not-a-prefix", true}, // only "sha256:" in lower case is a digest
		{"clear-key-012345678", false},
		{"", false},
	} {
		if got := ks.match(tc.key); got != tc.want {
			t.Errorf("match(%q) = %v, want %v", tc.key, got, tc.want)
		}
	}
	for _, bad := range []string{"sha256:", "sha256:abc", "sha256:" + digest[:63] + "z"} {
		if _, err := parseAPIKeys([]string{bad}); err == nil {
			t.Errorf("parseAPIKeys(%q) = nil error", bad)
		}
	}
}

// A hashed key in the config opens /api/* with the key itself.
func TestHashedAPIKeyOpensTheAPI(t *testing.T) {
	sum := sha256.Sum256([]byte("ops-key-0123456789"))
	n := startNode(t, func(c *Config) { c.APIKeys = []string{"sha256:" + hex.EncodeToString(sum[:])} })
	if status, _ := n.request("GET", "/api/socket-test/stats", "Bearer ops-key-0123456789", nil); status != http.StatusOK {
		t.Errorf("the key of a sha256: entry: %d, want 200", status)
	}
	if status, _ := n.request("GET", "/api/socket-test/stats", "Bearer sha256:"+hex.EncodeToString(sum[:]), nil); status != http.StatusUnauthorized {
		t.Errorf("the digest itself: %d, want 401", status)
	}
}

func BenchmarkAPIKeyMatch(b *testing.B) {
	ks, _ := parseAPIKeys([]string{"a-0123456789", "b-0123456789", "c-0123456789"})
	b.ReportAllocs()
	for b.Loop() {
		ks.match("c-0123456789")
	}
}
