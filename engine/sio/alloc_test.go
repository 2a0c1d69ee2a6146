package sio

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// typing is the engine's typical client event, as its WebSocket frame.
const typing = `42["typing",{"to":"u2","isTyping":true}]`

// TestEncodersDoNotAllocate checks that every encoder writes into a buffer
// with room enough without allocating.
func TestEncodersDoNotAllocate(t *testing.T) {
	data := []byte(`{"from":"u1","isTyping":true}`)
	ok := []byte(`{"ok":true}`)
	buf := make([]byte, 0, 4096)
	upgrades := []string{"websocket"}
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"AppendOpen", func() {
			buf = AppendOpen(buf[:0], "lv_VI97HAXpY6yYWAAAC", upgrades, 25*time.Second, 20*time.Second, 1e6)
		}},
		{"AppendPing", func() { buf = AppendPing(buf[:0], "") }},
		{"AppendPong", func() { buf = AppendPong(buf[:0], "probe") }},
		{"AppendClose", func() { buf = AppendClose(buf[:0]) }},
		{"AppendNoop", func() { buf = AppendNoop(buf[:0]) }},
		{"AppendMessage", func() { buf = AppendMessage(buf[:0], data) }},
		{"AppendPacket", func() { buf = AppendPacket(buf[:0], Packet{Type: Message, Data: data}) }},
		{"AppendEvent", func() { buf = AppendEvent(buf[:0], "/", "typing", data, "") }},
		{"AppendEvent offset", func() { buf = AppendEvent(buf[:0], "/", "typing", data, "MjAyNi0xMi0wMQ") }},
		{"AppendEvent escapes", func() { buf = AppendEvent(buf[:0], "/chat", "a\"<é>\x01\xff\u2028", data, "") }},
		{"AppendAck one arg", func() { buf = AppendAck(buf[:0], "/", 421, ok) }},
		{"AppendAck three args", func() { buf = AppendAck(buf[:0], "/", 421, ok, data, ok) }},
		{"AppendAck no arg", func() { buf = AppendAck(buf[:0], "/", 421) }},
		{"AppendConnect", func() { buf = AppendConnect(buf[:0], "/", "wZX3oN0bSVIhsaknAAAI", "") }},
		{"AppendConnect pid", func() { buf = AppendConnect(buf[:0], "/admin", "wZX3oN0bSVIhsaknAAAI", "pid-123") }},
		{"AppendConnectError", func() { buf = AppendConnectError(buf[:0], "/admin", "Invalid namespace", nil) }},
		{"AppendConnectError data", func() { buf = AppendConnectError(buf[:0], "/", "Not authorized", ok) }},
		{"AppendDisconnect", func() { buf = AppendDisconnect(buf[:0], "/admin") }},
		{"AppendSIOPacket", func() {
			buf = AppendSIOPacket(buf[:0], SIOPacket{Type: BinaryAck, Namespace: "/a", ID: 9, HasID: true, Attachments: 2, Data: ok})
		}},
	} {
		if n := testing.AllocsPerRun(100, tc.f); n != 0 {
			t.Errorf("%s: %v allocations, want 0", tc.name, n)
		}
	}
}

