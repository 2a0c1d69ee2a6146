package config

import (
	"testing"

	"github.com/sidecar/sidecar/engine/auth"
	"github.com/sidecar/sidecar/engine/forward"
	"github.com/sidecar/sidecar/engine/webhook"
	"github.com/sidecar/sidecar/rules"
)

// TestDefaultsAgreeWithPackages: where a package says what its zero value
// means (forward.DefaultTimeout, ...), config's default is that value, so
// a key left out of the file and a field left zero behave alike.
func TestDefaultsAgreeWithPackages(t *testing.T) {
	d := Default()
	tests := []struct {
		key       string
		got, want any
	}{
		{"auth.leeway", d.Auth.Leeway, auth.DefaultLeeway},
		{"auth.jwks_refresh", d.Auth.JWKSRefresh, auth.DefaultJWKSRefresh},
		{"auth.jwks_min_refresh", d.Auth.JWKSMinRefresh, auth.DefaultJWKSMinRefresh},
		{"auth.jwks_timeout", d.Auth.JWKSTimeout, auth.DefaultJWKSTimeout},
		{"auth.max_token_bytes", d.Auth.MaxTokenBytes, auth.DefaultMaxTokenBytes},
		{"webhooks.tolerance", d.Webhooks.Tolerance, webhook.DefaultTolerance},
		{"forward.timeout", d.Forward.Timeout, forward.DefaultTimeout},
		{"forward.retry_horizon", d.Forward.RetryHorizon, forward.DefaultRetryHorizon},
		{"forward.initial_backoff", d.Forward.InitialBackoff, forward.DefaultInitialBackoff},
		{"forward.max_backoff", d.Forward.MaxBackoff, forward.DefaultMaxBackoff},
		{"forward.concurrency", d.Forward.Concurrency, forward.DefaultConcurrency},
		{"forward.max_pending", d.Forward.MaxPending, forward.DefaultMaxPending},
		{"rules.timeout", d.Rules.Timeout, rules.DefaultTimeout},
		{"rules.max_cost", d.Rules.MaxCost, rules.DefaultMaxCost},
		{"rules.max_memory", d.Rules.MaxMemory, rules.DefaultMaxMemory},
		{"forward.max_pending_bytes", d.Forward.MaxPendingBytes, int64(forward.DefaultMaxPendingBytes)},
		{"forward.max_pending_per_user", d.Forward.MaxPendingPerUser, int64(forward.DefaultMaxPendingPerUser)},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("Default() %s = %v, want the package's %v", tc.key, tc.got, tc.want)
			}
		})
	}
}
