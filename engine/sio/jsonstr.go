package sio

import (
	"unicode/utf16"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// asciiEscape says how appendJSONString writes each ASCII byte: 0 as is, 'u'
// as \u00XX, any other value v as a backslash then v.
var asciiEscape = func() (t [utf8.RuneSelf]byte) {
	for c := range 0x20 {
		t[c] = 'u'
	}
	t['\b'], t['\f'], t['\n'], t['\r'], t['\t'] = 'b', 'f', 'n', 'r', 't'
	t['"'], t['\\'] = '"', '\\'
	t['<'], t['>'], t['&'] = 'u', 'u', 'u'
	return t
}()

// appendJSONString appends s as a JSON string literal, escaped exactly as
// encoding/json escapes a Go string: '"', '\\' and the control characters
// (\b \f \n \r \t by name, the others as \u00XX), '<', '>' and '&' as \u003c
// \u003e \u0026, U+2028 and U+2029 as \u2028 and \u2029, and each byte of
// invalid UTF-8 as \ufffd. The result is always valid JSON and valid UTF-8,
// and safe inside HTML and JavaScript.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	done := 0 // s[:done] is written
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			esc := asciiEscape[c]
			i++
			if esc == 0 {
				continue
			}
			dst = append(dst, s[done:i-1]...)
			if esc == 'u' {
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			} else {
				dst = append(dst, '\\', esc)
			}
			done = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[done:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[done:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		done = i
	}
	dst = append(dst, s[done:]...)
	return append(dst, '"')
}

// unquote returns the value of the JSON string literal q, quotes included,
// decoded as encoding/json decodes it into a Go string: escapes resolved,
// surrogate pairs joined, and a lone surrogate or a byte of invalid UTF-8
// each turned into U+FFFD. When q has no escape and is valid UTF-8 the value
// aliases q; otherwise it is a new slice. ok is false when q is not a JSON
// string literal.
func unquote(q []byte) (v []byte, ok bool) {
	if len(q) < 2 || q[0] != '"' || q[len(q)-1] != '"' {
		return nil, false
	}
	s := q[1 : len(q)-1]
	plain := true
	for _, c := range s {
		if c == '\\' || c == '"' || c < 0x20 {
			plain = false
			break
		}
	}
	valid := utf8.Valid(s)
	if plain && valid {
		return s, true
	}
	// Escapes only shrink; a byte of invalid UTF-8 grows into U+FFFD's 3.
	size := len(s)
	if !valid {
		size *= 3
	}
	return appendUnquoted(make([]byte, 0, size), q)
}

// appendUnquoted appends to dst the value of the JSON string literal q, as
// unquote returns it, and is not ok when q is not a JSON string literal.
func appendUnquoted(dst, q []byte) ([]byte, bool) {
	if len(q) < 2 || q[0] != '"' || q[len(q)-1] != '"' {
		return dst, false
	}
	s := q[1 : len(q)-1]
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\\':
			if i+1 == len(s) {
				return dst, false
			}
			if e := s[i+1]; e != 'u' {
				switch e {
				case '"', '\\', '/':
				case 'b':
					e = '\b'
				case 'f':
					e = '\f'
				case 'n':
					e = '\n'
				case 'r':
					e = '\r'
				case 't':
					e = '\t'
				default:
					return dst, false
				}
				dst = append(dst, e)
				i += 2
				continue
			}
			r, ok := hex4(s[i+2:])
			if !ok {
				return dst, false
			}
			i += 6
			if utf16.IsSurrogate(r) {
				r2, ok := escapedRune(s[i:])
				if dec := utf16.DecodeRune(r, r2); ok && dec != utf8.RuneError {
					r = dec
					i += 6
				} else {
					r = utf8.RuneError
				}
			}
			dst = utf8.AppendRune(dst, r)
		case c == '"' || c < 0x20:
			return dst, false
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			i++
		default:
			r, size := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && size == 1 {
				dst = utf8.AppendRune(dst, utf8.RuneError)
			} else {
				dst = append(dst, s[i:i+size]...)
			}
			i += size
		}
	}
	return dst, true
}

// escapedRune reads a \uXXXX escape at the start of s.
func escapedRune(s []byte) (rune, bool) {
	if len(s) < 2 || s[0] != '\\' || s[1] != 'u' {
		return 0, false
	}
	return hex4(s[2:])
}

// hex4 reads four hexadecimal digits at the start of s.
func hex4(s []byte) (rune, bool) {
	if len(s) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range s[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
