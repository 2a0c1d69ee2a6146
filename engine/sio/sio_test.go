package sio

import (
	"strings"
	"testing"
)

// sioCase is one Engine.IO message carrying a Socket.IO packet, and what
// ParseSIO makes of it.
type sioCase struct {
	in   string // the whole Engine.IO message, leading '4' included
	typ  SIOType
	nsp  string
	id   int64 // -1: no ack id
	att  int
	data string // "" with nil Data
	err  error
}

// specPackets are the packets of the Socket.IO v5 protocol document (its
// encoding tables and sample session) and of its test suite, client's and
// server's alike.
var specPackets = []sioCase{
	// Connection to a namespace.
	{in: `40`, typ: Connect, nsp: "/", id: -1},
	{in: `40{"sid":"wZX3oN0bSVIhsaknAAAI"}`, typ: Connect, nsp: "/", id: -1, data: `{"sid":"wZX3oN0bSVIhsaknAAAI"}`},
	{in: `40/admin,`, typ: Connect, nsp: "/admin", id: -1},
	{in: `40/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}`, typ: Connect, nsp: "/admin", id: -1, data: `{"sid":"oSO0OpakMV_3jnilAAAA"}`},
	{in: `40/admin,{"sid":"-G5j-67EZFp-q59rADQM"}`, typ: Connect, nsp: "/admin", id: -1, data: `{"sid":"-G5j-67EZFp-q59rADQM"}`},
	{in: `44{"message":"Not authorized"}`, typ: ConnectError, nsp: "/", id: -1, data: `{"message":"Not authorized"}`},
	{in: `40{"token":"123"}`, typ: Connect, nsp: "/", id: -1, data: `{"token":"123"}`},
	{in: `40/custom,`, typ: Connect, nsp: "/custom", id: -1},
	{in: `40/custom`, typ: Connect, nsp: "/custom", id: -1},
	{in: `40/custom,{"token":"abc"}`, typ: Connect, nsp: "/custom", id: -1, data: `{"token":"abc"}`},
	{in: `40/random`, typ: Connect, nsp: "/random", id: -1},
	{in: `40/random,`, typ: Connect, nsp: "/random", id: -1},
	{in: `44/random,{"message":"Invalid namespace"}`, typ: ConnectError, nsp: "/random", id: -1, data: `{"message":"Invalid namespace"}`},

	// Sending and receiving data.
	{in: `42["foo"]`, typ: Event, nsp: "/", id: -1, data: `["foo"]`},
	{in: `42/admin,["bar"]`, typ: Event, nsp: "/admin", id: -1, data: `["bar"]`},
	{in: `451-["baz",{"_placeholder":true,"num":0}]`, typ: BinaryEvent, nsp: "/", id: -1, att: 1,
		data: `["baz",{"_placeholder":true,"num":0}]`, err: ErrBinary},
	{in: `452-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`, typ: BinaryEvent, nsp: "/admin", id: -1, att: 2,
		data: `["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`, err: ErrBinary},
	{in: `42["hey","Jude"]`, typ: Event, nsp: "/", id: -1, data: `["hey","Jude"]`},
	{in: `42["hello"]`, typ: Event, nsp: "/", id: -1, data: `["hello"]`},
	{in: `42["world"]`, typ: Event, nsp: "/", id: -1, data: `["world"]`},
	{in: `42["auth",{}]`, typ: Event, nsp: "/", id: -1, data: `["auth",{}]`},
	{in: `42["auth",{"token":"123"}]`, typ: Event, nsp: "/", id: -1, data: `["auth",{"token":"123"}]`},
	{in: `42/custom,["auth",{}]`, typ: Event, nsp: "/custom", id: -1, data: `["auth",{}]`},
	{in: `42/custom,["auth",{"token":"abc"}]`, typ: Event, nsp: "/custom", id: -1, data: `["auth",{"token":"abc"}]`},
	{in: `42["message","message to main namespace"]`, typ: Event, nsp: "/", id: -1, data: `["message","message to main namespace"]`},
	{in: `42["message-back","message to main namespace"]`, typ: Event, nsp: "/", id: -1, data: `["message-back","message to main namespace"]`},
	{in: `42["message",1,"2",{"3":[true]}]`, typ: Event, nsp: "/", id: -1, data: `["message",1,"2",{"3":[true]}]`},
	{in: `42["message-back",1,"2",{"3":[true]}]`, typ: Event, nsp: "/", id: -1, data: `["message-back",1,"2",{"3":[true]}]`},
	{in: `452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`, typ: BinaryEvent, nsp: "/", id: -1, att: 2,
		data: `["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`, err: ErrBinary},
	{in: `452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`, typ: BinaryEvent, nsp: "/", id: -1, att: 2,
		data: `["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`, err: ErrBinary},

	// Acknowledgement.
	{in: `4212["foo"]`, typ: Event, nsp: "/", id: 12, data: `["foo"]`},
	{in: `4312[]`, typ: Ack, nsp: "/", id: 12, data: `[]`},
	{in: `42/admin,13["foo"]`, typ: Event, nsp: "/admin", id: 13, data: `["foo"]`},
	{in: `43/admin,13["bar"]`, typ: Ack, nsp: "/admin", id: 13, data: `["bar"]`},
	{in: `451-14["foo",{"_placeholder":true,"num":0}]`, typ: BinaryEvent, nsp: "/", id: 14, att: 1,
		data: `["foo",{"_placeholder":true,"num":0}]`, err: ErrBinary},
	{in: `4314["bar"]`, typ: Ack, nsp: "/", id: 14, data: `["bar"]`},
	{in: `4215["foo"]`, typ: Event, nsp: "/", id: 15, data: `["foo"]`},
	{in: `461-15["bar",{"_placeholder":true,"num":0}]`, typ: BinaryAck, nsp: "/", id: 15, att: 1,
		data: `["bar",{"_placeholder":true,"num":0}]`, err: ErrBinary},
	{in: `42/admin,1["tellme"]`, typ: Event, nsp: "/admin", id: 1, data: `["tellme"]`},
	{in: `461-/admin,1[{"_placeholder":true,"num":0}]`, typ: BinaryAck, nsp: "/admin", id: 1, att: 1,
		data: `[{"_placeholder":true,"num":0}]`, err: ErrBinary},
	{in: `42456["message-with-ack",1,"2",{"3":[false]}]`, typ: Event, nsp: "/", id: 456, data: `["message-with-ack",1,"2",{"3":[false]}]`},
	{in: `43456[1,"2",{"3":[false]}]`, typ: Ack, nsp: "/", id: 456, data: `[1,"2",{"3":[false]}]`},
	{in: `452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`, typ: BinaryEvent, nsp: "/", id: 789, att: 2,
		data: `["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`, err: ErrBinary},
	{in: `462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`, typ: BinaryAck, nsp: "/", id: 789, att: 2,
		data: `[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`, err: ErrBinary},

	// Disconnection from a namespace.
	{in: `41`, typ: Disconnect, nsp: "/", id: -1},
	{in: `41/admin,`, typ: Disconnect, nsp: "/admin", id: -1},
	{in: `41/custom`, typ: Disconnect, nsp: "/custom", id: -1},

	// The test suite's invalid packets: the server closes the connection.
	{in: `4abc`, err: errSIOType},
	{in: `42{}`, err: errEventPayload},
	{in: `42abc["message-with-ack",1,"2",{"3":[false]}]`, err: errAckID},
}

