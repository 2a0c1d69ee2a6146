package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/v2"

	"github.com/sidecar/sidecar/engine/auth"
)

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

// Development secrets. config.example.yaml falls back to them so that it
// runs as-is; loadConfig warns when one is in use.
const (
	devJWTSecret     = "sidecar-dev-secret-change-me"
	devWebhookSecret = "whsec_fVAXsbyPsUMoThNjlKTAnZ8Wir0pRw7lAb4Z0hedzoo="
)

// envPrefix starts every environment variable that overrides a config key:
// SIDECAR_ + the key in capitals, "__" between levels.
const envPrefix = "SIDECAR_"

// loadConfig reads the YAML file at path (may be "" for defaults only), expands ${VAR} and ${VAR:-default}
// from environ inside the file, applies SIDECAR_ environment overrides, and validates.
// It returns warnings (e.g. unknown SIDECAR_ variables, dev secret in use) for the caller to log.
//
// Layers, each overriding the one before: defaultConfig(), the file, the
// environment (SIDECAR_AUTH__JWT_SECRET sets auth.jwt_secret).
//
//   - File: an unknown key is an error naming it, a value of the wrong type
//     an error naming its key; a null value keeps the default. ${VAR} and
//     ${VAR:-default} are expanded inside string values after the YAML is
//     parsed, so a secret holding '#', ': ' or quotes arrives intact;
//     ${VAR:-x} uses x when VAR is unset or empty, $${ is a literal ${, and
//     a bare $VAR is left alone (expressions may contain '$').
//   - Environment: a list is comma-separated; a variable naming no key is
//     only a warning.
//   - Strings where a list is expected are split on commas, in the file as
//     in the environment. Durations are strings such as "5s" (or 0).
//   - Relative rules.file, store.path (unless ":memory:") and
//     auth.public_key_file are resolved against the directory of the config
//     file, whether they come from the file or are defaults; a path given
//     in the environment is relative to the working directory.
//
// Warnings are returned with the error too: an unknown SIDECAR_ variable
// often explains why validation failed.
func loadConfig(path string, environ []string) (*Config, []string, error) {
	var data []byte
	if path != "" {
		var err error
		if data, err = os.ReadFile(path); err != nil {
			return nil, nil, fmt.Errorf("read config: %w", err)
		}
	}
	return parseConfig(path, data, environ)
}

// parseConfig is loadConfig on the file's contents, data, read from path.
// With path "" there is no file layer and relative paths stay relative to
// the working directory.
func parseConfig(path string, data []byte, environ []string) (*Config, []string, error) {
	fields, err := configFields()
	if err != nil {
		return nil, nil, err
	}
	vars := envMap(environ)
	k := koanf.New(".")
	var warnings []string

	if path != "" {
		fk := koanf.New(".")
		if err := fk.Load(rawbytes.Provider(data), yaml.Parser()); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		flat := fk.All()
		for _, key := range fk.Keys() {
			val, err := fileValue(key, flat[key], fields, vars, &warnings)
			if err != nil {
				return nil, warnings, fmt.Errorf("%s: %w", path, err)
			}
			if val == nil {
				continue // null, or an empty section: keep the default
			}
			if err := k.Set(key, val); err != nil {
				return nil, warnings, fmt.Errorf("%s: %s: %w", path, key, err)
			}
		}
	}

	fromEnv := map[string]bool{}
	var envErr error
	ep := env.Provider(".", env.Opt{
		Prefix:      envPrefix,
		EnvironFunc: func() []string { return environ },
		TransformFunc: func(name, value string) (string, any) {
			key := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, envPrefix)), "__", ".")
			t, ok := fields[key]
			if !ok {
				warnings = append(warnings, unknownEnvWarning(name, key, fields))
				return "", nil
			}
			val, err := convertValue(t, value)
			if err != nil && envErr == nil {
				envErr = fmt.Errorf("%s: %s: %w", name, key, err)
			}
			if err != nil || val == nil {
				return "", nil
			}
			fromEnv[key] = true
			return key, val
		},
	})
	if err := k.Load(ep, nil); err != nil {
		return nil, warnings, fmt.Errorf("environment: %w", err)
	}
	if envErr != nil {
		return nil, warnings, envErr
	}

	cfg := defaultConfig()
	if err := k.UnmarshalWithConf("", &cfg, koanf.UnmarshalConf{
		Tag: "koanf",
		// Values are already of their field's exact type (fileValue,
		// convertValue), so the decoder need not convert anything; it is
		// strict about leftovers as a second line of defence.
		DecoderConfig: &mapstructure.DecoderConfig{ErrorUnused: true},
	}); err != nil {
		return nil, warnings, fmt.Errorf("config: %w", err)
	}

	if path != "" {
		dir, err := filepath.Abs(filepath.Dir(path))
		if err != nil {
			return nil, warnings, fmt.Errorf("config directory: %w", err)
		}
		resolve := func(key string, p *string) {
			if *p != "" && *p != ":memory:" && !fromEnv[key] && !filepath.IsAbs(*p) {
				*p = filepath.Join(dir, *p)
			}
		}
		resolve("rules.file", &cfg.Rules.File)
		resolve("store.path", &cfg.Store.Path)
		resolve("auth.public_key_file", &cfg.Auth.PublicKeyFile)
	}

	warnings = append(warnings, cfg.secretWarnings()...)
	if err := cfg.Validate(); err != nil {
		return nil, warnings, err
	}
	return &cfg, warnings, nil
}

