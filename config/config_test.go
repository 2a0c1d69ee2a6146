package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/v2"

	"github.com/sidecar/sidecar/rules"
)

const examplePath = "../config.example.yaml"

// testSecret is a valid auth.jwt_secret for tests.
const testSecret = "0123456789abcdef0123456789abcdef"

// whsecA and whsecB are valid Standard Webhooks secrets.
const (
	whsecA = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	whsecB = "whsec_c2Vjb25kLXdlYmhvb2stc2VjcmV0LWtleS0wMQ=="
)

// writeConfig writes content to config.yaml in a new temporary directory
// and returns its path.
func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestExampleConfigLoads(t *testing.T) {
	cfg, warnings, err := Load(examplePath, []string{"HOME=/root"})
	if err != nil {
		t.Fatalf("Load(%s): %v", examplePath, err)
	}
	for _, want := range []string{
		"using the development secret; set JWT_SECRET",
		"using the development webhook secret; set WEBHOOK_SECRET",
	} {
		if !slices.Contains(warnings, want) {
			t.Errorf("warnings = %q, want %q among them", warnings, want)
		}
	}
	if len(warnings) != 2 {
		t.Errorf("warnings = %q, want exactly the two development-secret warnings", warnings)
	}

	dir, err := filepath.Abs(filepath.Dir(examplePath))
	if err != nil {
		t.Fatal(err)
	}
	// Secrets and resolved paths are the only differences from the defaults.
	got := *cfg
	checks := []struct {
		name      string
		got, want any
		reset     func()
	}{
		{"auth.jwt_secret", got.Auth.JWTSecret, devJWTSecret, func() { got.Auth.JWTSecret = "" }},
		{"webhooks.secrets", got.Webhooks.Secrets, []string{devWebhookSecret}, func() { got.Webhooks.Secrets = nil }},
		{"rules.file", got.Rules.File, filepath.Join(dir, "rules.yaml"), func() { got.Rules.File = Default().Rules.File }},
		{"store.path", got.Store.Path, filepath.Join(dir, "sidecar.db"), func() { got.Store.Path = Default().Store.Path }},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
		c.reset()
	}
	if want := Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("config.example.yaml differs from Default():\n got %+v\nwant %+v", got, want)
	}

	// With no environment at all, every ${VAR} of the example config, and
	// of the rules file it names, has a default.
	cfg, _, err = Load(examplePath, nil)
	if err != nil {
		t.Fatalf("Load(%s) with no environment: %v", examplePath, err)
	}
	if _, err := rules.Load(cfg.Rules.File, rules.Options{}); err != nil {
		t.Errorf("rules.Load(%s) with no environment: %v", cfg.Rules.File, err)
	}

	// With the variables set, the file takes them.
	cfg, warnings, err = Load(examplePath, []string{"JWT_SECRET=" + testSecret, "WEBHOOK_SECRET=" + whsecA})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Auth.JWTSecret != testSecret || !slices.Equal(cfg.Webhooks.Secrets, []string{whsecA}) || len(warnings) != 0 {
		t.Errorf("with JWT_SECRET and WEBHOOK_SECRET set: secret %q, webhooks %q, warnings %q", cfg.Auth.JWTSecret, cfg.Webhooks.Secrets, warnings)
	}
}

// TestExampleConfigHasEveryKey walks the keys of config.example.yaml against
// the koanf tags of Config, both ways, so neither can drift.
func TestExampleConfigHasEveryKey(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	k := koanf.New(".")
	if err := k.Load(rawbytes.Provider(data), yaml.Parser()); err != nil {
		t.Fatal(err)
	}
	fields, err := configFields()
	if err != nil {
		t.Fatal(err)
	}
	inFile := map[string]bool{}
	for _, key := range k.Keys() {
		inFile[key] = true
		if _, ok := fields[key]; !ok {
			t.Errorf("config.example.yaml has %q, which is no Config field", key)
		}
	}
	for key := range fields {
		if !inFile[key] {
			t.Errorf("config.example.yaml lacks %q", key)
		}
	}
	if len(fields) < 40 {
		t.Errorf("configFields found %d keys; the struct walk is broken", len(fields))
	}
	// Every key line carries a comment.
	for i, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") || strings.HasPrefix(trimmed, "- ") || strings.HasSuffix(trimmed, ":") {
			continue
		}
		if !strings.Contains(line, " # ") {
			t.Errorf("config.example.yaml:%d has no comment: %s", i+1, line)
		}
	}
}

