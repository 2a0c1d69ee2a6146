//go:build linux

package main

import "testing"

func TestBookingFields(t *testing.T) {
	for _, c := range []struct {
		msg               string
		seq, user, sentAt int64
		ok                bool
	}{
		{`{"event":"newNotification","data":{"type":"booking_created","bookingId":"17-3-1700000000123456789"},"id":"1-2"}`, 17, 3, 1700000000123456789, true},
		{`{"data":{"bookingId": "0-0-5"}}`, 0, 0, 5, true},
		{`{"data":{"bookingId":"b1"}}`, 0, 0, 0, false},
		{`{"data":{"bookingId":"1-2"}}`, 0, 0, 0, false},
		{`{"data":{"bookingId":"1-2-3`, 0, 0, 0, false},
		{`{"data":{"seq":1,"sentAt":2}}`, 0, 0, 0, false},
	} {
		seq, user, sentAt, ok := bookingFields([]byte(c.msg))
		if ok != c.ok || (ok && (seq != c.seq || user != c.user || sentAt != c.sentAt)) {
			t.Errorf("%s: got %d %d %d %v", c.msg, seq, user, sentAt, ok)
		}
	}
}
