// Package config is the sidecar's configuration: the Config struct, its
// defaults, the loader (defaults, then the YAML file, then SIDECAR_
// environment variables) and validation. The keys are the contract
// (docs/DESIGN.md); config.example.yaml documents every one, and a test
// keeps the file and the struct in step.
package config

import (
	"time"

	"github.com/sidecar/sidecar/engine"
	"github.com/sidecar/sidecar/engine/auth"
	"github.com/sidecar/sidecar/engine/cluster"
	"github.com/sidecar/sidecar/engine/forward"
	"github.com/sidecar/sidecar/engine/webhook"
	"github.com/sidecar/sidecar/rules"
)

// Config is the whole configuration file. Field names and koanf tags are the
// contract (docs/DESIGN.md); config.example.yaml documents every key and a
// test keeps the two in step.
type Config struct {
	Listen   string   `koanf:"listen"`
	Log      Log      `koanf:"log"`
	Auth     Auth     `koanf:"auth"`
	API      API      `koanf:"api"`
	Webhooks Webhooks `koanf:"webhooks"`
	Forward  Forward  `koanf:"forward"`
	Rules    Rules    `koanf:"rules"`
	Store    Store    `koanf:"store"`
	Presence Presence `koanf:"presence"`
	Replay   Replay   `koanf:"replay"`
	SocketIO SocketIO `koanf:"socketio"`
	Broker   Broker   `koanf:"broker"`
	Limits   Limits   `koanf:"limits"`
}

// Log is the log section: the process logger.
type Log struct {
	Level  string `koanf:"level"`  // debug, info, warn, error
	Format string `koanf:"format"` // text or json
}

// Auth is the auth section: how tokens are checked.
type Auth struct {
	JWTSecret  string   `koanf:"jwt_secret"`
	Algorithms []string `koanf:"algorithms"`
	// PublicKeyFile is one path or a list of them; each file's kid is its
	// name without the extension.
	PublicKeyFile []string `koanf:"public_key_file"`
	// JWKSURL is an identity provider's JWKS document; JWKSRefresh the
	// interval between fetches when the response has no Cache-Control
	// max-age; JWKSMinRefresh the window of at most one early fetch for a
	// token with an unknown kid; JWKSTimeout bounds one fetch.
	JWKSURL        string        `koanf:"jwks_url"`
	JWKSRefresh    time.Duration `koanf:"jwks_refresh"`
	JWKSMinRefresh time.Duration `koanf:"jwks_min_refresh"`
	JWKSTimeout    time.Duration `koanf:"jwks_timeout"`
	UserClaim      string        `koanf:"user_claim"` // empty: sub, then id, then userId
	Issuer         string        `koanf:"issuer"`
	Audience       string        `koanf:"audience"`
	Leeway         time.Duration `koanf:"leeway"`
	Origins        []string      `koanf:"origins"`
	MaxTokenBytes  int           `koanf:"max_token_bytes"`
}

// API is the api section: who may call /api/*.
type API struct {
	AdminIf string   `koanf:"admin_if"`
	Keys    []string `koanf:"keys"`
}

// Webhooks is the webhooks section: the app's signed events in.
type Webhooks struct {
	Secrets      []string      `koanf:"secrets"`
	MaxBodyBytes int64         `koanf:"max_body_bytes"`
	Tolerance    time.Duration `koanf:"tolerance"`
	DedupTTL     time.Duration `koanf:"dedup_ttl"`
	Concurrency  int           `koanf:"concurrency"` // webhooks in the pipeline at once; beyond it: 429
}

// Forward is outbound delivery to the app (the forward action).
type Forward struct {
	Secret         string        `koanf:"secret"` // whsec_ secret that signs outbound requests
	Timeout        time.Duration `koanf:"timeout"`
	RetryHorizon   time.Duration `koanf:"retry_horizon"`
	InitialBackoff time.Duration `koanf:"initial_backoff"`
	MaxBackoff     time.Duration `koanf:"max_backoff"`
	Concurrency    int           `koanf:"concurrency"`
	// The outbox caps: queued items, queued body bytes, and one user's
	// share of those bytes.
	MaxPending        int   `koanf:"max_pending"`
	MaxPendingBytes   int64 `koanf:"max_pending_bytes"`
	MaxPendingPerUser int64 `koanf:"max_pending_per_user"`
}