func TestEnvOverrides(t *testing.T) {
	file := "limits:\n  max_message_bytes: 1000\nauth:\n  jwt_secret: from-file-from-file-from-file-0123\n"
	tests := []struct {
		name    string
		environ []string
		check   func(c *Config) (got, want any)
	}{
		{"nested secret", []string{"SIDECAR_AUTH__JWT_SECRET=" + testSecret},
			func(c *Config) (any, any) { return c.Auth.JWTSecret, testSecret }},
		{"env beats file", []string{"SIDECAR_LIMITS__MAX_MESSAGE_BYTES=131072"},
			func(c *Config) (any, any) { return c.Limits.MaxMessageBytes, 131072 }},
		{"file beats default", nil,
			func(c *Config) (any, any) { return c.Limits.MaxMessageBytes, 1000 }},
		{"list", []string{"SIDECAR_WEBHOOKS__SECRETS=" + whsecA + "," + whsecB},
			func(c *Config) (any, any) { return c.Webhooks.Secrets, []string{whsecA, whsecB} }},
		{"list with spaces", []string{"SIDECAR_AUTH__ORIGINS=https://a.example, https://b.example"},
			func(c *Config) (any, any) { return c.Auth.Origins, []string{"https://a.example", "https://b.example"} }},
		{"algorithms list", []string{"SIDECAR_AUTH__ALGORITHMS=HS256,HS512"},
			func(c *Config) (any, any) { return c.Auth.Algorithms, []string{"HS256", "HS512"} }},
		{"top-level key", []string{"SIDECAR_LISTEN=127.0.0.1:9090"},
			func(c *Config) (any, any) { return c.Listen, "127.0.0.1:9090" }},
		{"duration", []string{"SIDECAR_PRESENCE__GRACE=10s"},
			func(c *Config) (any, any) { return c.Presence.Grace, 10 * time.Second }},
		{"allow empty rules", []string{"SIDECAR_RULES__ALLOW_EMPTY=true"},
			func(c *Config) (any, any) { return c.Rules.AllowEmpty, true }},
		{"bool", []string{"SIDECAR_RULES__WATCH=false"},
			func(c *Config) (any, any) { return c.Rules.Watch, false }},
		{"int64", []string{"SIDECAR_WEBHOOKS__MAX_BODY_BYTES=2097152"},
			func(c *Config) (any, any) { return c.Webhooks.MaxBodyBytes, int64(2097152) }},
		{"rules timeout", []string{"SIDECAR_RULES__TIMEOUT=250ms"},
			func(c *Config) (any, any) { return c.Rules.Timeout, 250 * time.Millisecond }},
		{"outbox bytes", []string{"SIDECAR_FORWARD__MAX_PENDING_BYTES=134217728"},
			func(c *Config) (any, any) { return c.Forward.MaxPendingBytes, int64(134217728) }},
		{"burst", []string{"SIDECAR_LIMITS__CLIENT_EVENTS_BURST=500"},
			func(c *Config) (any, any) { return c.Limits.ClientEventsBurst, 500 }},
		{"empty string clears", []string{"SIDECAR_AUTH__ISSUER="},
			func(c *Config) (any, any) { return c.Auth.Issuer, "" }},
		{"later variable wins", []string{"SIDECAR_LOG__LEVEL=warn", "SIDECAR_LOG__LEVEL=debug"},
			func(c *Config) (any, any) { return c.Log.Level, "debug" }},
		{"other variables ignored", []string{"PATH=/bin", "sidecar_listen=:1"},
			func(c *Config) (any, any) { return c.Listen, ":8080" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _, err := Parse("config.yaml", []byte(file), tc.environ)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got, want := tc.check(cfg); !reflect.DeepEqual(got, want) {
				t.Errorf("got %#v, want %#v", got, want)
			}
		})
	}
}

