package main

import "time"

// Config is the whole configuration file. Field names and koanf tags are the
// contract of DESIGN.md section 5; config.example.yaml documents every key and
// a test keeps the two in step.
type Config struct {
	Listen   string         `koanf:"listen"`
	Log      LogConfig      `koanf:"log"`
	Auth     AuthConfig     `koanf:"auth"`
	API      APIConfig      `koanf:"api"`
	Webhooks WebhooksConfig `koanf:"webhooks"`
	Forward  ForwardConfig  `koanf:"forward"`
	Rules    RulesConfig    `koanf:"rules"`
	Store    StoreConfig    `koanf:"store"`
	Presence PresenceConfig `koanf:"presence"`
	Broker   BrokerConfig   `koanf:"broker"`
	Limits   LimitsConfig   `koanf:"limits"`
}

type LogConfig struct {
	Level  string `koanf:"level"`  // debug, info, warn, error
	Format string `koanf:"format"` // text or json
}

type AuthConfig struct {
	JWTSecret     string        `koanf:"jwt_secret"`
	Algorithms    []string      `koanf:"algorithms"`
	PublicKeyFile string        `koanf:"public_key_file"`
	UserClaim     string        `koanf:"user_claim"` // empty: sub, then id, then userId
	Issuer        string        `koanf:"issuer"`
	Audience      string        `koanf:"audience"`
	Leeway        time.Duration `koanf:"leeway"`
	Origins       []string      `koanf:"origins"`
	MaxTokenBytes int           `koanf:"max_token_bytes"`
}

type APIConfig struct {
	AdminIf string   `koanf:"admin_if"`
	Keys    []string `koanf:"keys"`
}

type WebhooksConfig struct {
	Secrets      []string      `koanf:"secrets"`
	MaxBodyBytes int64         `koanf:"max_body_bytes"`
	Tolerance    time.Duration `koanf:"tolerance"`
	DedupTTL     time.Duration `koanf:"dedup_ttl"`
	Concurrency  int           `koanf:"concurrency"` // webhooks in the pipeline at once; beyond it: 429
}

// ForwardConfig is outbound delivery to the app (the forward action).
type ForwardConfig struct {
	Secret         string        `koanf:"secret"` // whsec_ secret that signs outbound requests
	Timeout        time.Duration `koanf:"timeout"`
	RetryHorizon   time.Duration `koanf:"retry_horizon"`
	InitialBackoff time.Duration `koanf:"initial_backoff"`
	MaxBackoff     time.Duration `koanf:"max_backoff"`
	Concurrency    int           `koanf:"concurrency"`
}

type RulesConfig struct {
	File  string `koanf:"file"`  // relative paths are relative to the config file
	Watch bool   `koanf:"watch"` // reload when the file changes (SIGHUP always reloads)
}

type StoreConfig struct {
	Path string `koanf:"path"` // ":memory:" keeps nothing; relative to the config file
	Sync string `koanf:"sync"` // always, everysecond, never
}

type PresenceConfig struct {
	Grace time.Duration `koanf:"grace"`
}

type BrokerConfig struct {
	RedisURL string `koanf:"redis_url"`
}

type LimitsConfig struct {
	MaxConnections            int           `koanf:"max_connections"`
	MaxMessageBytes           int           `koanf:"max_message_bytes"`
	OutboundQueueBytes        int           `koanf:"outbound_queue_bytes"`
	WriteTimeout              time.Duration `koanf:"write_timeout"`
	HandshakeTimeout          time.Duration `koanf:"handshake_timeout"`
	PingInterval              time.Duration `koanf:"ping_interval"`
	IdleTimeout               time.Duration `koanf:"idle_timeout"`
	ClientEventsPerSecond     int           `koanf:"client_events_per_second"`
	ConnectionsPerIPPerSecond int           `koanf:"connections_per_ip_per_second"`
	Workers                   int           `koanf:"workers"` // read workers; 0: 4 × GOMAXPROCS
}

// defaultConfig is the configuration with every default filled in. The
// config file and the environment override it.
func defaultConfig() Config {
	return Config{
		Listen: ":8080",
		Log:    LogConfig{Level: "info", Format: "text"},
		Auth: AuthConfig{
			Algorithms:    []string{"HS256"},
			Leeway:        5 * time.Second,
			MaxTokenBytes: 8192,
		},
		API: APIConfig{AdminIf: `claims.role == "admin"`},
		Webhooks: WebhooksConfig{
			MaxBodyBytes: 1 << 20,
			Tolerance:    5 * time.Minute,
			DedupTTL:     24 * time.Hour,
			Concurrency:  256,
		},
		Forward: ForwardConfig{
			Timeout:        10 * time.Second,
			RetryHorizon:   24 * time.Hour,
			InitialBackoff: time.Second,
			MaxBackoff:     10 * time.Minute,
			Concurrency:    4,
		},
		Rules:    RulesConfig{File: "rules.yaml", Watch: true},
		Store:    StoreConfig{Path: "sidecar.db", Sync: "everysecond"},
		Presence: PresenceConfig{Grace: 3 * time.Second},
		Limits: LimitsConfig{
			MaxConnections:            100000,
			MaxMessageBytes:           65536,
			OutboundQueueBytes:        1 << 20,
			WriteTimeout:              5 * time.Second,
			HandshakeTimeout:          10 * time.Second,
			PingInterval:              25 * time.Second,
			IdleTimeout:               60 * time.Second,
			ClientEventsPerSecond:     50,
			ConnectionsPerIPPerSecond: 0,
		},
	}
}