// moreGood are packets the engine will meet that the documents do not show.
var moreGood = []sioCase{
	{in: `421["typing",{"to":"u2"}]`, typ: Event, nsp: "/", id: 1, data: `["typing",{"to":"u2"}]`},
	{in: `42["typing",{"to":"u2","isTyping":true}]`, typ: Event, nsp: "/", id: -1, data: `["typing",{"to":"u2","isTyping":true}]`},
	{in: `40{"pid":"p1","offset":"MjAyNi0x"}`, typ: Connect, nsp: "/", id: -1, data: `{"pid":"p1","offset":"MjAyNi0x"}`},
	{in: `429223372036854775807["a"]`, typ: Event, nsp: "/", id: 9223372036854775807, data: `["a"]`},
	{in: `420["a"]`, typ: Event, nsp: "/", id: 0, data: `["a"]`},
	{in: `4200042["a"]`, typ: Event, nsp: "/", id: 42, data: `["a"]`},
	{in: `42[ "a" , 1 ] `, typ: Event, nsp: "/", id: -1, data: `[ "a" , 1 ] `},
	{in: `42["\u0063onnected"]`, typ: Event, nsp: "/", id: -1, data: `["\u0063onnected"]`},
	{in: `42["connect-me"]`, typ: Event, nsp: "/", id: -1, data: `["connect-me"]`},
	{in: `42/,["a"]`, typ: Event, nsp: "/", id: -1, data: `["a"]`},
	{in: `40/`, typ: Connect, nsp: "/", id: -1},
	{in: `40/é-ünï,`, typ: Connect, nsp: "/é-ünï", id: -1},
	{in: `40/a b:c?d=e,`, typ: Connect, nsp: "/a b:c?d=e", id: -1},
	{in: `44"Not authorized"`, typ: ConnectError, nsp: "/", id: -1, data: `"Not authorized"`},
	{in: `44{"message":"no","data":{"code":"E1"}}`, typ: ConnectError, nsp: "/", id: -1, data: `{"message":"no","data":{"code":"E1"}}`},
	{in: `450-["a"]`, typ: BinaryEvent, nsp: "/", id: -1, att: 0, data: `["a"]`, err: ErrBinary},
	{in: `45256-["a"]`, typ: BinaryEvent, nsp: "/", id: -1, att: 256, data: `["a"]`, err: ErrBinary},
	{in: `450001-["a"]`, typ: BinaryEvent, nsp: "/", id: -1, att: 1, data: `["a"]`, err: ErrBinary},
	{in: `43/admin,7[{"ok":true}]`, typ: Ack, nsp: "/admin", id: 7, data: `[{"ok":true}]`},
	{in: `42["a",` + strings.Repeat("[", MaxNesting-1) + strings.Repeat("]", MaxNesting-1) + `]`, typ: Event, nsp: "/", id: -1,
		data: `["a",` + strings.Repeat("[", MaxNesting-1) + strings.Repeat("]", MaxNesting-1) + `]`},
	{in: `42["a","` + strings.Repeat("[", 3*MaxNesting) + `"]`, typ: Event, nsp: "/", id: -1,
		data: `["a","` + strings.Repeat("[", 3*MaxNesting) + `"]`},
}

