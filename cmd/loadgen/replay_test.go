//go:build linux

package main

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

func TestParseStreamID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want streamID
		ok   bool
	}{
		{"1796136653383-51064", streamID{1796136653383, 51064}, true},
		{"0-0", streamID{0, 0}, true},
		{"12", streamID{}, false},
		{"a-1", streamID{}, false},
		{"1-b", streamID{}, false},
		{"-1-2", streamID{}, false},
		{"", streamID{}, false},
	} {
		got, ok := parseStreamID(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseStreamID(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	a, b, c := streamID{5, 9}, streamID{6, 1}, streamID{6, 2}
	if !a.less(b) || !b.less(c) || c.less(b) || b.less(b) {
		t.Error("streamID.less is not the id order")
	}
}

func ev(id string, rep, seq int) string {
	return fmt.Sprintf(`{"event":"newNotification","data":{"title":"replay","rep":%d,"seq":%d},"id":"%s"}`, rep, seq, id)
}

const resumedTrue = `{"event":"resumed","data":{"recovered":true}}`

func msgs(s ...string) [][]byte {
	var out [][]byte
	for _, m := range s {
		out = append(out, []byte(m))
	}
	return out
}

func TestCheckReplay(t *testing.T) {
	posted := []string{"100-1", "100-2", "101-0"}
	good := msgs(ev("100-1", 2, 1), ev("100-2", 2, 2), ev("101-0", 2, 3), resumedTrue)
	for _, tc := range []struct {
		name      string
		msgs      [][]byte
		posted    []string
		received  int
		matched   int
		inOrder   bool
		recovered bool
		problem   string // a prefix of the first problem
	}{
		{"all, in order", good, posted, 3, 3, true, true, ""},
		{"recovered false", msgs(ev("100-1", 2, 1), ev("100-2", 2, 2), ev("101-0", 2, 3), `{"event":"resumed","data":{"recovered":false}}`),
			posted, 3, 3, true, false, ""},
		{"nothing posted, nothing missed", msgs(resumedTrue), nil, 0, 0, true, true, ""},
		{"one missing", msgs(ev("100-1", 2, 1), ev("101-0", 2, 3), resumedTrue), posted, 2, 1, false, true, "2 received, 1 of the 3"},
		{"swapped", msgs(ev("100-2", 2, 2), ev("100-1", 2, 1), ev("101-0", 2, 3), resumedTrue), posted, 3, 1, false, true, "message 1: id 100-1 after 100-2"},
		{"repeated", msgs(ev("100-1", 2, 1), ev("100-1", 2, 1), ev("100-2", 2, 2), ev("101-0", 2, 3), resumedTrue), posted, 4, 1, false, true, "message 1: id 100-1 after 100-1"},
		{"seq out of order", msgs(ev("100-1", 2, 2), ev("100-2", 2, 1), ev("101-0", 2, 3), resumedTrue), posted, 3, 3, false, true, "message 1: seq 1 after 2"},
		{"an older repetition's event", msgs(ev("99-0", 1, 1000), ev("100-1", 2, 1), ev("100-2", 2, 2), ev("101-0", 2, 3), resumedTrue), posted, 4, 0, false, true, "message 0: event \"newNotification\" of rep 1"},
		{"no resumed", good[:3], posted, 3, 3, false, false, "no resumed frame"},
		{"resumed not last", msgs(resumedTrue, ev("100-1", 2, 1)), posted[:1], 1, 1, false, true, "resumed is message 0 of 2"},
		{"bad json", msgs(`{"event":`, resumedTrue), nil, 0, 0, false, true, "message 0:"},
		{"bad id", msgs(ev("x", 2, 1), resumedTrue), []string{"x"}, 1, 1, false, true, `message 0: id "x"`},
	} {
		r := checkReplay(tc.msgs, tc.posted, 2)
		if r.Received != tc.received || r.Matched != tc.matched || r.InOrder != tc.inOrder || r.Recovered != tc.recovered ||
			!strings.HasPrefix(r.Problem, tc.problem) || (tc.problem == "") != (r.Problem == "") {
			t.Errorf("%s: checkReplay = %+v", tc.name, r)
		}
	}
	if r := checkReplay(good, posted, 2); r.LastID != "101-0" || !r.Resumed {
		t.Errorf("last id %q, resumed %v", r.LastID, r.Resumed)
	}
}

// serverFrame is an unmasked server text frame.
func serverFrame(op byte, fin bool, payload string) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		b = append(b, byte(n))
	case n < 1<<16:
		b = append(b, 126, byte(n>>8), byte(n))
	}
	return append(b, payload...)
}

