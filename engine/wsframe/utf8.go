package wsframe

import "unicode/utf8"

// utf8State is the progress of an incremental UTF-8 validation, small enough
// to live in every Reader: the low two bits count the continuation bytes
// still expected, the rest name the range the next one must fall in (RFC
// 3629 section 4 restricts the second byte after E0, ED, F0 and F4 to reject
// overlong forms, surrogates and code points above U+10FFFF).
// The zero value is "between characters".
type utf8State uint8

const (
	contAny  utf8State = 0 << 2 // 80..BF
	contE0   utf8State = 1 << 2 // A0..BF
	contED   utf8State = 2 << 2 // 80..9F
	contF0   utf8State = 3 << 2 // 90..BF
	contF4   utf8State = 4 << 2 // 80..8F
	utf8Left utf8State = 3
)

// step advances s by one byte; ok is false when b cannot occur here.
func (s utf8State) step(b byte) (next utf8State, ok bool) {
	if s == 0 {
		switch {
		case b < 0x80:
			return 0, true
		case b < 0xC2: // continuation byte, or overlong lead C0/C1
			return 0, false
		case b < 0xE0:
			return 1, true
		case b == 0xE0:
			return 2 | contE0, true
		case b == 0xED:
			return 2 | contED, true
		case b < 0xF0:
			return 2, true
		case b == 0xF0:
			return 3 | contF0, true
		case b < 0xF4:
			return 3, true
		case b == 0xF4:
			return 3 | contF4, true
		}
		return 0, false
	}
	lo, hi := byte(0x80), byte(0xBF)
	switch s &^ utf8Left {
	case contE0:
		lo = 0xA0
	case contED:
		hi = 0x9F
	case contF0:
		lo = 0x90
	case contF4:
		hi = 0x8F
	}
	if b < lo || b > hi {
		return 0, false
	}
	return s&utf8Left - 1, true
}

// validate continues the validation of a text message with its next bytes p.
// A character may be split anywhere between calls; ok is false as soon as p
// contains a byte that no continuation could make valid. The message as a
// whole is valid only if the final state is 0.
//
// Only the few bytes of a character split at either edge of p go through
// step; the rest is left to utf8.Valid, which is much faster on ASCII.
func (s utf8State) validate(p []byte) (next utf8State, ok bool) {
	for s != 0 && len(p) > 0 {
		if s, ok = s.step(p[0]); !ok {
			return s, false
		}
		p = p[1:]
	}
	i := incompleteTail(p)
	if !utf8.Valid(p[:i]) {
		return 0, false
	}
	for _, b := range p[i:] {
		if s, ok = s.step(b); !ok {
			return s, false
		}
	}
	return s, true
}

// incompleteTail returns where a character that starts in p but does not end
// in it begins, or len(p) when p ends on a character boundary (or on bytes
// utf8.Valid will reject anyway).
func incompleteTail(p []byte) int {
	n := len(p)
	for i := n - 1; i >= 0 && i >= n-utf8.UTFMax+1; i-- {
		b := p[i]
		if b < 0x80 {
			return n
		}
		if b >= 0xC0 { // a lead byte, valid or not
			size := 2
			if b >= 0xF0 {
				size = 4
			} else if b >= 0xE0 {
				size = 3
			}
			if i+size > n {
				return i
			}
			return n
		}
	}
	return n
}
