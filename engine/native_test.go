package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"testing"

	"github.com/gobwas/ws"

	"github.com/sidecar/sidecar/engine/wsframe"
)

func TestNativeDecode(t *testing.T) {
	for _, tc := range []struct {
		name string
		op   ws.OpCode
		in   string
		want clientEvent
		code ws.StatusCode // 0: no error
	}{
		{"event with data and ack", ws.OpText, `{"event":"typing","data":{"to":"u2"},"ack":7}`,
			clientEvent{name: "typing", raw: []byte(`{"to":"u2"}`), ack: 7, hasAck: true}, 0},
		{"no data", ws.OpText, `{"event":"hello"}`, clientEvent{name: "hello"}, 0},
		{"bare string data", ws.OpText, `{"event":"register","data":"u1"}`, clientEvent{name: "register", raw: []byte(`"u1"`)}, 0},
		{"no event name", ws.OpText, `{"data":1,"ack":3}`, clientEvent{raw: []byte(`1`), ack: 3, hasAck: true}, 0},
		{"data not JSON", ws.OpText, `{"event":"x","data":{]}`, clientEvent{}, ws.StatusInvalidFramePayloadData},
		{"ack 0 is an ack", ws.OpText, `{"event":"x","ack":0}`, clientEvent{name: "x", hasAck: true}, 0},
		{"not JSON", ws.OpText, `{"event":`, clientEvent{}, ws.StatusInvalidFramePayloadData},
		{"not an object", ws.OpText, `[1,2]`, clientEvent{}, ws.StatusInvalidFramePayloadData},
		{"event not a string", ws.OpText, `{"event":5}`, clientEvent{}, ws.StatusInvalidFramePayloadData},
		{"ack not a number", ws.OpText, `{"event":"x","ack":"7"}`, clientEvent{}, ws.StatusInvalidFramePayloadData},
		{"binary", ws.OpBinary, `{"event":"x"}`, clientEvent{}, ws.StatusInvalidFramePayloadData},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := nativeCodec{}.decode(tc.op, []byte(tc.in))
			var ce *wsframe.CloseError
			switch {
			case tc.code != 0:
				if !errors.As(err, &ce) || ce.Code != tc.code {
					t.Fatalf("decode(%s) = %v, %v; want close %d", tc.in, got, err, tc.code)
				}
				return
			case err != nil:
				t.Fatalf("decode(%s): %v", tc.in, err)
			}
			tc.want.size = len(tc.in)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("decode(%s) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

// The server's frames are single, final text frames whose payload is the
// JSON the contract names.
func TestNativeEncode(t *testing.T) {
	var c nativeCodec
	for _, tc := range []struct {
		name  string
		frame []byte
		want  string
	}{
		{"event", c.encodeEvent("newNotification", []byte(`{"title":"Hi"}`), "1-2"), `{"event":"newNotification","data":{"title":"Hi"},"id":"1-2"}`},
		{"event name needing escapes", c.encodeEvent("a\"b", []byte(`null`), "1-3"), `{"event":"a\"b","data":null,"id":"1-3"}`},
		{"ack ok", c.encodeAck(7, "", ""), `{"ack":7,"ok":true}`},
		{"ack error", c.encodeAck(8, ackForbidden, `no "way"`), `{"ack":8,"error":{"code":"forbidden","message":"no \"way\""}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := framePayload(t, tc.frame); got != tc.want {
				t.Errorf("payload %s, want %s", got, tc.want)
			}
		})
	}
}

// framePayload checks f is one final unmasked text frame and returns its
// payload.
func framePayload(t *testing.T, f []byte) string {
	t.Helper()
	h, err := ws.ReadHeader(bytes.NewReader(f))
	if err != nil || !h.Fin || h.Masked || h.OpCode != ws.OpText {
		t.Fatalf("frame header %+v, %v", h, err)
	}
	p := f[len(f)-int(h.Length):]
	if !json.Valid(p) {
		t.Fatalf("payload %q is not JSON", p)
	}
	return string(p)
}

// FuzzNativeDecode: any client message either decodes or is refused with
// 1007, never a panic; and a message built from what decoded decodes to
// the same.
func FuzzNativeDecode(f *testing.F) {
	for _, s := range []string{`{"event":"typing","data":{"to":"u2"},"ack":7}`, `{"event":"x"}`, `[]`, `{"data":"\u00e9"}`, `{"ack":1e3}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		ev, _, err := nativeCodec{}.decode(ws.OpText, p)
		if err != nil {
			var ce *wsframe.CloseError
			if !errors.As(err, &ce) || ce.Code != ws.StatusInvalidFramePayloadData {
				t.Fatalf("decode(%q): %v, want a 1007 close", p, err)
			}
			return
		}
		m := map[string]any{"event": ev.name, "data": ev.data()}
		if ev.hasAck {
			m["ack"] = json.Number(strconv.FormatInt(ev.ack, 10))
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", ev, err)
		}
		again, _, err := nativeCodec{}.decode(ws.OpText, b)
		if err != nil || again.name != ev.name || again.ack != ev.ack || again.hasAck != ev.hasAck || !reflect.DeepEqual(again.data(), ev.data()) {
			t.Fatalf("decode(%q) = %+v; re-encoded %s decodes to %+v, %v", p, ev, b, again, err)
		}
	})
}