// fileValue checks one flattened key of the config file, expands ${VAR}
// in its strings and converts it to its field's type. A nil result means
// "keep the default".
func fileValue(key string, val any, fields map[string]reflect.Type, vars map[string]string, warnings *[]string) (any, error) {
	t, ok := fields[key]
	if !ok {
		if isSection(key, fields) {
			if m, isMap := val.(map[string]any); val == nil || (isMap && len(m) == 0) {
				return nil, nil
			}
			return nil, fmt.Errorf("%s: is a section, not a value, got %s", key, describe(val))
		}
		for p := key; strings.Contains(p, "."); {
			p = p[:strings.LastIndexByte(p, '.')]
			if t, ok := fields[p]; ok {
				return nil, fmt.Errorf("%s: expected %s, got a mapping", p, expectation(t))
			}
		}
		msg := fmt.Sprintf("unknown key %q", key)
		if s := suggest(key, fields); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
		return nil, errors.New(msg)
	}
	if val == nil {
		return nil, nil
	}
	expandOne := func(s string) (string, error) {
		out, unset, err := expandVars(s, vars)
		for _, name := range unset {
			*warnings = append(*warnings, fmt.Sprintf("%s: %s is not set, ${%s} expands to \"\"", key, name, name))
		}
		if err != nil {
			return "", fmt.Errorf("%s: %w", key, err)
		}
		return out, nil
	}
	switch v := val.(type) {
	case string:
		s, err := expandOne(v)
		if err != nil {
			return nil, err
		}
		val = s
	case []any:
		list := make([]any, len(v))
		for i, e := range v {
			if s, ok := e.(string); ok {
				var err error
				if e, err = expandOne(s); err != nil {
					return nil, err
				}
			}
			list[i] = e
		}
		val = list
	}
	out, err := convertValue(t, val)
	if err != nil {
		if isSecretKey(key) {
			// The value may be the secret itself: do not print it.
			return nil, fmt.Errorf("%s: expected %s (quote it; value not shown)", key, expectation(t))
		}
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return out, nil
}

// isSecretKey reports whether key's value must never appear in an error.
func isSecretKey(key string) bool {
	switch key {
	case "auth.jwt_secret", "api.keys", "webhooks.secrets", "forward.secret",
		"broker.redis_url": // the URL may hold a password
		return true
	}
	return false
}

var durationType = reflect.TypeFor[time.Duration]()

// convertValue converts a value parsed from YAML, or an environment string,
// to a value of exactly type t. It is strict: a string field takes only a
// string, a number needs no quotes but must be whole, a duration needs its
// unit. An empty list becomes nil.
func convertValue(t reflect.Type, val any) (any, error) {
	if t == durationType {
		switch v := val.(type) {
		case string:
			d, err := time.ParseDuration(strings.TrimSpace(v))
			if err != nil {
				return nil, fmt.Errorf("expected %s, got %q", expectation(t), v)
			}
			return d, nil
		case int:
			if v == 0 {
				return time.Duration(0), nil
			}
		}
		return nil, fmt.Errorf("expected %s, got %s", expectation(t), describe(val))
	}
	switch t.Kind() {
	case reflect.String:
		if s, ok := val.(string); ok {
			return reflect.ValueOf(s).Convert(t).Interface(), nil
		}
		return nil, fmt.Errorf("expected %s, got %s (quote it)", expectation(t), describe(val))
	case reflect.Bool:
		switch v := val.(type) {
		case bool:
			return v, nil
		case string:
			if b, err := strconv.ParseBool(strings.TrimSpace(v)); err == nil {
				return b, nil
			}
		}
		return nil, fmt.Errorf("expected %s, got %s", expectation(t), describe(val))
	case reflect.Int, reflect.Int64:
		var n int64
		var ok bool
		switch v := val.(type) {
		case int:
			n, ok = int64(v), true
		case int64:
			n, ok = v, true
		case float64:
			n, ok = int64(v), v == math.Trunc(v) && math.Abs(v) < 1<<63
		case string:
			var err error
			n, err = strconv.ParseInt(strings.TrimSpace(v), 10, t.Bits())
			ok = err == nil
		}
		if !ok || reflect.Zero(t).OverflowInt(n) {
			return nil, fmt.Errorf("expected %s, got %s", expectation(t), describe(val))
		}
		return reflect.ValueOf(n).Convert(t).Interface(), nil
	case reflect.Slice:
		if t.Elem().Kind() != reflect.String {
			break
		}
		var list []string
		switch v := val.(type) {
		case string:
			for _, s := range strings.Split(v, ",") {
				if s = strings.TrimSpace(s); s != "" {
					list = append(list, s)
				}
			}
		case []any:
			for i, e := range v {
				s, ok := e.(string)
				if !ok {
					return nil, fmt.Errorf("item %d: expected a string, got %s (quote it)", i, describe(e))
				}
				list = append(list, s)
			}
		default:
			return nil, fmt.Errorf("expected %s, got %s", expectation(t), describe(val))
		}
		return list, nil
	}
	return nil, fmt.Errorf("unsupported config type %s", t)
}

// expectation names what a field of type t takes, for error messages.
func expectation(t reflect.Type) string {
	if t == durationType {
		return `a duration such as "5s"`
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64:
		return "an integer"
	case reflect.Slice:
		return "a list of strings"
	}
	return t.String()
}

// describe shows a config value in an error: strings quoted, the rest as
// YAML would write them.
func describe(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(v)
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	}
	return fmt.Sprint(v)
}