func TestExpansion(t *testing.T) {
	tests := []struct {
		name     string
		yaml     string
		environ  []string
		check    func(c *Config) (got, want any)
		wantWarn string
	}{
		{"${VAR} set", "auth: {jwt_secret: '${S}'}", []string{"S=" + testSecret},
			func(c *Config) (any, any) { return c.Auth.JWTSecret, testSecret }, ""},
		{"${VAR:-x} unset", "auth: {jwt_secret: '${S:-" + testSecret + "}'}", nil,
			func(c *Config) (any, any) { return c.Auth.JWTSecret, testSecret }, ""},
		{"${VAR:-x} empty", "auth: {jwt_secret: '${S:-" + testSecret + "}'}", []string{"S="},
			func(c *Config) (any, any) { return c.Auth.JWTSecret, testSecret }, ""},
		{"${VAR:-x} set", "auth: {jwt_secret: '${S:-fallback}'}", []string{"S=" + testSecret},
			func(c *Config) (any, any) { return c.Auth.JWTSecret, testSecret }, ""},
		{"in the middle", "auth: {jwt_secret: 'pre-${S}-post'}", []string{"S=" + testSecret},
			func(c *Config) (any, any) { return c.Auth.JWTSecret, "pre-" + testSecret + "-post" }, ""},
		{"set but empty", "auth: {jwt_secret: '" + testSecret + "', issuer: '${ISS}'}", []string{"ISS="},
			func(c *Config) (any, any) { return c.Auth.Issuer, "" }, ""},
		{"secret with YAML specials stays whole", "auth: {jwt_secret: '${S}'}", []string{"S=" + testSecret + " #: 'x\""},
			func(c *Config) (any, any) { return c.Auth.JWTSecret, testSecret + " #: 'x\"" }, ""},
		{"bare $VAR untouched", "auth: {jwt_secret: '" + testSecret + "'}\napi: {admin_if: 'claims.role == \"$ADMIN\"'}", []string{"ADMIN=x"},
			func(c *Config) (any, any) { return c.API.AdminIf, `claims.role == "$ADMIN"` }, ""},
		{"$${ is literal", "auth: {jwt_secret: '" + testSecret + "'}\napi: {admin_if: '\"$${S}\" != \"\"'}", []string{"S=x"},
			func(c *Config) (any, any) { return c.API.AdminIf, `"${S}" != ""` }, ""},
		{"list items", "auth: {jwt_secret: '" + testSecret + "'}\nwebhooks:\n  secrets:\n    - ${A}\n    - ${B:-" + whsecB + "}\n", []string{"A=" + whsecA},
			func(c *Config) (any, any) { return c.Webhooks.Secrets, []string{whsecA, whsecB} }, ""},
		{"number from a variable", "auth: {jwt_secret: '" + testSecret + "'}\nlimits: {max_connections: '${MAXC:-500}'}", nil,
			func(c *Config) (any, any) { return c.Limits.MaxConnections, 500 }, ""},
		{"duration from a variable", "auth: {jwt_secret: '" + testSecret + "'}\npresence: {grace: '${GRACE}'}", []string{"GRACE=1m"},
			func(c *Config) (any, any) { return c.Presence.Grace, time.Minute }, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, warnings, err := Parse("config.yaml", []byte(tc.yaml), tc.environ)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got, want := tc.check(cfg); !reflect.DeepEqual(got, want) {
				t.Errorf("got %#v, want %#v", got, want)
			}
			if tc.wantWarn != "" && !slices.Contains(warnings, tc.wantWarn) {
				t.Errorf("warnings = %q, want %q among them", warnings, tc.wantWarn)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	okAuth := "auth: {jwt_secret: '" + testSecret + "'}\n"
	tests := []struct {
		name    string
		yaml    string
		environ []string
		want    []string // substrings of the error
	}{
		{"unknown key", okAuth + "limits:\n  max_mesage_bytes: 10\n", nil,
			[]string{`config.yaml: unknown key "limits.max_mesage_bytes"`, `did you mean "limits.max_message_bytes"`}},
		{"unknown section", okAuth + "logging: {level: info}\n", nil, []string{`unknown key "logging.level"`}},
		{"wrong case", okAuth + "Listen: ':1'\n", nil, []string{`unknown key "Listen"`, `did you mean "listen"`}},
		{"value where a section goes", okAuth + "limits: 5\n", nil, []string{"limits: is a section, not a value"}},
		{"wrong type", okAuth + "limits: {max_message_bytes: abc}\n", nil,
			[]string{`limits.max_message_bytes: expected an integer, got "abc"`}},
		{"fraction for an integer", okAuth + "limits: {max_message_bytes: 1.5}\n", nil,
			[]string{"limits.max_message_bytes: expected an integer, got 1.5"}},
		{"wrong type from env", okAuth, []string{"SIDECAR_LIMITS__MAX_MESSAGE_BYTES=abc"},
			[]string{`SIDECAR_LIMITS__MAX_MESSAGE_BYTES: limits.max_message_bytes: expected an integer, got "abc"`}},
		{"duration without unit", okAuth + "presence: {grace: 3}\n", nil,
			[]string{`presence.grace: expected a duration such as "5s", got 3`}},
		{"bad duration", okAuth + "presence: {grace: soon}\n", nil, []string{`presence.grace: expected a duration such as "5s", got "soon"`}},
		{"number for a string", "auth: {jwt_secret: '" + testSecret + "', issuer: 12345}\n", nil, []string{"auth.issuer: expected a string, got 12345 (quote it)"}},
		{"bool", okAuth + "rules: {watch: maybe}\n", nil, []string{`rules.watch: expected true or false, got "maybe"`}},
		{"secret value not shown", "auth: {jwt_secret: 987654321}\n", nil, []string{"auth.jwt_secret: expected a string (quote it; value not shown)"}},
		{"secret list value not shown", okAuth + "webhooks: {secrets: [987654321]}\n", nil, []string{"webhooks.secrets: expected a list of strings (quote it; value not shown)"}},
		{"list item type", "auth: {jwt_secret: '" + testSecret + "', algorithms: [1]}\n", nil, []string{"auth.algorithms: item 0: expected a string"}},
		{"map for a list", okAuth + "api: {keys: {a: b}}\n", nil, []string{"api.keys: expected a list of strings, got a mapping"}},
		{"map for a string", okAuth + "listen: {host: x, port: 1}\n", nil, []string{"listen: expected a string, got a mapping"}},
		{"bad YAML", "auth: [\n", nil, []string{"config.yaml: yaml:"}},
		{"bad reference", "auth: {jwt_secret: '${JWT SECRET}'}\n", nil, []string{`config.yaml: auth.jwt_secret: bad variable name in ${JWT SECRET}`}},
		{"unclosed reference", "auth: {jwt_secret: '${JWT_SECRET'}\n", nil, []string{`config.yaml: auth.jwt_secret: unclosed ${`}},
		{"missing secret", "", nil, []string{"auth.jwt_secret: required"}},
		// An unset ${VAR} without a default is an error naming the
		// variable and the key, in the config file as in the rules file.
		{"secret from an unset variable", "auth: {jwt_secret: '${JWT_SECRET}'}\n", nil,
			[]string{"config.yaml: auth.jwt_secret: environment variable JWT_SECRET is not set (use ${JWT_SECRET:-default} for a default)"}},
		{"unset variable in a string", "auth: {jwt_secret: '" + testSecret + "', issuer: 'https://${ISS}/'}\n", nil,
			[]string{"config.yaml: auth.issuer: environment variable ISS is not set"}},
		{"unset variable in a list", okAuth + "webhooks: {secrets: ['${WH}']}\n", []string{"SIDECAR_UNRELATED=1"},
			[]string{"config.yaml: webhooks.secrets: environment variable WH is not set"}},
		{"HS384 without secret", "auth: {algorithms: [HS384]}\n", nil, []string{"auth.jwt_secret: required"}},
		{"bad webhook secret", okAuth + "webhooks: {secrets: [secret123]}\n", nil, []string{`webhooks.secrets[0]: webhook: invalid secret: missing "whsec_" prefix`}},
		{"unknown algorithm", "auth: {jwt_secret: '" + testSecret + "', algorithms: [HS256, XS1]}\n", nil, []string{`unknown algorithm "XS1"`}},
		{"several problems at once", okAuth + "log: {level: loud}\nstore: {sync: sometimes}\n", nil,
			[]string{`log.level: must be one of debug, info, warn, error, got "loud"`, `store.sync: must be one of always, everysecond, never, got "sometimes"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _, err := Parse("config.yaml", []byte(tc.yaml), tc.environ)
			if err == nil {
				t.Fatalf("Parse succeeded with %+v, want an error", cfg)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Parse error:\n%v\nwant it to contain %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "987654321") || strings.Contains(err.Error(), testSecret) {
				t.Errorf("Parse error reveals a secret: %v", err)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		_, _, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), nil)
		if err == nil || !strings.Contains(err.Error(), "nope.yaml") {
			t.Errorf("Load(missing) = %v, want an error naming the file", err)
		}
	})
	t.Run("unknown key names the file", func(t *testing.T) {
		path := writeConfig(t, okAuth+"limits:\n  max_mesage_bytes: 10\n")
		_, _, err := Load(path, nil)
		if want := path + `: unknown key "limits.max_mesage_bytes"`; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Load = %v, want %q", err, want)
		}
	})
}

func TestUnknownEnvWarns(t *testing.T) {
	tests := []struct {
		name     string
		environ  []string
		wantWarn []string
	}{
		{"typo", []string{"SIDECAR_LIMITS__MAX_MESAGE_BYTES=5"},
			[]string{`ignoring environment variable SIDECAR_LIMITS__MAX_MESAGE_BYTES: no config key "limits.max_mesage_bytes" (did you mean SIDECAR_LIMITS__MAX_MESSAGE_BYTES?)`}},
		{"single underscore between levels", []string{"SIDECAR_AUTH_JWT_SECRET=x"},
			[]string{`ignoring environment variable SIDECAR_AUTH_JWT_SECRET: no config key "auth_jwt_secret" (did you mean SIDECAR_AUTH__JWT_SECRET?)`}},
		{"a section", []string{"SIDECAR_LIMITS=1"},
			[]string{`ignoring environment variable SIDECAR_LIMITS: no config key "limits"`}},
		{"known and non-SIDECAR variables", []string{"SIDECAR_LOG__LEVEL=debug", "HOME=/root", "XSIDECAR_FOO=1"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			environ := append([]string{"SIDECAR_AUTH__JWT_SECRET=" + testSecret, "SIDECAR_WEBHOOKS__SECRETS=" + whsecA}, tc.environ...)
			_, warnings, err := Parse("", nil, environ)
			if err != nil {
				t.Fatalf("Parse: %v (an unknown variable must only warn)", err)
			}
			var envWarnings []string
			for _, w := range warnings {
				if strings.HasPrefix(w, "ignoring environment variable") {
					envWarnings = append(envWarnings, w)
				}
			}
			if !slices.Equal(envWarnings, tc.wantWarn) {
				t.Errorf("warnings = %q, want %q", envWarnings, tc.wantWarn)
			}
		})
	}
}

// TestPublicKeyFileForms: auth.public_key_file takes one path (as it
// always did) or a list, in the file as in the environment (comma
// separated), and a plain-http JWKS URL off this host is warned about.
func TestPublicKeyFileForms(t *testing.T) {
	dir := t.TempDir()
	var paths []string
	for _, name := range []string{"a.pem", "b.pem"} {
		ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, _ := x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	tests := []struct {
		name    string
		yaml    string
		environ []string
		want    []string
		warn    string
	}{
		{"a string", "auth: {algorithms: [ES256], public_key_file: a.pem}\n", nil, paths[:1], ""},
		{"a list", "auth: {algorithms: [ES256], public_key_file: [a.pem, b.pem]}\n", nil, paths, ""},
		{"a block list", "auth:\n  algorithms: [ES256]\n  public_key_file:\n    - a.pem\n    - b.pem\n", nil, paths, ""},
		{"the environment", "auth: {algorithms: [ES256]}\n", []string{"SIDECAR_AUTH__PUBLIC_KEY_FILE=" + paths[0] + "," + paths[1]}, paths, ""},
		{"with a JWKS over https", "auth: {algorithms: [ES256], public_key_file: a.pem, jwks_url: 'https://idp.example/jwks'}\n", nil, paths[:1], ""},
		{"plain http off this host", "auth: {algorithms: [ES256], jwks_url: 'http://idp.example/jwks'}\n", nil, nil, "auth.jwks_url is plain http"},
		{"plain http on loopback", "auth: {algorithms: [ES256], jwks_url: 'http://127.0.0.1:9/jwks'}\n", nil, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "config.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, warnings, err := Load(path, tc.environ)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !slices.Equal(cfg.Auth.PublicKeyFile, tc.want) {
				t.Errorf("public_key_file = %q, want %q", cfg.Auth.PublicKeyFile, tc.want)
			}
			hasWarn := slices.ContainsFunc(warnings, func(w string) bool { return tc.warn != "" && strings.Contains(w, tc.warn) })
			if (tc.warn != "") != hasWarn || (tc.warn == "" && len(warnings) > 1) {
				t.Errorf("warnings = %q, want %q", warnings, tc.warn)
			}
		})
	}
}

func TestPathResolution(t *testing.T) {
	dir := t.TempDir()
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "jwt.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	abs := filepath.Join(t.TempDir(), "abs-rules.yaml")
	secret := "auth: {jwt_secret: '" + testSecret + "'}\n"
	tests := []struct {
		name    string
		path    string // config file path; "" for none
		yaml    string
		environ []string
		check   func(c *Config) (got, want any)
	}{
		{"relative rules.file", "config.yaml", secret + "rules: {file: conf/rules.yaml}\n", nil,
			func(c *Config) (any, any) { return c.Rules.File, filepath.Join(dir, "conf", "rules.yaml") }},
		{"default rules.file sits next to the config", "config.yaml", secret, nil,
			func(c *Config) (any, any) { return c.Rules.File, filepath.Join(dir, "rules.yaml") }},
		{"absolute rules.file", "config.yaml", secret + "rules: {file: " + abs + "}\n", nil,
			func(c *Config) (any, any) { return c.Rules.File, abs }},
		{"relative store.path", "config.yaml", secret + "store: {path: data/s.db}\n", nil,
			func(c *Config) (any, any) { return c.Store.Path, filepath.Join(dir, "data", "s.db") }},
		{":memory: store", "config.yaml", secret + "store: {path: ':memory:'}\n", nil,
			func(c *Config) (any, any) { return c.Store.Path, ":memory:" }},
		{"relative public_key_file", "config.yaml", "auth: {algorithms: [ES256], public_key_file: jwt.pem}\n", nil,
			func(c *Config) (any, any) {
				return strings.Join(c.Auth.PublicKeyFile, ","), filepath.Join(dir, "jwt.pem")
			}},
		{"relative public_key_file list", "config.yaml", "auth: {algorithms: [ES256], public_key_file: [jwt.pem, " + filepath.Join(dir, "jwt.pem") + "]}\n", nil,
			func(c *Config) (any, any) {
				return strings.Join(c.Auth.PublicKeyFile, ","), filepath.Join(dir, "jwt.pem") + "," + filepath.Join(dir, "jwt.pem")
			}},
		{"from the environment: working directory", "config.yaml", secret, []string{"SIDECAR_STORE__PATH=here.db"},
			func(c *Config) (any, any) { return c.Store.Path, "here.db" }},
		{"no config file", "", "", []string{"SIDECAR_AUTH__JWT_SECRET=" + testSecret},
			func(c *Config) (any, any) { return c.Rules.File, "rules.yaml" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.path
			if path != "" {
				path = filepath.Join(dir, path)
				if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cfg, _, err := Load(path, tc.environ)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got, want := tc.check(cfg); got != want {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	valid := func() Config {
		c := Default()
		c.Auth.JWTSecret = testSecret
		c.Webhooks.Secrets = []string{whsecA}
		return c
	}
	tests := []struct {
		name   string
		modify func(c *Config)
		want   string // substring of the error; "" means valid
	}{
		{"valid", func(c *Config) {}, ""},
		{"forward secret set", func(c *Config) { c.Forward.Secret = whsecB }, ""},
		{"redis", func(c *Config) { c.Broker.RedisURL = "redis://:pw@localhost:6379/0" }, ""},
		{"missing secret", func(c *Config) { c.Auth.JWTSecret = "" }, "auth.jwt_secret: required when auth.algorithms allows HS256/HS384/HS512; set JWT_SECRET or SIDECAR_AUTH__JWT_SECRET"},
		{"no secret needed without HS", func(c *Config) { c.Auth.JWTSecret = ""; c.Auth.Algorithms = []string{"RS256"} }, "RS256 needs a public key file"},
		{"alg none", func(c *Config) { c.Auth.Algorithms = []string{"none"} }, `algorithm "none" is not allowed`},
		{"leeway too big", func(c *Config) { c.Auth.Leeway = time.Minute }, "auth.leeway: must be between 0s and 30s, got 1m0s"},
		{"max token bytes", func(c *Config) { c.Auth.MaxTokenBytes = 0 }, "auth.max_token_bytes: must be positive, got 0"},
		{"listen", func(c *Config) { c.Listen = "8080" }, `listen: "8080" is not host:port`},
		{"log level", func(c *Config) { c.Log.Level = "verbose" }, `log.level: must be one of debug, info, warn, error, got "verbose"`},
		{"log format", func(c *Config) { c.Log.Format = "xml" }, `log.format: must be one of text, json, got "xml"`},
		{"store sync", func(c *Config) { c.Store.Sync = "sometimes" }, `store.sync: must be one of always, everysecond, never`},
		// Secrets are checked by webhook.ParseSecret, the parser that uses
		// them: what it accepts, config accepts, and the other way round.
		{"webhook secret with white space around", func(c *Config) { c.Webhooks.Secrets = []string{" " + whsecA + " \n"} }, ""},
		{"forward secret with white space around", func(c *Config) { c.Forward.Secret = "\t" + whsecB + "\n" }, ""},
		{"webhook secret prefix", func(c *Config) { c.Webhooks.Secrets = []string{whsecA, "topsecret"} }, `webhooks.secrets[1]: webhook: invalid secret: missing "whsec_" prefix`},
		{"webhook secret base64", func(c *Config) { c.Webhooks.Secrets = []string{"whsec_not base64!"} }, `webhooks.secrets[0]: webhook: invalid secret: not base64 after "whsec_"`},
		{"webhook secret empty key", func(c *Config) { c.Webhooks.Secrets = []string{"whsec_"} }, `webhooks.secrets[0]: webhook: invalid secret: empty key`},
		{"forward secret", func(c *Config) { c.Forward.Secret = "whsec_%%%" }, `forward.secret: webhook: invalid secret: not base64 after "whsec_"`},
		{"admin_if empty", func(c *Config) { c.API.AdminIf = " " }, "api.admin_if: must not be empty"},
		{"api key with space", func(c *Config) { c.API.Keys = []string{"a b"} }, "api.keys[0]: must be non-empty with no spaces"},
		{"api key digest too short", func(c *Config) { c.API.Keys = []string{"sha256:abcd"} }, "api.keys[0]: sha256: must be followed by the 64 hex digits"},
		{"max_message_bytes", func(c *Config) { c.Limits.MaxMessageBytes = -1 }, "limits.max_message_bytes: must be positive, got -1"},
		{"max_connections", func(c *Config) { c.Limits.MaxConnections = 0 }, "limits.max_connections: must be positive"},
		{"outbound queue", func(c *Config) { c.Limits.OutboundQueueBytes = 0 }, "limits.outbound_queue_bytes: must be positive"},
		{"write timeout", func(c *Config) { c.Limits.WriteTimeout = 0 }, "limits.write_timeout: must be positive, got 0s"},
		{"idle vs ping", func(c *Config) { c.Limits.IdleTimeout = c.Limits.PingInterval }, "limits.idle_timeout: 25s must be longer than limits.ping_interval 25s"},
		// 0 turns the client event limit off, as the engine reads it.
		{"no client event limit", func(c *Config) { c.Limits.ClientEventsPerSecond = 0 }, ""},
		{"events per second", func(c *Config) { c.Limits.ClientEventsPerSecond = -1 }, "limits.client_events_per_second: must not be negative (0: no limit), got -1"},
		{"per-IP rate", func(c *Config) { c.Limits.ConnectionsPerIPPerSecond = -1 }, "limits.connections_per_ip_per_second: must not be negative"},
		{"workers", func(c *Config) { c.Limits.Workers = -1 }, "limits.workers: must not be negative"},
		{"webhook body", func(c *Config) { c.Webhooks.MaxBodyBytes = 0 }, "webhooks.max_body_bytes: must be positive"},
		{"dedup TTL under a day", func(c *Config) { c.Webhooks.DedupTTL = time.Hour }, "webhooks.dedup_ttl: must be at least 24h (the contract remembers a webhook-id at least 24 h), got 1h0m0s"},
		{"dedup TTL zero", func(c *Config) { c.Webhooks.DedupTTL = 0 }, "webhooks.dedup_ttl: must be at least 24h"},
		{"dedup TTL a week", func(c *Config) { c.Webhooks.DedupTTL = 7 * 24 * time.Hour }, ""},
		{"webhook concurrency", func(c *Config) { c.Webhooks.Concurrency = 0 }, "webhooks.concurrency: must be positive"},
		{"backoff order", func(c *Config) { c.Forward.MaxBackoff = time.Millisecond }, "forward.max_backoff: 1ms is less than forward.initial_backoff 1s"},
		{"grace", func(c *Config) { c.Presence.Grace = -time.Second }, "presence.grace: must not be negative"},
		{"redis scheme", func(c *Config) { c.Broker.RedisURL = "http://secret@host" }, "broker.redis_url: must be redis://host:port or rediss://host:port"},
		{"rules file", func(c *Config) { c.Rules.File = "" }, "rules.file: must not be empty"},
		{"rules timeout", func(c *Config) { c.Rules.Timeout = 0 }, "rules.timeout: must be positive, got 0s"},
		{"rules max cost", func(c *Config) { c.Rules.MaxCost = 0 }, "rules.max_cost: must be positive, got 0"},
		{"rules workers", func(c *Config) { c.Rules.Workers = -1 }, "rules.workers: must not be negative (0: 2 × GOMAXPROCS), got -1"},
		{"rules workers set", func(c *Config) { c.Rules.Workers = 8 }, ""},
		{"forward max pending", func(c *Config) { c.Forward.MaxPending = 0 }, "forward.max_pending: must be positive, got 0"},
		{"forward max pending bytes", func(c *Config) { c.Forward.MaxPendingBytes = -1 }, "forward.max_pending_bytes: must be positive, got -1"},
		{"forward per-user share", func(c *Config) { c.Forward.MaxPendingPerUser = 0 }, "forward.max_pending_per_user: must be positive, got 0"},
		{"forward per-user share too big", func(c *Config) { c.Forward.MaxPendingPerUser = c.Forward.MaxPendingBytes + 1 },
			"forward.max_pending_per_user: 67108865 is more than forward.max_pending_bytes 67108864"},
		{"forward per-user share is all", func(c *Config) { c.Forward.MaxPendingPerUser = c.Forward.MaxPendingBytes }, ""},
		{"burst under the rate", func(c *Config) { c.Limits.ClientEventsBurst = 49 }, "limits.client_events_burst: 49 is less than limits.client_events_per_second 50"},
		{"burst equal to the rate", func(c *Config) { c.Limits.ClientEventsBurst = 50 }, ""},
		{"burst without a rate", func(c *Config) { c.Limits.ClientEventsPerSecond = 0; c.Limits.ClientEventsBurst = 0 }, ""},
		{"negative burst", func(c *Config) { c.Limits.ClientEventsPerSecond = 0; c.Limits.ClientEventsBurst = -1 }, "limits.client_events_burst: must not be negative, got -1"},
		{"close timeout", func(c *Config) { c.Limits.CloseTimeout = 0 }, "limits.close_timeout: must be positive, got 0s"},
		{"send buffer", func(c *Config) { c.Limits.SendBufferBytes = -1 }, "limits.send_buffer_bytes: must not be negative (0: the kernel's default), got -1"},
		{"kernel's send buffer", func(c *Config) { c.Limits.SendBufferBytes = 0 }, ""},
		{"store path", func(c *Config) { c.Store.Path = "" }, "store.path: must not be empty"},
		{"jwks", func(c *Config) {
			c.Auth.Algorithms = []string{"RS256"}
			c.Auth.JWKSURL = "https://idp.example/.well-known/jwks.json"
		}, ""},
		{"jwks with HS256 too", func(c *Config) {
			c.Auth.Algorithms = []string{"RS256", "HS256"}
			c.Auth.JWKSURL = "https://idp.example/jwks"
		}, ""},
		{"jwks url scheme", func(c *Config) { c.Auth.Algorithms = []string{"RS256"}; c.Auth.JWKSURL = "idp.example/jwks" }, `auth.jwks_url: must be an https:// (or http://) URL`},
		{"jwks without an asymmetric algorithm", func(c *Config) { c.Auth.JWKSURL = "https://idp.example/jwks" }, "JWKS URL is set but no allowed algorithm"},
		{"jwks refresh too short", func(c *Config) { c.Auth.JWKSRefresh = time.Second }, "auth.jwks_refresh: must be between 1m0s and 24h0m0s, got 1s"},
		{"jwks min refresh zero", func(c *Config) { c.Auth.JWKSMinRefresh = 0 }, "auth.jwks_min_refresh: must be between 1s and 1h, got 0s"},
		{"jwks timeout", func(c *Config) { c.Auth.JWKSTimeout = 0 }, "auth.jwks_timeout: must be positive and at most 1m, got 0s"},
		{"empty key file in a list", func(c *Config) { c.Auth.PublicKeyFile = []string{" "} }, "auth.public_key_file[0]: is empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.modify(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want an error containing %q", err, tc.want)
			}
			for _, secret := range []string{testSecret, "topsecret", "not base64!", "secret@host"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("Validate error reveals a secret: %v", err)
				}
			}
		})
	}
}

func TestConfigFieldsCoversStruct(t *testing.T) {
	fields, err := configFields()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key  string
		want reflect.Type
	}{
		{"listen", reflect.TypeFor[string]()},
		{"auth.jwt_secret", reflect.TypeFor[string]()},
		{"auth.leeway", reflect.TypeFor[time.Duration]()},
		{"webhooks.secrets", reflect.TypeFor[[]string]()},
		{"webhooks.max_body_bytes", reflect.TypeFor[int64]()},
		{"limits.max_message_bytes", reflect.TypeFor[int]()},
		{"rules.watch", reflect.TypeFor[bool]()},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			if got := fields[tc.key]; got != tc.want {
				t.Errorf("configFields()[%q] = %v, want %v", tc.key, got, tc.want)
			}
		})
	}
	// Every field of every section struct is a key.
	n := 0
	for f := range reflect.TypeFor[Config]().Fields() {
		if f.Type.Kind() == reflect.Struct {
			n += f.Type.NumField()
		} else {
			n++
		}
	}
	if len(fields) != n {
		t.Errorf("configFields has %d keys, Config has %d leaf fields", len(fields), n)
	}
}

