package engine

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidecar/sidecar/engine/store"
	"github.com/sidecar/sidecar/engine/webhook"
)

// postWebhook signs body with the test secret (at ts) and posts it.
func (n *node) postWebhook(id string, ts time.Time, body []byte, mutate func(http.Header)) (int, map[string]any) {
	n.t.Helper()
	s, err := webhook.NewSigner(testWebhook)
	if err != nil {
		n.t.Fatal(err)
	}
	req, err := http.NewRequest("POST", "http://"+n.addr+"/webhooks", bytes.NewReader(body))
	if err != nil {
		n.t.Fatal(err)
	}
	for k, v := range s.Headers(id, ts, body) {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	if mutate != nil {
		mutate(req.Header)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

func bookingRouter(calls *atomic.Int64) func(ev *Event) []Command {
	return func(ev *Event) []Command {
		if ev.Type != "booking.created" {
			return nil
		}
		calls.Add(1)
		data := ev.Data.(map[string]any)
		return []Command{{Op: OpEmit, Rule: "booking-created", Event: "newNotification",
			To: Target{Users: []string{fmt.Sprint(data["providerId"])}}, Data: map[string]any{"bookingId": data["id"]}}}
	}
}

func TestWebhookReachesUserOnce(t *testing.T) {
	n := startNode(t)
	var calls atomic.Int64
	n.router.route = bookingRouter(&calls)
	p := n.dial("p1")
	waitFor(t, 2*time.Second, "connection", func() bool { return n.e.Stats().Connections == 1 })
	body := []byte(`{"type":"booking.created","timestamp":"2026-11-25T00:00:00Z","data":{"id":"b1","providerId":"p1"}}`)
	status, resp := n.postWebhook("msg_1", time.Now(), body, nil)
	if status != http.StatusAccepted {
		t.Fatalf("status %d %v", status, resp)
	}
	if m, _ := resp["matched"].([]any); len(m) != 1 || m[0] != "booking-created" {
		t.Fatalf("matched = %v", resp["matched"])
	}
	if d := p.mustEvent("newNotification")["data"].(map[string]any); d["bookingId"] != "b1" {
		t.Fatalf("data = %v", d)
	}
	// A retry: 200, nothing delivered twice.
	status, resp = n.postWebhook("msg_1", time.Now(), body, nil)
	if status != http.StatusOK || resp["duplicate"] != true {
		t.Fatalf("retry = %d %v, want 200 duplicate", status, resp)
	}
	p.noEvent(200 * time.Millisecond)
	// No rule matched: still 202, with an empty list.
	status, resp = n.postWebhook("msg_2", time.Now(), []byte(`{"type":"nothing.matches","data":{}}`), nil)
	if status != http.StatusAccepted || len(resp["matched"].([]any)) != 0 {
		t.Fatalf("unmatched = %d %v", status, resp)
	}
}

func TestWebhookConcurrentDuplicatesFanOutOnce(t *testing.T) {
	n := startNode(t)
	var calls atomic.Int64
	n.router.route = bookingRouter(&calls)
	body := []byte(`{"type":"booking.created","data":{"id":"b9","providerId":"p9"}}`)
	var wg sync.WaitGroup
	statuses := make([]int, 10)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i], _ = n.postWebhook("msg_same", time.Now(), body, nil)
		}()
	}
	wg.Wait()
	accepted := 0
	for _, s := range statuses {
		switch s {
		case http.StatusAccepted:
			accepted++
		case http.StatusOK:
		default:
			t.Fatalf("status %d among %v", s, statuses)
		}
	}
	if accepted != 1 || calls.Load() != 1 {
		t.Fatalf("accepted %d, routed %d; want exactly one fan-out", accepted, calls.Load())
	}
}

