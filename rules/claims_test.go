package rules

import (
	"testing"
)

// NeedsClaims says whether an event type's rules read the sender's claims
// beyond sender.id, so that the engine can spare decoding them.
func TestNeedsClaims(t *testing.T) {
	src := `rules:
  - name: id-only
    on: presence.online
    emit: {event: userOnline, to: 'room("presence:" + sender.id)', data: '{"userId": sender?.id, "x": sender["id"]}'}
  - name: role
    on: connection.open
    if: sender.role != nil
    join: '["role:" + string(sender.role)]'
  - name: whole-sender
    on: client.hello
    emit: {event: hi, to: user(sender.id), data: sender}
  - name: to-app
    on: presence.offline
    forward: {url: "http://127.0.0.1:1/x"}
  - name: glob
    on: "client.*"
    if: data.x == 1
    emit: {event: x, to: user(sender.id)}
  - name: no-sender
    on: booking.created
    emit: {event: b, to: user(data.providerId)}
`
	set, err := Parse("t.yaml", []byte(src), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for typ, want := range map[string]bool{
		"presence.online":  false,
		"connection.open":  true,
		"client.hello":     true,
		"client.other":     false,
		"presence.offline": true, // forward posts the claims
		"booking.created":  false,
		"nothing":          false,
	} {
		if got := set.NeedsClaims(typ); got != want {
			t.Errorf("NeedsClaims(%q) = %v, want %v", typ, got, want)
		}
	}
}