// malformed are packets ParseSIO refuses, and why.
var malformed = []sioCase{
	{in: `4`, err: errSIOEmpty},
	{in: `47`, err: errSIOType},
	{in: `4-1`, err: errSIOType},
	{in: `4 2["a"]`, err: errSIOType},
	{in: `42`, err: errEventPayload},
	{in: `42/admin,`, err: errEventPayload},
	{in: `421`, err: errEventPayload},
	{in: `42"foo"`, err: errEventPayload},
	{in: `42[]`, err: errEventName},
	{in: `42[ ]`, err: errEventName},
	{in: `42[1,"a"]`, err: errEventName},
	{in: `42[null]`, err: errEventName},
	{in: `42[["a"]]`, err: errEventName},
	{in: `42["connect"]`, err: errEventReserved},
	{in: `42["connect_error",{}]`, err: errEventReserved},
	{in: `42["disconnect"]`, err: errEventReserved},
	{in: `42["disconnecting"]`, err: errEventReserved},
	{in: `42["newListener"]`, err: errEventReserved},
	{in: `42["removeListener"]`, err: errEventReserved},
	{in: `42["\u0063onnect"]`, err: errEventReserved},
	{in: `451-["disconnect",{"_placeholder":true,"num":0}]`, err: errEventReserved},
	{in: `42["a"`, err: errJSON},
	{in: `42["a",]`, err: errJSON},
	{in: `42["a"]x`, err: errJSON},
	{in: `42["a"]["b"]`, err: errJSON},
	{in: `42["a\x"]`, err: errJSON},
	{in: "42[\"a\nb\"]", err: errJSON},
	{in: `42["a",{'b':1}]`, err: errJSON},
	{in: `40{"a":1}garbage`, err: errJSON},
	{in: `40{`, err: errJSON},
	{in: `42abc[...]`, err: errAckID},
	{in: `42true`, err: errAckID},
	{in: `42 ["a"]`, err: errAckID},
	{in: `4212 ["a"]`, err: errAckID},
	{in: `42-1["a"]`, err: errAckID},
	{in: `4212abc["a"]`, err: errAckID},
	{in: `421.5["a"]`, err: errAckID},
	{in: `42/admin,x["a"]`, err: errAckID},
	{in: `429223372036854775808["a"]`, err: errAckIDOverflow},
	{in: `4299999999999999999999999999999999["a"]`, err: errAckIDOverflow},
	{in: `43` + strings.Repeat("9", 4096) + `[]`, err: errAckIDOverflow},
	{in: `42/admin["foo"]`, err: errNamespaceEnd},
	{in: `40/admin{"token":"1"}`, err: errNamespaceEnd},
	{in: `44/admin"no"`, err: errNamespaceEnd},
	{in: "42/ad\x01min,[\"a\"]", err: errNamespaceChars},
	{in: "40/a\x1eb,", err: errNamespaceChars},
	{in: "40/a\x7f,", err: errNamespaceChars},
	{in: "40/a\xff,", err: errNamespaceChars},
	{in: `41{}`, err: errDisconnectPayload},
	{in: `41/admin,{}`, err: errDisconnectPayload},
	{in: `41[]`, err: errDisconnectPayload},
	{in: `40[]`, err: errConnectPayload},
	{in: `40"x"`, err: errConnectPayload},
	{in: `43["a"]`, err: errAckWithoutID},
	{in: `43[]`, err: errAckWithoutID},
	{in: `431{}`, err: errAckPayload},
	{in: `431`, err: errAckPayload},
	{in: `43/admin,1"x"`, err: errAckPayload},
	{in: `44`, err: errConnectErrorPayload},
	{in: `44[]`, err: errConnectErrorPayload},
	{in: `44/admin,`, err: errConnectErrorPayload},
	{in: `45["a"]`, err: errAttachments},
	{in: `45-["a"]`, err: errAttachments},
	{in: `451["a"]`, err: errAttachments},
	{in: `45a-["a"]`, err: errAttachments},
	{in: `451`, err: errAttachments},
	{in: `46`, err: errAttachments},
	{in: `45257-["a"]`, err: errAttachmentsMany},
	{in: `459999-["a"]`, err: errAttachmentsMany},
	{in: `45` + strings.Repeat("9", 4096) + `-["a"]`, err: errAttachmentsMany},
	{in: `451-`, err: errEventPayload},
	{in: `461-["a"]`, err: errAckWithoutID},
	{in: `42[` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `]`, err: errNesting},
	{in: `42["a",` + strings.Repeat("[", MaxNesting) + strings.Repeat("]", MaxNesting) + `]`, err: errNesting},
	{in: `40{"a":` + strings.Repeat(`{"a":`, MaxNesting) + "1" + strings.Repeat("}", MaxNesting) + "}", err: errNesting},
}

