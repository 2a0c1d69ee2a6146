package store

import (
	"path/filepath"
	"testing"
	"time"
)

// Append is on the delivery path: one call per published event, one
// stream ("a") for a broadcast. After its first 100 events a stream is full, so
// each append also drops one and raises the watermark.
func BenchmarkStreamsAppend(b *testing.B) {
	for _, bc := range []struct {
		name    string
		file    bool
		streams []string
	}{
		{"memory/broadcast", false, []string{"a"}},
		{"memory/3 users", false, []string{"u:1", "u:2", "u:3"}},
		{"file/broadcast", true, []string{"a"}},
		{"file/3 users", true, []string{"u:1", "u:2", "u:3"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			path := Memory
			if bc.file {
				path = filepath.Join(b.TempDir(), "node.db")
			}
			s := openT(b, path, Options{})
			defer closeT(b, s)
			st := s.Streams(100, time.Hour)
			data := []byte(`{"title":"New booking","message":"Ada booked a haircut","bookingId":"bk_1234567890"}`)
			ev := StreamEvent{Event: "newNotification", Data: data}
			b.ReportAllocs()
			seq := uint64(0)
			for b.Loop() {
				seq++
				ev.ID = StreamID{base, seq}.String() // the engine formats it too
				if err := st.Append(bc.streams, ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkStreamsSince(b *testing.B) {
	s := openT(b, Memory, Options{})
	defer closeT(b, s)
	st := s.Streams(1000, time.Hour)
	data := []byte(`{"title":"New booking","message":"Ada booked a haircut","bookingId":"bk_1234567890"}`)
	for i := range 1000 {
		ev := StreamEvent{ID: StreamID{base, uint64(i + 1)}.String(), Event: "newNotification", Data: data}
		if err := st.Append([]string{"u:1"}, ev); err != nil {
			b.Fatal(err)
		}
	}
	since := StreamID{base, 0}.String() // before the first: all 1000
	b.ReportAllocs()
	for b.Loop() {
		evs, _, err := st.Since([]string{"u:1"}, since, "u:1", 0)
		if err != nil || len(evs) != 1000 {
			b.Fatalf("Since = %d events, %v", len(evs), err)
		}
	}
}