// expandVars replaces ${NAME} and ${NAME:-default} in s with values from
// vars. ${NAME:-default} takes the default when NAME is unset or empty.
// $${ stands for a literal ${. It returns the names referenced without a
// default that are unset.
func expandVars(s string, vars map[string]string) (string, []string, error) {
	if !strings.Contains(s, "${") {
		return s, nil, nil
	}
	var b strings.Builder
	var unset []string
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), unset, nil
		}
		if i > 0 && s[i-1] == '$' {
			b.WriteString(s[:i-1])
			b.WriteString("${")
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", nil, fmt.Errorf("unterminated ${ in %q", shorten(s[i:]))
		}
		ref := s[i+2 : i+end]
		name, def, hasDef := strings.Cut(ref, ":-")
		if !validVarName(name) {
			return "", nil, fmt.Errorf("invalid variable reference %q", "${"+ref+"}")
		}
		val, set := vars[name]
		switch {
		case hasDef && val == "":
			val = def
		case !set && !hasDef:
			unset = append(unset, name)
		}
		b.WriteString(val)
		s = s[i+end+1:]
	}
}

func validVarName(name string) bool {
	if name == "" {
		return false
	}
	for i, c := range name {
		if c != '_' && !('A' <= c && c <= 'Z') && !('a' <= c && c <= 'z') && (i == 0 || !('0' <= c && c <= '9')) {
			return false
		}
	}
	return true
}

func shorten(s string) string {
	if len(s) > 20 {
		return s[:20] + "…"
	}
	return s
}

// envMap turns an environ list into a map; a later entry wins, as it does
// for the SIDECAR_ overrides.
func envMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// configFields maps every leaf key of Config ("auth.jwt_secret") to its
// field's type, from the koanf tags.
func configFields() (map[string]reflect.Type, error) {
	fields := map[string]reflect.Type{}
	var walk func(prefix string, t reflect.Type) error
	walk = func(prefix string, t reflect.Type) error {
		for f := range t.Fields() {
			tag := f.Tag.Get("koanf")
			if tag == "" || tag == "-" {
				return fmt.Errorf("config field %s.%s has no koanf tag", t.Name(), f.Name)
			}
			key := prefix + tag
			if f.Type.Kind() == reflect.Struct && f.Type != durationType {
				if err := walk(key+".", f.Type); err != nil {
					return err
				}
				continue
			}
			fields[key] = f.Type
		}
		return nil
	}
	if err := walk("", reflect.TypeFor[Config]()); err != nil {
		return nil, err
	}
	return fields, nil
}

// isSection reports whether key is a prefix of some leaf key ("auth").
func isSection(key string, fields map[string]reflect.Type) bool {
	for k := range fields {
		if strings.HasPrefix(k, key+".") {
			return true
		}
	}
	return false
}

