package config

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/v2"

	"github.com/sidecar/sidecar/rules"
)

// Load reads the YAML file at path (may be "" for defaults only), expands ${VAR} and ${VAR:-default}
// from environ inside the file, applies SIDECAR_ environment overrides, and validates.
// It returns warnings (e.g. unknown SIDECAR_ variables, dev secret in use) for the caller to log.
//
// Layers, each overriding the one before: Default(), the file, the
// environment (SIDECAR_AUTH__JWT_SECRET sets auth.jwt_secret).
//
//   - File: an unknown key is an error naming it, a value of the wrong type
//     an error naming its key; a null value keeps the default. ${VAR} and
//     ${VAR:-default} are expanded inside string values after the YAML is
//     parsed, so a secret holding '#', ': ' or quotes arrives intact. The
//     expansion is rules.ExpandEnv, the rules file's: ${VAR:-x} uses x when
//     VAR is unset or empty, an unset ${VAR} without a default is an error
//     naming VAR and the key, $${ is a literal ${, and a bare $VAR is left
//     alone (expressions may contain '$').
//   - Environment: a list is comma-separated; a variable naming no key is
//     only a warning.
//   - Strings where a list is expected are split on commas, in the file as
//     in the environment. Durations are strings such as "5s" (or 0).
//   - Relative rules.file, store.path (unless ":memory:") and
//     auth.public_key_file (each of its paths) are resolved against the directory of the config
//     file, whether they come from the file or are defaults; a path given
//     in the environment is relative to the working directory.
//
// Warnings are returned with the error too: an unknown SIDECAR_ variable
// often explains why validation failed.
func Load(path string, environ []string) (*Config, []string, error) {
	var data []byte
	if path != "" {
		var err error
		if data, err = os.ReadFile(path); err != nil {
			return nil, nil, fmt.Errorf("read config: %w", err)
		}
	}
	return Parse(path, data, environ)
}

// Parse is Load on the file's contents, data, read from path.
// With path "" there is no file layer and relative paths stay relative to
// the working directory.
func Parse(path string, data []byte, environ []string) (*Config, []string, error) {
	fields, err := configFields()
	if err != nil {
		return nil, nil, err
	}
	vars := envMap(environ)
	lookup := func(name string) (string, bool) { v, ok := vars[name]; return v, ok }
	k := koanf.New(".")
	var warnings []string

	if path != "" {
		fk := koanf.New(".")
		if err := fk.Load(rawbytes.Provider(data), yaml.Parser()); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		flat := fk.All()
		for _, key := range fk.Keys() {
			val, err := fileValue(key, flat[key], fields, lookup)
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
		Prefix:      EnvPrefix,
		EnvironFunc: func() []string { return environ },
		TransformFunc: func(name, value string) (string, any) {
			key := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, EnvPrefix)), "__", ".")
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

	cfg := Default()
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
		for i := range cfg.Auth.PublicKeyFile {
			resolve("auth.public_key_file", &cfg.Auth.PublicKeyFile[i])
		}
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
func fileValue(key string, val any, fields map[string]reflect.Type, lookup func(string) (string, bool)) (any, error) {
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
		out, err := rules.ExpandEnv(s, lookup)
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
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "__"))
}