func TestWebhookBadInputs(t *testing.T) {
	n := startNode(t)
	var calls atomic.Int64
	n.router.route = bookingRouter(&calls)
	good := []byte(`{"type":"booking.created","data":{"id":"b1","providerId":"p1"}}`)
	cases := []struct {
		name   string
		id     string
		ts     time.Time
		body   []byte
		mutate func(http.Header)
		want   int
	}{
		{"bad signature", "m1", time.Now(), good, func(h http.Header) { h.Set("webhook-signature", "v1,AAAA") }, 401},
		{"body changed", "m2", time.Now(), good, func(h http.Header) {
			// sign one body, send another: the signature is over the raw bytes
			s, _ := webhook.NewSigner(testWebhook)
			h.Set("webhook-signature", s.Sign("m2", time.Now(), []byte(`{"type":"x"}`)))
		}, 401},
		{"missing signature", "m3", time.Now(), good, func(h http.Header) { h.Del("webhook-signature") }, 400},
		{"missing id", "m4", time.Now(), good, func(h http.Header) { h.Del("webhook-id") }, 400},
		{"timestamp not a number", "m5", time.Now(), good, func(h http.Header) { h.Set("webhook-timestamp", "soon") }, 400},
		{"stale", "m6", time.Now().Add(-6 * time.Minute), good, nil, 401},
		{"future", "m7", time.Now().Add(6 * time.Minute), good, nil, 401},
		{"not json", "m8", time.Now(), []byte(`{nope`), nil, 400},
		{"no type", "m9", time.Now(), []byte(`{"data":{}}`), nil, 400},
		{"10 MB", "m10", time.Now(), bytes.Repeat([]byte("a"), 10<<20), nil, 413},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, resp := n.postWebhook(tc.id, tc.ts, tc.body, tc.mutate)
			if status != tc.want {
				t.Fatalf("status %d %v, want %d", status, resp, tc.want)
			}
		})
	}
	if calls.Load() != 0 {
		t.Fatalf("%d bad webhooks reached the rules", calls.Load())
	}
	// A rejected id is not remembered: the same id, now valid, goes through.
	if status, _ := n.postWebhook("m1", time.Now(), good, nil); status != http.StatusAccepted {
		t.Fatalf("valid retry after a bad signature: %d", status)
	}
}

func TestWebhookOverloadIs429AndRetryable(t *testing.T) {
	n := startNode(t, func(c *Config) { c.Webhook.Concurrency = 1 })
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	var calls atomic.Int64
	n.router.route = func(ev *Event) []Command {
		if calls.Add(1) == 1 {
			entered <- struct{}{}
			<-release
		}
		return nil
	}
	body := []byte(`{"type":"a","data":{}}`)
	done := make(chan int, 1)
	go func() { s, _ := n.postWebhook("slow", time.Now(), body, nil); done <- s }()
	<-entered
	req, _ := http.NewRequest("POST", "http://"+n.addr+"/webhooks", strings.NewReader(string(body)))
	s, _ := webhook.NewSigner(testWebhook)
	for k, v := range s.Headers("busy", time.Now(), body) {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("while saturated: %d Retry-After=%q, want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	close(release)
	if s := <-done; s != http.StatusAccepted {
		t.Fatalf("first webhook %d", s)
	}
	// The refused id was not remembered: its retry goes through.
	if status, _ := n.postWebhook("busy", time.Now(), body, nil); status != http.StatusAccepted {
		t.Fatalf("retry after 429: %d", status)
	}
}

func TestWebhookWithBrokenStoreIs503AndNothingDelivered(t *testing.T) {
	var st *store.Store
	n := startNode(t, func(c *Config) { st = c.Store.(*store.Store) })
	var calls atomic.Int64
	n.router.route = bookingRouter(&calls)
	st.Close() // every write now fails
	req, _ := http.NewRequest("POST", "http://"+n.addr+"/webhooks", strings.NewReader(`{"type":"booking.created","data":{"id":"b","providerId":"p"}}`))
	s, _ := webhook.NewSigner(testWebhook)
	for k, v := range s.Headers("msg_store", time.Now(), []byte(`{"type":"booking.created","data":{"id":"b","providerId":"p"}}`)) {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d Retry-After %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if calls.Load() != 0 {
		t.Fatal("the event reached the rules although its id could not be recorded")
	}
	// /readyz follows store.Healthy, whose disk-full path is tested in
	// engine/store (a closed store is a programming error, not a disk
	// failure, so it does not flip readiness).
}
