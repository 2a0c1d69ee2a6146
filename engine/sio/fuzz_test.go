package sio

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
)

// sioSeeds are the Socket.IO packets of the tables, without the Engine.IO
// message type.
func sioSeeds() [][]byte {
	var seeds [][]byte
	for _, cases := range [][]sioCase{specPackets, moreGood, malformed} {
		for _, tc := range cases {
			if len(tc.in) < 10000 {
				seeds = append(seeds, []byte(tc.in[1:]))
			}
		}
	}
	return seeds
}

func FuzzParsePacket(f *testing.F) {
	for _, s := range []string{"", "2", "2probe", "3probe", "4hello", "5", "6", "bAQIDBA==", "b", "abc", "7", "bA=", "\x1e"} {
		f.Add([]byte(s))
	}
	for _, s := range sioSeeds() {
		f.Add(append([]byte{'4'}, s...))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		p, err := ParsePacket(in)
		if err != nil {
			return
		}
		if len(p.Data) != len(in)-1 || (len(p.Data) > 0 && &p.Data[0] != &in[1]) {
			t.Fatalf("ParsePacket(%q): Data %q is not the input after its first byte", in, p.Data)
		}
		if enc := AppendPacket(nil, p); !bytes.Equal(enc, in) {
			t.Fatalf("AppendPacket(ParsePacket(%q)) = %q", in, enc)
		}
		if p.Binary {
			if p.Type != Message {
				t.Fatalf("ParsePacket(%q): binary %v", in, p.Type)
			}
			if _, err := base64.StdEncoding.DecodeString(string(p.Data)); err != nil {
				t.Fatalf("ParsePacket(%q) takes base64 that StdEncoding refuses: %v", in, err)
			}
		}
	})
}

func FuzzSplitPayload(f *testing.F) {
	for _, s := range []string{
		"4hello\x1e2\x1e4world", "4hello\x1ebAQIDBA==", "4test1\x1e4test2\x1e4test3", "", "\x1e", "4a\x1e",
		"4a\x1e\x1e4b", `42["hello"]` + "\x1e" + `42["world"]`, "3", "1", "abc",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var got []Packet
		err := SplitPayload(body, func(p Packet) error {
			if bytes.IndexByte(p.Data, Separator) >= 0 {
				t.Fatalf("SplitPayload(%q): packet data %q holds a separator", body, p.Data)
			}
			got = append(got, p)
			return nil
		})
		// The same, the slow way.
		parts := bytes.Split(body, []byte{Separator})
		var want error
		n := 0
		for _, part := range parts {
			if _, want = ParsePacket(part); want != nil {
				break
			}
			n++
		}
		if err != want || len(got) != n {
			t.Fatalf("SplitPayload(%q) = %d packets, %v; ParsePacket on each part gives %d, %v", body, len(got), err, n, want)
		}
		if err != nil {
			return
		}
		var enc []byte
		for i, p := range got {
			if i > 0 {
				enc = append(enc, Separator)
			}
			enc = AppendPacket(enc, p)
		}
		if !bytes.Equal(enc, body) {
			t.Fatalf("SplitPayload(%q) joins back to %q", body, enc)
		}
	})
}

func FuzzParseSIO(f *testing.F) {
	for _, s := range sioSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		p, err := ParseSIO(in)
		if err != nil && err != ErrBinary {
			if p.Namespace != "" || p.Data != nil || p.HasID {
				t.Fatalf("ParseSIO(%q) = %v with a packet %+v", in, err, p)
			}
			return
		}
		binary := p.Type == BinaryEvent || p.Type == BinaryAck
		if binary != (err == ErrBinary) {
			t.Fatalf("ParseSIO(%q) = %v for a %v", in, err, p.Type)
		}
		if p.Data != nil {
			if len(p.Data) > len(in) || &p.Data[0] != &in[len(in)-len(p.Data)] {
				t.Fatalf("ParseSIO(%q): Data %q does not alias the input's end", in, p.Data)
			}
			if !json.Valid(p.Data) {
				t.Fatalf("ParseSIO(%q) takes invalid JSON %q", in, p.Data)
			}
		}
		if !strings.HasPrefix(p.Namespace, "/") || strings.Contains(p.Namespace, ",") || len(p.Namespace) > len(in) {
			t.Fatalf("ParseSIO(%q): namespace %q", in, p.Namespace)
		}
		if p.ID < 0 || (!p.HasID && p.ID != 0) || p.Attachments < 0 || p.Attachments > MaxAttachments {
			t.Fatalf("ParseSIO(%q) = %+v", in, p)
		}
		checkSIORoundTrip(t, p, err)

		if p.Type != Event && p.Type != BinaryEvent {
			return
		}
		e, err := SplitEvent(p.Data)
		if err != nil {
			t.Fatalf("ParseSIO takes %q but SplitEvent refuses its payload: %v", in, err)
		}
		checkSplitAgainstJSON(t, p.Data, e)
		if e.NArgs > 1 || binary {
			return
		}
		// An event of the name and argument read encodes to one that reads
		// the same.
		enc := AppendEvent(nil, p.Namespace, string(e.Name), e.Arg, "")
		back := mustParseMessage(t, enc)
		e2, err := SplitEvent(back.Data)
		if err != nil || back.Namespace != p.Namespace || !bytes.Equal(e2.Name, e.Name) || !bytes.Equal(e2.Arg, e.Arg) || e2.NArgs != e.NArgs {
			t.Fatalf("AppendEvent(%q, %q, %q) = %q reads %q %q %d, %v", p.Namespace, e.Name, e.Arg, enc, e2.Name, e2.Arg, e2.NArgs, err)
		}
	})
}
