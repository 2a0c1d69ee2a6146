package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/sidecar/sidecar/engine/auth"
	"github.com/sidecar/sidecar/engine/webhook"
)

// secretWarnings reports secrets that work but should not go to production.
func (c *Config) secretWarnings() []string {
	var w []string
	switch {
	case c.Auth.JWTSecret == devJWTSecret:
		w = append(w, "using the development secret; set JWT_SECRET")
	case c.Auth.JWTSecret != "" && len(c.Auth.JWTSecret) < 32 && c.usesHMAC():
		w = append(w, "auth.jwt_secret is shorter than 32 bytes; HS256 wants a random secret of at least 32 bytes")
	}
	if u, err := url.Parse(c.Auth.JWKSURL); err == nil && u.Scheme == "http" && !isLoopback(u.Hostname()) {
		w = append(w, "auth.jwks_url is plain http: whoever sits on the path can hand the sidecar their own keys; use https")
	}
	if slices.Contains(c.Webhooks.Secrets, devWebhookSecret) {
		w = append(w, "using the development webhook secret; set WEBHOOK_SECRET")
	}
	if len(c.Webhooks.Secrets) == 0 {
		w = append(w, "webhooks.secrets is empty: every webhook will be rejected")
	}
	return w
}

func (c *Config) usesHMAC() bool {
	algs := c.Auth.Algorithms
	if len(algs) == 0 {
		algs = []string{"HS256"}
	}
	for _, a := range algs {
		if strings.HasPrefix(a, "HS") {
			return true
		}
	}
	return false
}

// verifierConfig is the auth.Config for these settings.
func (c Auth) VerifierConfig() auth.Config {
	var secret []byte
	if c.JWTSecret != "" {
		secret = []byte(c.JWTSecret)
	}
	return auth.Config{
		Secret:         secret,
		Algorithms:     c.Algorithms,
		PublicKeyFiles: c.PublicKeyFile,
		JWKSURL:        c.JWKSURL,
		JWKSRefresh:    c.JWKSRefresh,
		JWKSMinRefresh: c.JWKSMinRefresh,
		JWKSTimeout:    c.JWKSTimeout,
		UserClaim:      c.UserClaim,
		Issuer:         c.Issuer,
		Audience:       c.Audience,
		Leeway:         c.Leeway,
		MaxTokenBytes:  c.MaxTokenBytes,
	}
}

