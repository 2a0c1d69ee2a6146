package rules

import (
	"errors"
	"fmt"
	"strings"
)

// ExpandEnv replaces ${VAR} and ${VAR:-default} in s with values from
// lookup. It is the one expander of the project: the rules file and the
// config file both use it, so ${VAR} means the same in both.
//
//   - ${VAR} is VAR's value; set but empty, it is "".
//   - ${VAR:-default} is default when VAR is unset or empty, as in the shell.
//   - An unset ${VAR} without a default is an error naming VAR: a missing
//     secret or URL stops the load rather than becoming "" silently.
//   - $${ is a literal ${.
//   - Only the braced form expands: a bare $VAR (expr's $env) is left alone.
//
// VAR is a letter or '_' followed by letters, digits and '_'. A nil lookup
// has every variable unset, so only ${VAR:-default} works.
func ExpandEnv(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		if i > 0 && s[i-1] == '$' { // $${ is an escaped ${
			b.WriteString(s[:i])
			b.WriteString("{")
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", errors.New("unclosed ${ (write $${ for a literal ${)")
		}
		body := s[i+2 : i+end]
		s = s[i+end+1:]
		name, def, hasDef := strings.Cut(body, ":-")
		if !validVarName(name) {
			return "", fmt.Errorf("bad variable name in ${%s}", body)
		}
		v, ok := "", false
		if lookup != nil {
			v, ok = lookup(name)
		}
		switch {
		case ok && (v != "" || !hasDef): // like the shell, :- also replaces an empty value
			b.WriteString(v)
		case hasDef:
			b.WriteString(def)
		default:
			return "", fmt.Errorf("environment variable %s is not set (use ${%s:-default} for a default)", name, name)
		}
	}
}

func validVarName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_', 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