// FuzzParseConfig feeds arbitrary YAML and one override to the loader: it
// must return a config or an error, never panic, and a config it returns
// must pass Validate.
func FuzzParseConfig(f *testing.F) {
	if data, err := os.ReadFile(examplePath); err == nil {
		f.Add(data, "SIDECAR_LIMITS__WORKERS=2")
	}
	f.Add([]byte("auth: {jwt_secret: '${S:-x}'}\nlimits: {max_message_bytes: 1e3}"), "S=0123456789abcdef0123456789abcdef")
	f.Add([]byte("auth:\nlimits: {}\nwebhooks: {secrets: whsec_YQ==,whsec_Yg==}"), "SIDECAR_AUTH__JWT_SECRET=k")
	f.Add([]byte("- a\n- b"), "")
	f.Add([]byte("presence: {grace: ${G}}"), "SIDECAR_=1")
	f.Add([]byte("api: {admin_if: '$${x} ${'}"), "SIDECAR_API__KEYS=a,,b")
	f.Fuzz(func(t *testing.T, data []byte, envVar string) {
		cfg, _, err := Parse("fuzz.yaml", data, []string{envVar})
		if err != nil {
			return
		}
		if cfg == nil {
			t.Fatal("Parse returned neither a config nor an error")
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Parse returned a config that fails Validate: %v", err)
		}
	})
}
