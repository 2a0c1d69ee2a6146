package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/sidecar/sidecar/engine/auth"
)

// hostileRules are rules that pass `sidecar check` and used to take the
// node down or stall it: a string bomb on every connection.open (out of
// memory at the first connection), and a reduce that builds a 1 MB string
// one copy at a time (10 s per webhook).
const hostileRules = `rules:
  - name: bomb
    on: connection.open
    if: 'len(repeat(repeat("x", 999999), 999999)) > 0'
    join: '["never"]'
  - name: slow-reduce
    on: heavy
    if: 'len(reduce(1..100000, #acc + "xxxxxxxxxx", "")) > 0'
    emit: {event: never, to: all()}
  - name: rooms-from-claims
    on: connection.open
    if: sender.role != nil
    join: '["role:" + string(sender.role)]'
  - name: announcement
    on: announcement
    emit: {event: newNotification, to: 'room(data.room)', data: '{"message": data.message}'}
`

// A hostile rule is a failure of that rule for that event, within its
// budget: the node stays up, the other rules still run (every provider
// joins its room and hears the announcement), and the webhook that ran the
// slow rule is answered at once, saying which rule failed and why.
func TestHostileRulesFailAloneWithinTheirBudget(t *testing.T) {
	addr, _, _ := serveWith(t, hostileRules, "")
	var readers []*bufio.Reader
	for i := 0; i < 10; i++ {
		tok, _ := auth.Sign([]byte("e2e-secret-e2e-secret-e2e-secret-32"),
			map[string]any{"sub": fmt.Sprintf("p%d", i), "role": "provider", "exp": time.Now().Add(time.Hour).Unix()})
		conn, br, _, err := ws.Dial(context.Background(), "ws://"+addr+"/ws?token="+tok)
		if err != nil {
			t.Fatalf("provider %d: %v", i, err)
		}
		t.Cleanup(func() { conn.Close() })
		if br == nil {
			br = bufio.NewReader(conn)
		}
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		readers = append(readers, br)
	}
	status, resp := signedPost(t, addr, "msg_heavy", `{"type":"heavy","data":{}}`)
	errs, _ := resp["errors"].([]any)
	if status != http.StatusAccepted || len(errs) != 1 {
		t.Fatalf("heavy webhook = %d %v, want 202 with the slow rule's error", status, resp)
	}
	if e := errs[0].(map[string]any); e["rule"] != "slow-reduce" || e["kind"] != "budget" {
		t.Fatalf("error = %v, want slow-reduce failing its budget", e)
	}
	status, resp = signedPost(t, addr, "msg_ann", `{"type":"announcement","data":{"room":"role:provider","message":"hi"}}`)
	if status != http.StatusAccepted {
		t.Fatalf("announcement = %d %v", status, resp)
	}
	for i, br := range readers {
		h, err := ws.ReadHeader(br)
		if err != nil {
			t.Fatalf("provider %d: %v", i, err)
		}
		p := make([]byte, h.Length)
		io.ReadFull(br, p)
		var m map[string]any
		if json.Unmarshal(p, &m); m["event"] != "newNotification" {
			t.Fatalf("provider %d got %s", i, p)
		}
	}
	metrics := get(t, "http://"+addr+"/metrics")
	for _, want := range []string{
		`sidecar_rule_errors_total{kind="budget",rule="bomb"} 10`,
		`sidecar_rule_errors_total{kind="budget",rule="slow-reduce"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