// suggest returns the known key closest to key, if it is close enough to
// be a typo.
func suggest(key string, fields map[string]reflect.Type) string {
	best, bestDist := "", 4
	for k := range fields {
		if d := editDistance(key, k); d < bestDist || (d == bestDist && k < best) {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func unknownEnvWarning(name, key string, fields map[string]reflect.Type) string {
	msg := fmt.Sprintf("ignoring environment variable %s: no config key %q", name, key)
	if s := suggest(key, fields); s != "" {
		msg += fmt.Sprintf(" (did you mean %s?)", envName(s))
	}
	return msg
}

// envName is the environment variable that overrides key.
func envName(key string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "__"))
}

// secretWarnings reports secrets that work but should not go to production.
func (c *Config) secretWarnings() []string {
	var w []string
	switch {
	case c.Auth.JWTSecret == devJWTSecret:
		w = append(w, "using the development secret; set JWT_SECRET")
	case c.Auth.JWTSecret != "" && len(c.Auth.JWTSecret) < 32 && c.usesHMAC():
		w = append(w, "auth.jwt_secret is shorter than 32 bytes; HS256 wants a random secret of at least 32 bytes")
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
func (c AuthConfig) verifierConfig() auth.Config {
	var secret []byte
	if c.JWTSecret != "" {
		secret = []byte(c.JWTSecret)
	}
	return auth.Config{
		Secret:        secret,
		Algorithms:    c.Algorithms,
		PublicKeyFile: c.PublicKeyFile,
		UserClaim:     c.UserClaim,
		Issuer:        c.Issuer,
		Audience:      c.Audience,
		Leeway:        c.Leeway,
		MaxTokenBytes: c.MaxTokenBytes,
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
	for i, o := range c.Auth.Origins {
		if strings.TrimSpace(o) == "" {
			bad(fmt.Sprintf("auth.origins[%d]", i), "is empty")
		}
	}
	if len(errs) == nAuth {
		if _, err := auth.New(c.Auth.verifierConfig()); err != nil {
			errs = append(errs, err)
		}
	}

	if strings.TrimSpace(c.API.AdminIf) == "" {
		bad("api.admin_if", "must not be empty (default: %s)", defaultConfig().API.AdminIf)
	}
	for i, key := range c.API.Keys {
		if key == "" || strings.ContainsFunc(key, unicode.IsSpace) {
			bad(fmt.Sprintf("api.keys[%d]", i), "must be non-empty with no spaces")
		}
	}

	for i, s := range c.Webhooks.Secrets {
		if err := checkWebhookSecret(s); err != nil {
			bad(fmt.Sprintf("webhooks.secrets[%d]", i), "%v", err)
		}
	}
	positive("webhooks.max_body_bytes", c.Webhooks.MaxBodyBytes)
	positiveDur("webhooks.tolerance", c.Webhooks.Tolerance)
	positiveDur("webhooks.dedup_ttl", c.Webhooks.DedupTTL)
	positive("webhooks.concurrency", int64(c.Webhooks.Concurrency))

	if c.Forward.Secret != "" {
		if err := checkWebhookSecret(c.Forward.Secret); err != nil {
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

	if c.Rules.File == "" {
		bad("rules.file", "must not be empty")
	}
	if c.Store.Path == "" {
		bad("store.path", `must not be empty (":memory:" keeps nothing)`)
	}
	oneOf("store.sync", c.Store.Sync, "always", "everysecond", "never")
	if c.Presence.Grace < 0 {
		bad("presence.grace", "must not be negative, got %s", c.Presence.Grace)
	}
	if c.Broker.RedisURL != "" {
		// The URL may hold a password: never print it.
		if u, err := url.Parse(c.Broker.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			bad("broker.redis_url", "must be redis://host:port or rediss://host:port")
		}
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
	positive("limits.client_events_per_second", int64(l.ClientEventsPerSecond))
	if l.ConnectionsPerIPPerSecond < 0 {
		bad("limits.connections_per_ip_per_second", "must not be negative (0: no limit), got %d", l.ConnectionsPerIPPerSecond)
	}
	if l.Workers < 0 {
		bad("limits.workers", "must not be negative (0: 4 × GOMAXPROCS), got %d", l.Workers)
	}
	return errors.Join(errs...)
}

// checkWebhookSecret checks the Standard Webhooks form whsec_<base64>.
func checkWebhookSecret(s string) error {
	b64, ok := strings.CutPrefix(s, "whsec_")
	if !ok {
		return errors.New(`must start with "whsec_"`)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		if key, err = base64.RawStdEncoding.DecodeString(b64); err != nil {
			return errors.New(`must be "whsec_" followed by base64`)
		}
	}
	if len(key) == 0 {
		return errors.New(`has an empty key after "whsec_"`)
	}
	return nil
}