// Rules is the rules section: the rules file and how rules run.
type Rules struct {
	File    string        `koanf:"file"`     // relative paths are relative to the config file
	Watch   bool          `koanf:"watch"`    // reload when the file changes (SIGHUP always reloads)
	Timeout time.Duration `koanf:"timeout"`  // deadline of one rule's evaluation
	MaxCost int           `koanf:"max_cost"` // operation budget of one rule's evaluation
	// MaxMemory is expr's memory budget of one expression evaluation, in
	// items of the ranges, lists and maps it builds.
	MaxMemory int `koanf:"max_memory"`
	Workers   int `koanf:"workers"` // goroutines running rules for client and lifecycle events; 0: 2 × GOMAXPROCS
	// AllowEmpty lets an empty rules list load (rules.Options.AllowEmpty);
	// without it "rules: []" stops the start-up and a reload to it is
	// refused, since it would turn off all routing.
	AllowEmpty bool `koanf:"allow_empty"`
}

// Store is the store section: the buntdb file.
type Store struct {
	Path string `koanf:"path"` // ":memory:" keeps nothing; relative to the config file
	Sync string `koanf:"sync"` // always, everysecond, never
}

// Presence is the presence section.
type Presence struct {
	Grace          time.Duration `koanf:"grace"`
	MaxWatch       int           `koanf:"max_watch"`        // users one connection may watch
	Statuses       []string      `koanf:"statuses"`         // allowed statuses; empty: free text
	MaxStatusBytes int           `koanf:"max_status_bytes"` // longest status
	MaxQueryUsers  int           `koanf:"max_query_users"`  // users per GET /api/presence?users=
}

// Replay is the replay section: the missed-event streams.
type Replay struct {
	MaxEvents int           `koanf:"max_events"` // per stream (user, room, everyone); 0: no replay
	TTL       time.Duration `koanf:"ttl"`        // how long an event is kept
	Events    []string      `koanf:"events"`     // event names kept (globs); empty: all
	Exclude   []string      `koanf:"exclude"`    // event names never kept (globs)
}

// SocketIO is the socketio section: the Engine.IO timers and limit of
// /socket.io/, socket.io's own defaults.
type SocketIO struct {
	PingInterval   time.Duration `koanf:"ping_interval"`
	PingTimeout    time.Duration `koanf:"ping_timeout"`
	MaxPayload     int           `koanf:"max_payload"`
	ConnectTimeout time.Duration `koanf:"connect_timeout"`
}

// Broker is the broker section: one node or several.
type Broker struct {
	RedisURL string `koanf:"redis_url"`
	// OnUnavailable is what a node does when Redis does not answer at
	// start: "start" alone (degraded) and join when it answers, or "refuse".
	OnUnavailable     string        `koanf:"on_unavailable"`
	NodeID            string        `koanf:"node_id"` // empty: host-pid-random
	Prefix            string        `koanf:"prefix"`  // of Redis keys and channels
	HeartbeatInterval time.Duration `koanf:"heartbeat_interval"`
	NodeTimeout       time.Duration `koanf:"node_timeout"`  // a node silent this long is dead: its users go offline
	PublishQueue      int           `koanf:"publish_queue"` // envelopes waiting for Redis; past it, dropped and counted
	// AdvertiseURL is where the other nodes reach this one, to relay the
	// requests of its Socket.IO polling sessions. Empty: derived from listen.
	AdvertiseURL string `koanf:"advertise_url"`
}

// Limits is the limits section: what one node and one connection may use.
type Limits struct {
	MaxConnections            int           `koanf:"max_connections"`
	MaxMessageBytes           int           `koanf:"max_message_bytes"`
	OutboundQueueBytes        int           `koanf:"outbound_queue_bytes"`
	WriteTimeout              time.Duration `koanf:"write_timeout"`
	HandshakeTimeout          time.Duration `koanf:"handshake_timeout"`
	PingInterval              time.Duration `koanf:"ping_interval"`
	IdleTimeout               time.Duration `koanf:"idle_timeout"`
	ClientEventsPerSecond     int           `koanf:"client_events_per_second"` // per connection; 0: no limit
	ConnectionsPerIPPerSecond int           `koanf:"connections_per_ip_per_second"`
	Workers                   int           `koanf:"workers"` // read workers; 0: 4 × GOMAXPROCS
	ClientEventsBurst         int           `koanf:"client_events_burst"`
	CloseTimeout              time.Duration `koanf:"close_timeout"`
	SendBufferBytes           int           `koanf:"send_buffer_bytes"` // SO_SNDBUF; 0: the kernel's default
}

