package sio

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

// The packets of the Engine.IO v4 protocol document and its test suite.
func TestParsePacketSpec(t *testing.T) {
	for _, tc := range []struct {
		in     string
		typ    PacketType
		data   string
		binary bool
	}{
		{`0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`, Open,
			`{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`, false},
		{"1", Close, "", false},
		{"2", Ping, "", false},
		{"2probe", Ping, "probe", false},
		{"3", Pong, "", false},
		{"3probe", Pong, "probe", false},
		{"4hello", Message, "hello", false},
		{"4HelloWorld", Message, "HelloWorld", false},
		{"4€", Message, "€", false},
		{"5", Upgrade, "", false},
		{"6", Noop, "", false},
		{"bAQIDBA==", Message, "AQIDBA==", true},
		{"b", Message, "", true},
		{`40{"sid":"wZX3oN0bSVIhsaknAAAI"}`, Message, `0{"sid":"wZX3oN0bSVIhsaknAAAI"}`, false},
	} {
		p, err := ParsePacket([]byte(tc.in))
		if err != nil {
			t.Errorf("ParsePacket(%q) = %v", tc.in, err)
			continue
		}
		if p.Type != tc.typ || string(p.Data) != tc.data || p.Binary != tc.binary {
			t.Errorf("ParsePacket(%q) = %v %q binary=%v, want %v %q binary=%v",
				tc.in, p.Type, p.Data, p.Binary, tc.typ, tc.data, tc.binary)
		}
		if got := AppendPacket(nil, p); string(got) != tc.in {
			t.Errorf("AppendPacket(ParsePacket(%q)) = %q", tc.in, got)
		}
	}
}

func TestParsePacketBinaryDecodes(t *testing.T) {
	p, err := ParsePacket([]byte("bAQIDBA=="))
	if err != nil {
		t.Fatal(err)
	}
	got, err := base64.StdEncoding.DecodeString(string(p.Data))
	if err != nil || !bytes.Equal(got, []byte{1, 2, 3, 4}) {
		t.Fatalf("decoded %v, %v; want 01 02 03 04", got, err)
	}
}

func TestParsePacketErrors(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want error
	}{
		{"", errEmptyPacket},
		{"abc", errPacketType},
		{"7", errPacketType},
		{"9hello", errPacketType},
		{"\x1e", errPacketType},
		{" 4hello", errPacketType},
		{"bAQIDBA=", errBase64},
		{"bAQID BA=", errBase64},
		{"bA===", errBase64},
		{"b====", errBase64},
		{"bAQ=DBA==", errBase64},
		{"bAQIDBA-_", errBase64},
	} {
		if _, err := ParsePacket([]byte(tc.in)); err != tc.want {
			t.Errorf("ParsePacket(%q) = %v, want %v", tc.in, err, tc.want)
		}
	}
}

// Every base64 text ParsePacket takes decodes with base64.StdEncoding.
func TestValidBase64AgreesWithStdEncoding(t *testing.T) {
	for n := range 40 {
		src := bytes.Repeat([]byte{0xfb, 0x01, 0xff}, n)[:n]
		enc := base64.StdEncoding.EncodeToString(src)
		if !validBase64([]byte(enc)) {
			t.Errorf("validBase64(%q) = false", enc)
		}
	}
	for _, s := range []string{"QQ==", "QUE=", "QUFB", "+/+/", ""} {
		if !validBase64([]byte(s)) {
			t.Errorf("validBase64(%q) = false", s)
		}
		if _, err := base64.StdEncoding.DecodeString(s); err != nil {
			t.Errorf("StdEncoding refuses %q: %v", s, err)
		}
	}
}

func TestParsePacketAliases(t *testing.T) {
	in := []byte("4hello")
	p, err := ParsePacket(in)
	if err != nil {
		t.Fatal(err)
	}
	if &p.Data[0] != &in[1] {
		t.Fatal("Data does not alias the input")
	}
}

// splitAll collects the packets of a payload, copying nothing.
func splitAll(body string) ([]Packet, error) {
	var got []Packet
	err := SplitPayload([]byte(body), func(p Packet) error {
		got = append(got, p)
		return nil
	})
	return got, err
}

