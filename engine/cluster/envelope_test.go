package cluster

import (
	"reflect"
	"testing"
	"time"

	"github.com/sidecar/sidecar/engine"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	sent := time.Unix(1700000000, 123456789)
	for _, m := range []engine.Message{
		{ID: "1-1", Event: "n", Data: []byte(`{"a":1}`), To: engine.Target{Users: []string{"alice", "bob"}}},
		{ID: "2-5", Event: "all", Data: []byte(`null`), To: engine.Target{All: true, Except: []string{"x"}}, Stamped: true},
		{Event: "r", Data: []byte(`"é\u0000"`), To: engine.Target{Rooms: []string{"", "room with spaces"}, Users: []string{"u\x00"}}},
	} {
		env, err := decodeEnvelope(string(encodeMessage("node-1", sent, &m)))
		if err != nil {
			t.Fatalf("%+v: %v", m, err)
		}
		m.Remote = true
		if env.kind != kindMessage || env.origin != "node-1" || !env.sent.Equal(sent) || !reflect.DeepEqual(env.msg, m) {
			t.Errorf("round trip of %+v: got %+v", m, env)
		}
	}
	env, err := decodeEnvelope(string(encodeRooms("n", sent, "alice", true, []string{"a", "b"})))
	if err != nil || env.kind != kindRooms || env.user != "alice" || !env.leave || !reflect.DeepEqual(env.rooms, []string{"a", "b"}) {
		t.Errorf("rooms: %+v, %v", env, err)
	}
}

func TestEnvelopeFromANewerNode(t *testing.T) {
	b := encodeMessage("n", time.Now(), &engine.Message{Event: "e", Data: []byte(`1`), To: engine.Target{All: true}})
	// An unknown flag, and a field after the last: both ignored.
	i := len(b) - 4 // flags, then three empty lists
	b[i] |= 0x80
	if env, err := decodeEnvelope(string(b) + "\x05extra"); err != nil || !env.msg.To.All || env.msg.Event != "e" {
		t.Fatalf("%+v, %v", env, err)
	}
}

func TestEnvelopeMalformed(t *testing.T) {
	good := string(encodeMessage("n", time.Now(), &engine.Message{Event: "e", Data: []byte(`1`), To: engine.Target{Users: []string{"u"}}}))
	for name, p := range map[string]string{
		"empty":            "",
		"unknown kind":     "X" + good[1:],
		"truncated":        good[:len(good)-1],
		"no time":          "M\x01n",
		"huge string":      "M\xff\xff\xff\xff\x0f",
		"huge list":        string(encodeRooms("n", time.Now(), "u", false, nil)[:len(encodeRooms("n", time.Now(), "u", false, nil))-1]) + "\xff\x7f",
		"overlong varint":  "M\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
		"JSON from a peer": `{"type":"message"}`,
	} {
		if _, err := decodeEnvelope(p); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

func FuzzDecodeEnvelope(f *testing.F) {
	f.Add(string(encodeMessage("n", time.Now(), &engine.Message{ID: "1-1", Event: "e", Data: []byte(`{}`), To: engine.Target{Users: []string{"u"}, Rooms: []string{"r"}}})))
	f.Add(string(encodeRooms("n", time.Now(), "u", true, []string{"r"})))
	f.Add("")
	f.Fuzz(func(t *testing.T, p string) {
		env, err := decodeEnvelope(p)
		if err != nil {
			return
		}
		// What decodes encodes back to the same bytes.
		var again []byte
		switch env.kind {
		case kindMessage:
			again = encodeMessage(env.origin, env.sent, &env.msg)
		case kindRooms:
			again = encodeRooms(env.origin, env.sent, env.user, env.leave, env.rooms)
		}
		// Unknown flags and trailing bytes are ignored: what is read
		// encodes to what reads the same.
		env2, err := decodeEnvelope(string(again))
		if err != nil || !reflect.DeepEqual(env, env2) {
			t.Fatalf("%q decoded to %+v, which encodes to %q, which decodes to %+v, %v", p, env, again, env2, err)
		}
	})
}
