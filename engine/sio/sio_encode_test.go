package sio

import (
	"encoding/json"
	"testing"
)

func TestSocketIOEncoders(t *testing.T) {
	for _, tc := range []struct {
		got  []byte
		want string
	}{
		// The documents' packets.
		{AppendConnect(nil, "/", "wZX3oN0bSVIhsaknAAAI", ""), `40{"sid":"wZX3oN0bSVIhsaknAAAI"}`},
		{AppendConnect(nil, "", "wZX3oN0bSVIhsaknAAAI", ""), `40{"sid":"wZX3oN0bSVIhsaknAAAI"}`},
		{AppendConnect(nil, "/admin", "oSO0OpakMV_3jnilAAAA", ""), `40/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}`},
		{AppendConnectError(nil, "/", "Not authorized", nil), `44{"message":"Not authorized"}`},
		{AppendConnectError(nil, "/random", "Invalid namespace", nil), `44/random,{"message":"Invalid namespace"}`},
		{AppendEvent(nil, "/", "foo", nil, ""), `42["foo"]`},
		{AppendEvent(nil, "/admin", "bar", nil, ""), `42/admin,["bar"]`},
		{AppendEvent(nil, "/", "hey", []byte(`"Jude"`), ""), `42["hey","Jude"]`},
		{AppendEvent(nil, "/", "auth", []byte(`{}`), ""), `42["auth",{}]`},
		{AppendEvent(nil, "/custom", "auth", []byte(`{"token":"abc"}`), ""), `42/custom,["auth",{"token":"abc"}]`},
		{AppendAck(nil, "/", 12), `4312[]`},
		{AppendAck(nil, "/admin", 13, []byte(`"bar"`)), `43/admin,13["bar"]`},
		{AppendAck(nil, "/", 14, []byte(`"bar"`)), `4314["bar"]`},
		{AppendAck(nil, "/", 456, []byte(`1`), []byte(`"2"`), []byte(`{"3":[false]}`)), `43456[1,"2",{"3":[false]}]`},
		{AppendDisconnect(nil, "/"), `41`},
		{AppendDisconnect(nil, "/admin"), `41/admin,`},

		// What the engine sends.
		{AppendEvent(nil, "/", "typing", []byte(`{"from":"u1","isTyping":true}`), ""), `42["typing",{"from":"u1","isTyping":true}]`},
		{AppendEvent(nil, "/", "typing", []byte(`{"from":"u1"}`), "MjAyNi0x"), `42["typing",{"from":"u1"},"MjAyNi0x"]`},
		{AppendEvent(nil, "/", "ping", nil, "MjAyNi0x"), `42["ping","MjAyNi0x"]`},
		{AppendEvent(nil, "/", "e", []byte{}, ""), `42["e"]`},
		{AppendEvent(nil, "/", `say "hi" <b>&\`, []byte(`1`), "o\"1"), `42["say \"hi\" \u003cb\u003e\u0026\\",1,"o\"1"]`},
		{AppendAck(nil, "/", 1, []byte(`{"ok":true}`)), `431[{"ok":true}]`},
		{AppendAck(nil, "/", 9223372036854775807, []byte(`{"error":{"code":"forbidden","message":"no"}}`)),
			`439223372036854775807[{"error":{"code":"forbidden","message":"no"}}]`},
		{AppendConnect(nil, "/", "s1", "p1"), `40{"sid":"s1","pid":"p1"}`},
		{AppendConnectError(nil, "/", "Not authorized", []byte(`{"code":"E1"}`)), `44{"message":"Not authorized","data":{"code":"E1"}}`},
		{AppendConnectError(nil, "/", "a\nb", nil), `44{"message":"a\nb"}`},
	} {
		if string(tc.got) != tc.want {
			t.Errorf("got  %s\nwant %s", tc.got, tc.want)
		}
	}
}

// Every encoder's output parses back, through ParsePacket and ParseSIO, to
// what it was given.
func TestSocketIOEncodersParseBack(t *testing.T) {
	for _, name := range jsonStrings {
		for _, nsp := range []string{"/", "/admin", "/é"} {
			enc := AppendEvent(nil, nsp, name, []byte(`{"to":"u2"}`), "off"+name)
			p := mustParseMessage(t, enc)
			e, err := SplitEvent(p.Data)
			want := string(mustRoundTripJSON(t, name))
			if err != nil || p.Type != Event || p.Namespace != nsp || p.HasID ||
				string(e.Name) != want || string(e.Arg) != `{"to":"u2"}` || e.NArgs != 2 {
				t.Fatalf("%s parses to %+v, %q %q %d, %v", enc, p, e.Name, e.Arg, e.NArgs, err)
			}
		}
	}
	p := mustParseMessage(t, AppendAck(nil, "/admin", 77, []byte(`{"ok":true}`)))
	if p.Type != Ack || p.Namespace != "/admin" || p.ID != 77 || !p.HasID || string(p.Data) != `[{"ok":true}]` {
		t.Fatalf("ack parses to %+v", p)
	}
	p = mustParseMessage(t, AppendConnect(nil, "/admin", "s\"1", "p1"))
	var hs struct{ Sid, Pid string }
	if err := json.Unmarshal(p.Data, &hs); err != nil || p.Type != Connect || hs.Sid != `s"1` || hs.Pid != "p1" {
		t.Fatalf("connect parses to %+v (%+v, %v)", p, hs, err)
	}
	p = mustParseMessage(t, AppendConnectError(nil, "/random", "Invalid namespace", nil))
	if p.Type != ConnectError || p.Namespace != "/random" || string(p.Data) != `{"message":"Invalid namespace"}` {
		t.Fatalf("connect error parses to %+v", p)
	}
	p = mustParseMessage(t, AppendDisconnect(nil, "/admin"))
	if p.Type != Disconnect || p.Namespace != "/admin" || p.Data != nil {
		t.Fatalf("disconnect parses to %+v", p)
	}
}

// mustParseMessage parses msg as an Engine.IO message carrying a Socket.IO
// packet.
func mustParseMessage(t *testing.T, msg []byte) SIOPacket {
	t.Helper()
	eio, err := ParsePacket(msg)
	if err != nil || eio.Type != Message {
		t.Fatalf("ParsePacket(%q) = %v %v", msg, eio.Type, err)
	}
	p, err := ParseSIO(eio.Data)
	if err != nil {
		t.Fatalf("ParseSIO(%q) = %v", eio.Data, err)
	}
	return p
}

// mustRoundTripJSON returns s as encoding/json gives it back after
// marshalling it (invalid UTF-8 turned into U+FFFD).
func mustRoundTripJSON(t *testing.T, s string) []byte {
	t.Helper()
	b, _ := json.Marshal(s)
	var back string
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	return []byte(back)
}
