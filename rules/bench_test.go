package rules

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// benchRules builds n rules shaped like the shipped ones: mostly exact
// types (booking.t0, booking.t1, ...), every tenth a glob, about half with
// a condition. The benchmark event matches one exact rule and the globs.
func benchRules(n int) string {
	var b strings.Builder
	b.WriteString("rules:\n")
	for i := range n {
		on := fmt.Sprintf("booking.t%d", i)
		if i%10 == 9 {
			on = fmt.Sprintf("other%d.*", i)
		}
		fmt.Fprintf(&b, "  - name: r%d\n    on: %q\n", i, on)
		if i%2 == 0 {
			b.WriteString("    if: data.status == \"pending\"\n")
		}
		b.WriteString("    emit:\n      event: newNotification\n      to: user(data.providerId)\n")
		b.WriteString("      data: '{\"title\": \"New booking\", \"message\": data.customerName + \" booked \" + data.serviceName, \"bookingId\": data.id}'\n")
	}
	return b.String()
}

func BenchmarkMatch(b *testing.B) {
	for _, n := range []int{10, 200} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			s := mustParse(b, benchRules(n), Options{})
			ev := &Event{Type: "booking.t4", Source: "webhook", Data: map[string]any{
				"id": "b1", "status": "pending", "providerId": "p1", "customerName": "Ann", "serviceName": "Haircut",
			}}
			out := make([]Output, 0, 8)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				var err error
				out, err = s.Match(context.Background(), ev, out[:0])
				if err != nil || len(out) != 1 {
					b.Fatalf("Match() = %v, %v", out, err)
				}
			}
		})
	}
	b.Run("rules=200/no-match", func(b *testing.B) {
		s := mustParse(b, benchRules(200), Options{})
		ev := &Event{Type: "client.typing", Data: map[string]any{"to": "u2"}}
		out := make([]Output, 0, 8)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			out, _ = s.Match(context.Background(), ev, out[:0])
		}
	})
}