// TestParsersDoNotAllocate checks the parsers on the engine's common
// packets: nothing is copied.
func TestParsersDoNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	frame := []byte(typing)
	withAck := []byte(`421["typing",{"to":"u2","isTyping":true}]`)
	body := []byte(strings.Repeat(typing+"\x1e", 9) + typing)
	var sink int
	count := func(p Packet) error { sink += len(p.Data); return nil }
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"ParsePacket", func() { p, _ := ParsePacket(frame); sink += len(p.Data) }},
		{"SplitPayload", func() { _ = SplitPayload(body, count) }},
		{"ParseSIO", func() { p, _ := ParseSIO(frame[1:]); sink += len(p.Data) }},
		{"ParseSIO ack id", func() { p, _ := ParseSIO(withAck[1:]); sink += len(p.Data) }},
		{"ParseSIO ACK", func() { p, _ := ParseSIO([]byte(`3421[{"ok":true}]`)); sink += len(p.Data) }},
		{"ParseSIO CONNECT", func() { p, _ := ParseSIO([]byte(`0{"token":"abc"}`)); sink += len(p.Data) }},
		{"ParseSIO binary", func() { p, _ := ParseSIO([]byte(`51-["ev",{"_placeholder":true,"num":0}]`)); sink += len(p.Data) }},
		{"ParseSIO malformed", func() { _, err := ParseSIO([]byte(`2abc["a"]`)); sink += len(err.Error()) }},
		{"ParseSIO malformed namespace", func() { _, err := ParseSIO([]byte(`2/admin,{}`)); sink += len(err.Error()) }},
		{"SplitEvent", func() { e, _ := SplitEvent(frame[2:]); sink += len(e.Name) }},
	} {
		if n := testing.AllocsPerRun(100, tc.f); n != 0 {
			t.Errorf("%s: %v allocations, want 0", tc.name, n)
		}
	}
}

// TestHostileInputAllocation checks that no input makes the parsers
// allocate more than a copy of the namespace (ParseSIO) or of the escaped
// event name (SplitEvent): at most once, at most the input's size.
func TestHostileInputAllocation(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	const mib = 1 << 20
	for _, tc := range []struct {
		name string
		in   string
	}{
		{"long namespace", "0/" + strings.Repeat("a", mib) + ","},
		{"long unterminated namespace", "0/" + strings.Repeat("a", mib)},
		{"long ack id", "2" + strings.Repeat("1", mib) + `["a"]`},
		{"long attachment count", "5" + strings.Repeat("1", mib) + `-["a"]`},
		{"deep nesting", `2["a",` + strings.Repeat("[", mib) + strings.Repeat("]", mib) + "]"},
		{"nesting at the limit", `2["a",` + strings.Repeat("[", 9990) + strings.Repeat("]", 9990) + "]"},
		{"many arguments", `2["a"` + strings.Repeat(",0", mib) + "]"},
		{"escaped name", `2["` + strings.Repeat(`\u00e9`, mib/6) + `"]`},
		{"invalid UTF-8 name", `2["` + strings.Repeat("\xff", mib) + `"]`},
		{"nesting at MaxNesting", `2["a",` + strings.Repeat("[", MaxNesting-1) + strings.Repeat("]", MaxNesting-1) + "]"},
		{"long string", `2["a","` + strings.Repeat("x", mib) + `"]`},
		{"unterminated string", `2["a","` + strings.Repeat("x", mib)},
		{"many commas", `2/` + strings.Repeat(",", mib)},
	} {
		in := []byte(tc.in)
		n, bytes := allocs(func() {
			if p, err := ParseSIO(in); err == nil || err == ErrBinary {
				_, _ = SplitEvent(p.Data)
			}
		})
		// A copy of the input, rounded up to whole pages; three for the
		// name when each of its bytes is invalid UTF-8 (U+FFFD).
		limit := int64(len(in)) + 16<<10
		if strings.Contains(tc.name, "UTF-8") {
			limit = 4*int64(len(in)) + 16<<10
		}
		if n > 2 || bytes > limit {
			t.Errorf("%s (%d bytes): %d allocations of %d bytes", tc.name, len(in), n, bytes)
		}
	}
}

// allocs returns the allocations f makes and their bytes, the least of a
// few runs (after one to warm up).
func allocs(f func()) (n, bytes int64) {
	f()
	n, bytes = -1, -1
	var before, after runtime.MemStats
	for range 3 {
		runtime.ReadMemStats(&before)
		f()
		runtime.ReadMemStats(&after)
		dn, db := int64(after.Mallocs-before.Mallocs), int64(after.TotalAlloc-before.TotalAlloc)
		if n < 0 || dn < n {
			n = dn
		}
		if bytes < 0 || db < bytes {
			bytes = db
		}
	}
	return n, bytes
}