// Validate checks every setting and returns all problems at once, each
// naming its key. It builds an auth verifier to check the algorithms and
// read the public key file, so a bad key fails here and not at the first
// connection. Secret values never appear in its errors.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	positive := func(key string, n int64) {
		if n <= 0 {
			bad(key, "must be positive, got %d", n)
		}
	}
	positiveDur := func(key string, d time.Duration) {
		if d <= 0 {
			bad(key, "must be positive, got %s", d)
		}
	}
	oneOf := func(key, val string, allowed ...string) {
		if !slices.Contains(allowed, val) {
			bad(key, "must be one of %s, got %q", strings.Join(allowed, ", "), val)
		}
	}

	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "%q is not host:port (e.g. \":8080\")", c.Listen)
	}
	oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	oneOf("log.format", c.Log.Format, "text", "json")

	nAuth := len(errs)
	if c.Auth.JWTSecret == "" && c.usesHMAC() {
		bad("auth.jwt_secret", "required when auth.algorithms allows HS256/HS384/HS512; set JWT_SECRET or %s", envName("auth.jwt_secret"))
	}
	if c.Auth.Leeway < 0 || c.Auth.Leeway > auth.MaxLeeway {
		bad("auth.leeway", "must be between 0s and %s, got %s", auth.MaxLeeway, c.Auth.Leeway)
	}
	positive("auth.max_token_bytes", int64(c.Auth.MaxTokenBytes))
	if u := c.Auth.JWKSURL; u != "" {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			bad("auth.jwks_url", "must be an https:// (or http://) URL of a JWKS document, not %q", u)
		}
	}
	if d := c.Auth.JWKSRefresh; d < auth.MinJWKSMaxAge || d > auth.MaxJWKSMaxAge {
		bad("auth.jwks_refresh", "must be between %s and %s, got %s", auth.MinJWKSMaxAge, auth.MaxJWKSMaxAge, d)
	}
	if d := c.Auth.JWKSMinRefresh; d < time.Second || d > time.Hour {
		bad("auth.jwks_min_refresh", "must be between 1s and 1h, got %s", d)
	}
	if d := c.Auth.JWKSTimeout; d <= 0 || d > time.Minute {
		bad("auth.jwks_timeout", "must be positive and at most 1m, got %s", d)
	}
	for i, f := range c.Auth.PublicKeyFile {
		if strings.TrimSpace(f) == "" {
			bad(fmt.Sprintf("auth.public_key_file[%d]", i), "is empty")
		}
	}
	for i, o := range c.Auth.Origins {
		if strings.TrimSpace(o) == "" {
			bad(fmt.Sprintf("auth.origins[%d]", i), "is empty")
		}
	}
	if len(errs) == nAuth {
		if _, err := auth.New(c.Auth.VerifierConfig()); err != nil {
			errs = append(errs, err)
		}
	}

	if strings.TrimSpace(c.API.AdminIf) == "" {
		bad("api.admin_if", "must not be empty (default: %s)", Default().API.AdminIf)
	}
	for i, key := range c.API.Keys {
		if key == "" || strings.ContainsFunc(key, unicode.IsSpace) {
			bad(fmt.Sprintf("api.keys[%d]", i), "must be non-empty with no spaces")
		} else if d, ok := strings.CutPrefix(key, "sha256:"); ok && !isHexDigest(d) {
			bad(fmt.Sprintf("api.keys[%d]", i), "sha256: must be followed by the 64 hex digits of the key's SHA-256 (echo -n KEY | sha256sum)")
		}
	}

	for i, s := range c.Webhooks.Secrets {
		if _, err := webhook.ParseSecret(s); err != nil {
			bad(fmt.Sprintf("webhooks.secrets[%d]", i), "%v", err)
		}
	}
	positive("webhooks.max_body_bytes", c.Webhooks.MaxBodyBytes)
	positiveDur("webhooks.tolerance", c.Webhooks.Tolerance)
	if c.Webhooks.DedupTTL < MinDedupTTL {
		bad("webhooks.dedup_ttl", "must be at least 24h (the contract remembers a webhook-id at least 24 h), got %s", c.Webhooks.DedupTTL)
	}
	positive("webhooks.concurrency", int64(c.Webhooks.Concurrency))

	if c.Forward.Secret != "" {
		if _, err := webhook.ParseSecret(c.Forward.Secret); err != nil {
			bad("forward.secret", "%v", err)
		}
	}
	positiveDur("forward.timeout", c.Forward.Timeout)
	positiveDur("forward.retry_horizon", c.Forward.RetryHorizon)
	positiveDur("forward.initial_backoff", c.Forward.InitialBackoff)
	if c.Forward.MaxBackoff < c.Forward.InitialBackoff {
		bad("forward.max_backoff", "%s is less than forward.initial_backoff %s", c.Forward.MaxBackoff, c.Forward.InitialBackoff)
	}
	positive("forward.concurrency", int64(c.Forward.Concurrency))
	positive("forward.max_pending", int64(c.Forward.MaxPending))
	positive("forward.max_pending_bytes", c.Forward.MaxPendingBytes)
	positive("forward.max_pending_per_user", c.Forward.MaxPendingPerUser)
	if c.Forward.MaxPendingPerUser > c.Forward.MaxPendingBytes && c.Forward.MaxPendingBytes > 0 {
		bad("forward.max_pending_per_user", "%d is more than forward.max_pending_bytes %d", c.Forward.MaxPendingPerUser, c.Forward.MaxPendingBytes)
	}

	if c.Rules.File == "" {
		bad("rules.file", "must not be empty")
	}
	positiveDur("rules.timeout", c.Rules.Timeout)
	positive("rules.max_cost", int64(c.Rules.MaxCost))
	positive("rules.max_memory", int64(c.Rules.MaxMemory))
	if c.Rules.Workers < 0 {
		bad("rules.workers", "must not be negative (0: 2 × GOMAXPROCS), got %d", c.Rules.Workers)
	}
	if c.Store.Path == "" {
		bad("store.path", `must not be empty (":memory:" keeps nothing)`)
	}
	oneOf("store.sync", c.Store.Sync, "always", "everysecond", "never")
	for key, d := range map[string]time.Duration{"socketio.ping_interval": c.SocketIO.PingInterval, "socketio.ping_timeout": c.SocketIO.PingTimeout} {
		if d < time.Second {
			bad(key, "at least 1s (the connections' timers tick once a second), got %s", d)
		}
	}
	positiveDur("socketio.connect_timeout", c.SocketIO.ConnectTimeout)
	positive("socketio.max_payload", int64(c.SocketIO.MaxPayload))
	if c.Presence.Grace < 0 {
		bad("presence.grace", "must not be negative, got %s", c.Presence.Grace)
	}
	positive("presence.max_watch", int64(c.Presence.MaxWatch))
	positive("presence.max_status_bytes", int64(c.Presence.MaxStatusBytes))
	positive("presence.max_query_users", int64(c.Presence.MaxQueryUsers))
	for _, s := range c.Presence.Statuses {
		if s == "" || len(s) > c.Presence.MaxStatusBytes {
			bad("presence.statuses", "%q: a status must be 1 to presence.max_status_bytes (%d) bytes", s, c.Presence.MaxStatusBytes)
		}
	}
	if c.Replay.MaxEvents < 0 {
		bad("replay.max_events", "must not be negative (0: no replay), got %d", c.Replay.MaxEvents)
	}
	if c.Replay.MaxEvents > 0 && c.Replay.TTL <= 0 {
		bad("replay.ttl", "must be positive, got %s", c.Replay.TTL)
	}
	for _, key := range []struct {
		name  string
		globs []string
	}{{"replay.events", c.Replay.Events}, {"replay.exclude", c.Replay.Exclude}} {
		for _, g := range key.globs {
			if _, err := path.Match(g, ""); err != nil {
				bad(key.name, "%q is not a valid glob: %v", g, err)
			}
		}
	}
	if c.Broker.RedisURL != "" {
		// The URL may hold a password: never print it.
		if u, err := url.Parse(c.Broker.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			bad("broker.redis_url", "must be redis://host:port or rediss://host:port")
		}
	}
	if b := c.Broker; b.OnUnavailable != "start" && b.OnUnavailable != "refuse" {
		bad("broker.on_unavailable", "must be start or refuse, not %q", b.OnUnavailable)
	}
	if strings.ContainsAny(c.Broker.Prefix, "{} ") || c.Broker.Prefix == "" {
		bad("broker.prefix", "must be a non-empty word without braces or spaces, not %q", c.Broker.Prefix)
	}
	if strings.ContainsAny(c.Broker.NodeID, "{} :") {
		bad("broker.node_id", "must have no braces, spaces or colons, not %q", c.Broker.NodeID)
	}
	if a := c.Broker.AdvertiseURL; a != "" {
		if u, err := url.Parse(a); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			bad("broker.advertise_url", "must be http://host:port or https://host:port, not %q", a)
		}
	}
	positiveDur("broker.heartbeat_interval", c.Broker.HeartbeatInterval)
	positive("broker.publish_queue", int64(c.Broker.PublishQueue))
	if c.Broker.NodeTimeout < 2*c.Broker.HeartbeatInterval {
		bad("broker.node_timeout", "must be at least twice broker.heartbeat_interval (%s), not %s", c.Broker.HeartbeatInterval, c.Broker.NodeTimeout)
	}

	l := c.Limits
	positive("limits.max_connections", int64(l.MaxConnections))
	positive("limits.max_message_bytes", int64(l.MaxMessageBytes))
	positive("limits.outbound_queue_bytes", int64(l.OutboundQueueBytes))
	positiveDur("limits.write_timeout", l.WriteTimeout)
	positiveDur("limits.handshake_timeout", l.HandshakeTimeout)
	positiveDur("limits.ping_interval", l.PingInterval)
	if l.IdleTimeout <= l.PingInterval {
		bad("limits.idle_timeout", "%s must be longer than limits.ping_interval %s", l.IdleTimeout, l.PingInterval)
	}
	if l.ClientEventsPerSecond < 0 {
		bad("limits.client_events_per_second", "must not be negative (0: no limit), got %d", l.ClientEventsPerSecond)
	}
	switch {
	case l.ClientEventsBurst < 0:
		bad("limits.client_events_burst", "must not be negative, got %d", l.ClientEventsBurst)
	case l.ClientEventsPerSecond > 0 && l.ClientEventsBurst < l.ClientEventsPerSecond:
		bad("limits.client_events_burst", "%d is less than limits.client_events_per_second %d", l.ClientEventsBurst, l.ClientEventsPerSecond)
	}
	positiveDur("limits.close_timeout", l.CloseTimeout)
	if l.SendBufferBytes < 0 {
		bad("limits.send_buffer_bytes", "must not be negative (0: the kernel's default), got %d", l.SendBufferBytes)
	}
	if l.ConnectionsPerIPPerSecond < 0 {
		bad("limits.connections_per_ip_per_second", "must not be negative (0: no limit), got %d", l.ConnectionsPerIPPerSecond)
	}
	if l.Workers < 0 {
		bad("limits.workers", "must not be negative (0: 4 × GOMAXPROCS), got %d", l.Workers)
	}
	return errors.Join(errs...)
}

// isHexDigest reports whether s is 64 hex digits: a SHA-256 digest.
func isHexDigest(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return false
		}
	}
	return true
}

// isLoopback reports whether host is localhost or a loopback address.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