func TestParseSIOSpec(t *testing.T)      { checkSIOCases(t, specPackets) }
func TestParseSIOMore(t *testing.T)      { checkSIOCases(t, moreGood) }
func TestParseSIOMalformed(t *testing.T) { checkSIOCases(t, malformed) }

// checkSIOCases parses each case's Engine.IO message, then its Socket.IO
// packet, and checks the result; for each packet it accepts (ErrBinary
// included) AppendSIOPacket must give back a message that parses the same.
func checkSIOCases(t *testing.T, cases []sioCase) {
	t.Helper()
	for _, tc := range cases {
		eio, err := ParsePacket([]byte(tc.in))
		if err != nil || eio.Type != Message {
			t.Errorf("ParsePacket(%q) = %v %v, want a message", tc.in, eio.Type, err)
			continue
		}
		p, err := ParseSIO(eio.Data)
		if err != tc.err {
			t.Errorf("ParseSIO(%q) = %v, want %v", tc.in, err, tc.err)
			continue
		}
		if err != nil && err != ErrBinary {
			if p.Data != nil || p.Namespace != "" {
				t.Errorf("ParseSIO(%q) failed with a packet %+v", tc.in, p)
			}
			continue
		}
		id, hasID := tc.id, tc.id >= 0
		if !hasID {
			id = 0
		}
		want := SIOPacket{Type: tc.typ, Namespace: tc.nsp, ID: id, HasID: hasID, Attachments: tc.att}
		if tc.data != "" {
			want.Data = []byte(tc.data)
		}
		if !sameSIO(p, want) {
			t.Errorf("ParseSIO(%q) = %+v data %q, want %+v data %q", tc.in, p, p.Data, want, tc.data)
			continue
		}
		checkSIORoundTrip(t, p, err)
	}
}

// checkSIORoundTrip checks that AppendSIOPacket(p) parses back to p, with
// the same error.
func checkSIORoundTrip(t *testing.T, p SIOPacket, perr error) {
	t.Helper()
	enc := AppendSIOPacket(nil, p)
	eio, err := ParsePacket(enc)
	if err != nil || eio.Type != Message || eio.Binary {
		t.Fatalf("AppendSIOPacket(%+v) = %q: ParsePacket %v %v", p, enc, eio.Type, err)
	}
	back, err := ParseSIO(eio.Data)
	if err != perr || !sameSIO(back, p) {
		t.Fatalf("ParseSIO(AppendSIOPacket(%+v)) = %+v %v (from %q)", p, back, err, enc)
	}
}

// sameSIO reports whether a and b are the same packet.
func sameSIO(a, b SIOPacket) bool {
	return a.Type == b.Type && a.Namespace == b.Namespace && a.ID == b.ID && a.HasID == b.HasID &&
		a.Attachments == b.Attachments && string(a.Data) == string(b.Data) && (a.Data == nil) == (b.Data == nil)
}

func TestParseSIOAliases(t *testing.T) {
	in := []byte(`2/admin,1["a",{"b":1}]`)
	p, err := ParseSIO(in)
	if err != nil {
		t.Fatal(err)
	}
	if &p.Data[0] != &in[9] {
		t.Fatal("Data does not alias the input")
	}
}

func TestSIOTypeString(t *testing.T) {
	want := []string{"CONNECT", "DISCONNECT", "EVENT", "ACK", "CONNECT_ERROR", "BINARY_EVENT", "BINARY_ACK", "UNKNOWN"}
	for i, w := range want {
		if got := SIOType(i).String(); got != w {
			t.Errorf("SIOType(%d) = %q, want %q", i, got, w)
		}
	}
}