func TestReplayConnNext(t *testing.T) {
	big := strings.Repeat("x", 70000)
	var stream []byte
	stream = append(stream, serverFrame(opText, true, "one")...)
	stream = append(stream, serverFrame(opPing, true, "")...)
	stream = append(stream, serverFrame(opText, true, strings.Repeat("y", 300))...)
	for range 2000 {
		stream = append(stream, serverFrame(opText, true, ev("1-1", 1, 1))...)
	}
	stream = append(stream, serverFrame(opText, true, big[:65000])...)
	stream = append(stream, serverFrame(opText, true, resumedTrue)...)
	stream = append(stream, serverFrame(opClose, true, "\x03\xe8")...)

	srv, cli := net.Pipe()
	defer cli.Close()
	go func() {
		defer srv.Close()
		// In uneven pieces, so frames split across reads; the first piece
		// is what the handshake's reader had buffered.
		for off, step := 5, 1; off < len(stream); step = step*7%4093 + 1 {
			end := min(len(stream), off+step)
			if _, err := srv.Write(stream[off:end]); err != nil {
				return
			}
			off = end
		}
	}()
	c := &replayConn{conn: cli, data: append(make([]byte, 0, 16), stream[:5]...)}
	deadline := time.Now().Add(5 * time.Second)
	var got []string
	for {
		p, err := c.next(deadline)
		if errors.Is(err, errServerClose) {
			break
		}
		if err != nil {
			t.Fatalf("after %d messages: %v", len(got), err)
		}
		got = append(got, string(p))
	}
	if len(got) != 2004 || got[0] != "one" || got[1] != strings.Repeat("y", 300) || got[2] != ev("1-1", 1, 1) ||
		got[2002] != big[:65000] || got[2003] != resumedTrue {
		t.Errorf("got %d messages; first %.20q, last %.60q", len(got), got[0], got[len(got)-1])
	}
}

const replayJSON = `{"kind":"replay",` + testMachine + `,"server_cmd":"/tmp/sidecar serve","server_go":"go1.26.8","store":"file r.db",
"user":"u1","events":1000,"all_ok":true,"upgrade_to_resumed_ms":{"p50":12.5,"p99":20,"max":20},
"reps":[{"post_s":0.5,"upgrade_ms":0.8,"first_event_ms":3.25,"resumed_ms":12.5,"received":1000,"in_order":true,"recovered":true},
{"post_s":0.4,"upgrade_ms":0.7,"first_event_ms":3,"resumed_ms":20,"received":1000,"in_order":true,"recovered":true}]}`

const replayWant = "#### replay of 1000 missed events to one client: `/tmp/sidecar serve`, 2025-01-02\n\n" +
	"2 CPUs (Test CPU), Linux 6.1.0; loadgen go1.26.8, server go1.26.8; store file r.db\n\n" +
	"| rep | POSTs (s) | 101 ms | first event ms | **resumed ms** | events | in order | recovered |\n|---|---|---|---|---|---|---|---|\n" +
	"| 1 | 0.50 | 0.80 | 3.25 | **12.50** | 1000 | true | true |\n" +
	"| 2 | 0.40 | 0.70 | 3.00 | **20.00** | 1000 | true | true |\n\n" +
	"Upgrade → resumed: median **12.50 ms** (max 20.00) over 2 repetitions; every repetition: every event, in order, recovered.\n\n"

const replayBadJSON = `{"kind":"replay",` + testMachine + `,"server_cmd":"s","events":10,"all_ok":false,"upgrade_to_resumed_ms":{"p50":1,"max":1},
"reps":[{"resumed_ms":1,"received":9,"in_order":false,"recovered":false}]}`

const replayBadWant = "#### replay of 10 missed events to one client: `s`, 2025-01-02\n\n" +
	"2 CPUs (Test CPU), Linux 6.1.0; loadgen go1.26.8\n\n" +
	"| rep | POSTs (s) | 101 ms | first event ms | **resumed ms** | events | in order | recovered |\n|---|---|---|---|---|---|---|---|\n" +
	"| 1 | 0.00 | 0.00 | 0.00 | **1.00** | 9 | false | false |\n\n" +
	"Upgrade → resumed: median **1.00 ms** (max 1.00) over 1 repetitions; **not every repetition was complete, in order and recovered**.\n\n"
