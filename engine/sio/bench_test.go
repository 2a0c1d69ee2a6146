package sio

import (
	"strings"
	"testing"
)

func benchParseSIO(b *testing.B, frame string) {
	in := []byte(frame)[1:]
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseSIO(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseSIO(b *testing.B) {
	b.Run("typing", func(b *testing.B) { benchParseSIO(b, typing) })
	b.Run("typing_ack", func(b *testing.B) { benchParseSIO(b, `421["typing",{"to":"u2","isTyping":true}]`) })
	b.Run("namespace_ack", func(b *testing.B) { benchParseSIO(b, `42/chat,421["typing",{"to":"u2","isTyping":true}]`) })
}

// BenchmarkClientEvent is the whole read of a client event from its
// WebSocket frame: Engine.IO packet, Socket.IO packet, name and argument.
func BenchmarkClientEvent(b *testing.B) {
	in := []byte(`421["typing",{"to":"u2","isTyping":true}]`)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		eio, err := ParsePacket(in)
		if err != nil {
			b.Fatal(err)
		}
		p, err := ParseSIO(eio.Data)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := SplitEvent(p.Data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSplitEvent(b *testing.B) {
	in := []byte(typing)[2:]
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := SplitEvent(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendEvent(b *testing.B) {
	data := []byte(`{"from":"u1","isTyping":true}`)
	buf := make([]byte, 0, 256)
	b.Run("plain", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf = AppendEvent(buf[:0], "/", "typing", data, "")
		}
		b.SetBytes(int64(len(buf)))
	})
	b.Run("offset", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf = AppendEvent(buf[:0], "/", "typing", data, "MjAyNi0xMi0wMQ")
		}
		b.SetBytes(int64(len(buf)))
	})
}

func BenchmarkAppendAck(b *testing.B) {
	ok := []byte(`{"ok":true}`)
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendAck(buf[:0], "/", 421, ok)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkSplitPayload(b *testing.B) {
	body := []byte(strings.Repeat(typing+"\x1e", 9) + typing)
	n := 0
	count := func(Packet) error { n++; return nil }
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := SplitPayload(body, count); err != nil {
			b.Fatal(err)
		}
	}
}