// Default is the configuration with every default filled in. The
// config file and the environment override it. Where a package defines
// what its zero value means (forward.DefaultTimeout, auth.DefaultLeeway,
// ...), the default is that constant, so the two cannot drift, and a test
// keeps it so. The engine's Limits defaults are not exported yet, so
// limits.* are still literals here.
func Default() Config {
	el, wl, sl := engine.DefaultLimits(), engine.DefaultWebhookLimits(), engine.DefaultSocketIO()
	bd := cluster.Defaults()
	return Config{
		Listen: ":8080",
		Log:    Log{Level: "info", Format: "text"},
		Auth: Auth{
			Algorithms:     []string{"HS256"},
			JWKSRefresh:    auth.DefaultJWKSRefresh,
			JWKSMinRefresh: auth.DefaultJWKSMinRefresh,
			JWKSTimeout:    auth.DefaultJWKSTimeout,
			Leeway:         auth.DefaultLeeway,
			MaxTokenBytes:  auth.DefaultMaxTokenBytes,
		},
		API: API{AdminIf: `claims.role == "admin"`},
		Webhooks: Webhooks{
			MaxBodyBytes: wl.MaxBodyBytes,
			Tolerance:    webhook.DefaultTolerance,
			DedupTTL:     MinDedupTTL,
			Concurrency:  wl.Concurrency,
		},
		Forward: Forward{
			Timeout:           forward.DefaultTimeout,
			RetryHorizon:      forward.DefaultRetryHorizon,
			InitialBackoff:    forward.DefaultInitialBackoff,
			MaxBackoff:        forward.DefaultMaxBackoff,
			Concurrency:       forward.DefaultConcurrency,
			MaxPending:        forward.DefaultMaxPending,
			MaxPendingBytes:   forward.DefaultMaxPendingBytes,
			MaxPendingPerUser: forward.DefaultMaxPendingPerUser,
		},
		Rules: Rules{
			File:      "rules.yaml",
			Watch:     true,
			Timeout:   rules.DefaultTimeout,
			MaxCost:   rules.DefaultMaxCost,
			MaxMemory: rules.DefaultMaxMemory,
		},
		Store:    Store{Path: "sidecar.db", Sync: "everysecond"},
		Presence: Presence{Grace: 3 * time.Second, MaxWatch: 1000, MaxStatusBytes: 64, MaxQueryUsers: 100},
		Replay: Replay{
			MaxEvents: 100,
			TTL:       24 * time.Hour,
			Events:    []string{"*"},
			Exclude:   []string{"userTyping", "userOnline", "userOffline", "statusUpdated"},
		},
		Broker: Broker{
			OnUnavailable:     "start",
			Prefix:            bd.Prefix,
			HeartbeatInterval: bd.Heartbeat,
			NodeTimeout:       bd.NodeTimeout,
			PublishQueue:      bd.PublishQueue,
		},
		SocketIO: SocketIO{
			PingInterval:   sl.PingInterval,
			PingTimeout:    sl.PingTimeout,
			MaxPayload:     sl.MaxPayload,
			ConnectTimeout: sl.ConnectTimeout,
		},
		Limits: Limits{
			MaxConnections:            el.MaxConnections,
			MaxMessageBytes:           el.MaxMessageBytes,
			OutboundQueueBytes:        el.OutboundQueueBytes,
			WriteTimeout:              el.WriteTimeout,
			HandshakeTimeout:          el.HandshakeTimeout,
			PingInterval:              el.PingInterval,
			IdleTimeout:               el.IdleTimeout,
			ClientEventsPerSecond:     el.ClientEventsPerSecond,
			ConnectionsPerIPPerSecond: el.ConnectionsPerIPPerSecond,
			ClientEventsBurst:         el.ClientEventsBurst,
			CloseTimeout:              el.CloseTimeout,
			SendBufferBytes:           el.SendBufferBytes,
		},
	}
}

// Development secrets. config.example.yaml falls back to them so that it
// runs as-is; Load warns when one is in use.
const (
	devJWTSecret     = "sidecar-dev-secret-change-me"
	devWebhookSecret = "whsec_fVAXsbyPsUMoThNjlKTAnZ8Wir0pRw7lAb4Z0hedzoo="
)

// MinDedupTTL is the shortest webhooks.dedup_ttl: the contract
// (docs/DESIGN.md) remembers a webhook-id for at least 24 h, so a retry
// within a day is never delivered twice.
const MinDedupTTL = 24 * time.Hour

// EnvPrefix starts every environment variable that overrides a config key:
// SIDECAR_ + the key in capitals, "__" between levels.
const EnvPrefix = "SIDECAR_"

// Options are the rules.Options of these settings, with lookup for
// ${VAR}: serve and check load the rules file with the same bounds, so
// check refuses what serve would.
func (r Rules) Options(lookup func(string) (string, bool)) rules.Options {
	return rules.Options{
		Registry:   rules.Builtin(),
		Lookup:     lookup,
		AllowEmpty: r.AllowEmpty,
		MaxCost:    r.MaxCost,
		Timeout:    r.Timeout,
		MaxMemory:  uint(r.MaxMemory),
	}
}
