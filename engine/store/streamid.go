package store

import (
	"math"
	"strconv"
	"strings"
)

// maxStreamIDLen is the longest stream id: two uint64s of 20 digits each
// and the dash.
const maxStreamIDLen = 41

// StreamID is a parsed stream id, "<unix millis>-<seq>" in decimal; ids are
// ordered by (Ms, Seq). The engine makes them increase on a node; across a
// restart Seq starts again at 1 but Ms keeps increasing.
type StreamID struct{ Ms, Seq uint64 }

// ParseStreamID parses s strictly: decimal digits, '-', decimal digits,
// each part fitting a uint64, at most 41 bytes; no sign, space or other
// byte. Leading zeros are accepted (String drops them).
func ParseStreamID(s string) (StreamID, bool) {
	if len(s) > maxStreamIDLen {
		return StreamID{}, false
	}
	msPart, seqPart, ok := strings.Cut(s, "-")
	if !ok {
		return StreamID{}, false
	}
	ms, ok1 := parseDecimal(msPart)
	seq, ok2 := parseDecimal(seqPart)
	if !ok1 || !ok2 {
		return StreamID{}, false
	}
	return StreamID{Ms: ms, Seq: seq}, true
}

// parseDecimal parses a non-empty run of ASCII digits into a uint64.
// strconv.ParseUint would do, but this one cannot be widened by accident
// (base 0 accepts "0x" and '_') and does not allocate an error.
func parseDecimal(s string) (uint64, bool) {
	if s == "" {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		d := uint64(s[i]) - '0'
		if d > 9 || n > (math.MaxUint64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// Less reports whether a comes before b.
func (a StreamID) Less(b StreamID) bool {
	return a.Ms < b.Ms || a.Ms == b.Ms && a.Seq < b.Seq
}

// String is the id's canonical form, which ParseStreamID reads back.
func (a StreamID) String() string {
	var b [maxStreamIDLen]byte
	out := strconv.AppendUint(b[:0], a.Ms, 10)
	out = append(out, '-')
	out = strconv.AppendUint(out, a.Seq, 10)
	return string(out)
}

// appendHex appends a's key form: both parts in 16 lower-case hex digits,
// so that the lexical order of keys is the order of ids.
func (a StreamID) appendHex(b []byte) []byte {
	const digits = "0123456789abcdef"
	for _, v := range [2]uint64{a.Ms, a.Seq} {
		for shift := 60; shift >= 0; shift -= 4 {
			b = append(b, digits[v>>uint(shift)&0xf])
		}
	}
	return b
}

// hexIDLen is the length of appendHex's output.
const hexIDLen = 32

// parseHexID reads appendHex's output back.
func parseHexID(s string) (StreamID, bool) {
	if len(s) != hexIDLen {
		return StreamID{}, false
	}
	ms, ok1 := parseHex16(s[:16])
	seq, ok2 := parseHex16(s[16:])
	return StreamID{Ms: ms, Seq: seq}, ok1 && ok2
}

// parseHex16 reads 16 lower-case hex digits. Since reads an id out of
// every key it returns: hence a table and no branch per digit.
func parseHex16(s string) (uint64, bool) {
	var v uint64
	var bad byte
	for i := range 16 {
		d := hexValue[s[i]]
		bad |= d
		v = v<<4 | uint64(d&0xf)
	}
	return v, bad <= 0xf
}

// hexValue maps a lower-case hex digit to its value, any other byte to
// 0xff.
var hexValue = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i, c := range "0123456789abcdef" {
		t[c] = byte(i)
	}
	return t
}()