func TestSplitPayloadSpec(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string // each packet as AppendPacket writes it
	}{
		{"4hello\x1e2\x1e4world", []string{"4hello", "2", "4world"}},
		{"4hello\x1ebAQIDBA==", []string{"4hello", "bAQIDBA=="}},
		{"4test1\x1e4test2\x1e4test3", []string{"4test1", "4test2", "4test3"}},
		{"4hello", []string{"4hello"}},
		{`42["hello"]` + "\x1e" + `42["world"]`, []string{`42["hello"]`, `42["world"]`}},
		{"1", []string{"1"}},
		{"3", []string{"3"}},
		{"6", []string{"6"}},
	} {
		got, err := splitAll(tc.in)
		if err != nil {
			t.Errorf("SplitPayload(%q) = %v", tc.in, err)
			continue
		}
		var enc []string
		for _, p := range got {
			enc = append(enc, string(AppendPacket(nil, p)))
		}
		if strings.Join(enc, "|") != strings.Join(tc.want, "|") {
			t.Errorf("SplitPayload(%q) = %q, want %q", tc.in, enc, tc.want)
		}
	}
}

func TestSplitPayloadErrors(t *testing.T) {
	for _, tc := range []struct {
		in     string
		want   error
		before int // packets given to fn before the error
	}{
		{"", errEmptyPacket, 0},
		{"\x1e", errEmptyPacket, 0},
		{"4a\x1e", errEmptyPacket, 1},
		{"\x1e4a", errEmptyPacket, 0},
		{"4a\x1e\x1e4b", errEmptyPacket, 1},
		{"abc", errPacketType, 0},
		{"4a\x1e9b\x1e4c", errPacketType, 1},
		{"2\x1ebA=", errBase64, 1},
	} {
		got, err := splitAll(tc.in)
		if err != tc.want || len(got) != tc.before {
			t.Errorf("SplitPayload(%q) = %d packets, %v; want %d, %v", tc.in, len(got), err, tc.before, tc.want)
		}
	}
}

func TestSplitPayloadStopsOnCallbackError(t *testing.T) {
	stop := errors.New("stop")
	n := 0
	err := SplitPayload([]byte("4a\x1e4b\x1e4c"), func(Packet) error {
		n++
		if n == 2 {
			return stop
		}
		return nil
	})
	if err != stop || n != 2 {
		t.Fatalf("err %v after %d packets, want stop after 2", err, n)
	}
}

func TestEngineIOEncoders(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{string(AppendOpen(nil, "lv_VI97HAXpY6yYWAAAC", []string{"websocket"}, 25*time.Second, 20*time.Second, 1000000)),
			`0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`},
		{string(AppendOpen(nil, "lv_VI97HAXpY6yYWAAAC", []string{"websocket"}, 25*time.Second, 5*time.Second, 1000000)),
			`0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":5000,"maxPayload":1000000}`},
		{string(AppendOpen(nil, "s", nil, 300*time.Millisecond, 200*time.Millisecond, 1000000)),
			`0{"sid":"s","upgrades":[],"pingInterval":300,"pingTimeout":200,"maxPayload":1000000}`},
		{string(AppendOpen(nil, `a"b`, []string{"websocket", "webtransport"}, time.Second, time.Second, 1)),
			`0{"sid":"a\"b","upgrades":["websocket","webtransport"],"pingInterval":1000,"pingTimeout":1000,"maxPayload":1}`},
		{string(AppendClose(nil)), "1"},
		{string(AppendPing(nil, "")), "2"},
		{string(AppendPong(nil, "")), "3"},
		{string(AppendPong(nil, "probe")), "3probe"},
		{string(AppendMessage(nil, []byte("hello"))), "4hello"},
		{string(AppendNoop(nil)), "6"},
		{string(AppendNoop(append(AppendPing(append(AppendMessage(nil, []byte("x")), Separator), ""), Separator))), "4x\x1e2\x1e6"},
	} {
		if tc.got != tc.want {
			t.Errorf("got  %s\nwant %s", tc.got, tc.want)
		}
	}
}

func TestPacketTypeString(t *testing.T) {
	want := []string{"open", "close", "ping", "pong", "message", "upgrade", "noop", "unknown"}
	for i, w := range want {
		if got := PacketType(i).String(); got != w {
			t.Errorf("PacketType(%d) = %q, want %q", i, got, w)
		}
	}
}
