//go:build linux

package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sidecar/sidecar/engine/webhook"
)

// fakeCluster is n HTTP servers sharing one set of seen webhook ids, as
// nodes sharing their dedup through Redis do: the first POST of an id is
// 202, any later one, to any node, 200 duplicate.
type fakeCluster struct {
	mu    sync.Mutex
	seen  map[string]int // webhook-id -> node that took it
	posts [][]string     // per node, the webhook-ids POSTed to it
	srvs  []*httptest.Server
}

func newFakeCluster(t *testing.T, n int, verifier *webhook.Verifier) *fakeCluster {
	fc := &fakeCluster{seen: map[string]int{}, posts: make([][]string, n)}
	for i := range n {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			id, err := verifier.Verify(r.Header, body)
			if err != nil {
				http.Error(w, err.Error(), webhook.Status(err))
				return
			}
			fc.mu.Lock()
			fc.posts[i] = append(fc.posts[i], id)
			_, dup := fc.seen[id]
			if !dup {
				fc.seen[id] = i
			}
			fc.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			if dup {
				w.WriteHeader(http.StatusOK)
				io.WriteString(w, `{"id":"`+id+`","duplicate":true}`)
				return
			}
			w.WriteHeader(http.StatusAccepted)
			io.WriteString(w, `{"id":"`+id+`","type":"booking.created","matched":["booking-created"],"errors":null}`)
		}))
		t.Cleanup(srv.Close)
		fc.srvs = append(fc.srvs, srv)
	}
	return fc
}

func (fc *fakeCluster) urls(path string) []string {
	var u []string
	for _, s := range fc.srvs {
		u = append(u, s.URL+path)
	}
	return u
}

func TestWebhookPosterNodes(t *testing.T) {
	const secret = "whsec_YmVuY2gtd2ViaG9vay1zZWNyZXQtMDEyMzQ1Njc4OWFi"
	signer, err := webhook.NewSigner(secret)
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := webhook.NewVerifier([]string{secret}, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	fc := newFakeCluster(t, 3, verifier)
	p, err := newWebhookPoster(fc.urls("/webhooks"), signer, "u", 7, 1)
	if err != nil {
		t.Fatal(err)
	}
	p.to, _ = parsePostTo("rr", 3, true)
	p.resend = 0.25 // every 4th
	wcs := make([]whConn, 3)
	defer func() {
		for _, wc := range wcs {
			if wc.c != nil {
				wc.c.Close()
			}
		}
	}()
	ctx := context.Background()
	for seq := int64(0); seq < 12; seq++ {
		r := p.post(ctx, wcs, seq)
		user := seq % 7
		if r.home != int(user%3) || r.node != p.to.pick(seq, r.home) {
			t.Errorf("seq %d: home %d node %d; want home %d node %d", seq, r.home, r.node, user%3, p.to.pick(seq, int(user%3)))
		}
		if r.status != http.StatusAccepted || r.err != nil {
			t.Errorf("seq %d: %d %v", seq, r.status, r.err)
		}
		if r.resent != (seq%4 == 0) {
			t.Errorf("seq %d: resent %v", seq, r.resent)
		}
		if r.resent && (!r.duplicate || r.resendStatus != http.StatusOK || r.resendErr != nil) {
			t.Errorf("seq %d: resend %d %v, duplicate %v", seq, r.resendStatus, r.resendErr, r.duplicate)
		}
		id := p.run + itoa(seq)
		fc.mu.Lock()
		took := fc.seen[id]
		var resentTo []int
		for i, ids := range fc.posts {
			for _, x := range ids {
				if x == id && i != took {
					resentTo = append(resentTo, i)
				}
			}
		}
		fc.mu.Unlock()
		if took != r.node {
			t.Errorf("seq %d: taken by node %d, POSTed to %d", seq, took, r.node)
		}
		if r.resent && (len(resentTo) != 1 || resentTo[0] != (r.node+1)%3) {
			t.Errorf("seq %d: resent to %v, want [%d]", seq, resentTo, (r.node+1)%3)
		}
	}
	// A fresh id taken twice (a new run with an old prefix) is not an
	// acceptance: the first POST's 200 is an error.
	q := *p
	q.resend = 0
	r := q.post(ctx, wcs, 1)
	if r.status != http.StatusOK || r.err == nil || !strings.Contains(r.err.Error(), "first POST answered 200") {
		t.Errorf("repeated id: %d %v", r.status, r.err)
	}
}

func itoa(i int64) string { b, _ := json.Marshal(i); return string(b) }

func TestWebhookResends(t *testing.T) {
	p := &webhookPoster{}
	for _, tc := range []struct {
		frac  float64
		every int64
	}{{0, 0}, {1, 1}, {0.5, 2}, {0.01, 100}, {0.3, 3}} {
		p.resend = tc.frac
		n := 0
		for seq := int64(0); seq < 300; seq++ {
			if p.resends(seq) {
				n++
			}
		}
		want := 0
		if tc.every > 0 {
			want = int(300 / tc.every)
		}
		if n != want {
			t.Errorf("resend %g: %d of 300, want %d", tc.frac, n, want)
		}
	}
}

func TestXQuantOf(t *testing.T) {
	var v []float64
	for i := 1; i <= 2000; i++ {
		v = append(v, float64(i)/1000) // 0.001 .. 2.000 ms
	}
	q := xquantOf(v)
	want := xquant{N: 2000, Mean: 1.001, P50: 1.0, P90: 1.8, P99: 1.98, P999: 1.998, Max: 2}
	if q != want {
		t.Errorf("xquantOf = %+v, want %+v", q, want)
	}
	if got := xquantOf(nil); got != (xquant{}) {
		t.Errorf("xquantOf(nil) = %+v", got)
	}
	d := want.minus(xquant{N: 10, Mean: 0.5, P50: 0.25, P90: 1, P99: 2, P999: 1, Max: 1})
	if d != (xquant{N: 10, Mean: 0.501, P50: 0.75, P90: 0.8, P99: -0.02, P999: 0.998, Max: 1}) {
		t.Errorf("minus = %+v", d)
	}
}

func TestXAccount(t *testing.T) {
	ms := func(f float64) int64 { return int64(f * 1e6) }
	posts := []xPost{
		{took: time.Millisecond},                   // 0 cross: delivered once
		{took: time.Millisecond, delivered: 1},     // 1 local: delivered once
		{took: time.Millisecond},                   // 2 cross: missing
		{took: time.Millisecond, delivered: 1},     // 3 local: delivered twice
		{took: time.Millisecond, err: errFragment}, // 4 cross: POST failed
		{}, // 5 local: skipped
	}
	skipped := []bool{false, false, false, false, false, true}
	seqs := []seqStat{{N: 1, Min: ms(2), Max: ms(2)}, {N: 1, Min: ms(1), Max: ms(1)}, {}, {N: 2, Min: ms(0.5), Max: ms(3)}, {}, {}}
	c, l := xAccount(posts, skipped, seqs, 0), xAccount(posts, skipped, seqs, 1)
	if c.Sent != 3 || c.Accepted != 2 || c.PostErrors != 1 || c.FirstError == "" || c.Delivered != 1 || c.Missing != 1 || c.Duplicates != 0 || c.Skipped != 0 {
		t.Errorf("cross: %+v", c)
	}
	if c.LatencyMs.N != 1 || c.LatencyMs.P50 != 2 || c.ServerDelivered != 0 {
		t.Errorf("cross latency %+v, server delivered %d", c.LatencyMs, c.ServerDelivered)
	}
	if l.Sent != 2 || l.Accepted != 2 || l.Delivered != 2 || l.Duplicates != 1 || l.Skipped != 1 || l.ServerDelivered != 2 {
		t.Errorf("local: %+v", l)
	}
	if l.LatencyMs.P50 != 0.5 || l.LatencyMs.Max != 1 {
		t.Errorf("local latency (first receipts): %+v", l.LatencyMs)
	}
}

func TestXPosterBodies(t *testing.T) {
	type got struct{ path, auth, body string }
	var mu sync.Mutex
	var seen []got
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, got{r.URL.Path, r.Header.Get("Authorization"), string(b)})
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"id":"1-1","delivered":1}`)
	}))
	defer srv.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
	}))
	defer bad.Close()
	tg := &target{APIKey: "k", apis: []string{bad.URL, srv.URL}}
	for _, ep := range []string{"events", "send"} {
		x := newXPoster(tg, ep, "u", 2)
		r := x.post(context.Background(), 1, 77, 5)
		if r.err != nil || r.delivered != 1 {
			t.Errorf("%s: %v, delivered %d", ep, r.err, r.delivered)
		}
		if r := x.post(context.Background(), 0, 78, 5); r.err == nil || !strings.Contains(r.err.Error(), "401") {
			t.Errorf("%s to the refusing node: %v", ep, r.err)
		}
	}
	if len(seen) != 2 {
		t.Fatalf("%d requests", len(seen))
	}
	ev, send := seen[0], seen[1]
	if ev.path != "/api/events" || ev.auth != "Bearer k" {
		t.Errorf("events: %+v", ev)
	}
	var e struct {
		Event string `json:"event"`
		To    struct {
			Users []string `json:"users"`
		} `json:"to"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal([]byte(ev.body), &e); err != nil || e.Event != "newNotification" || len(e.To.Users) != 1 || e.To.Users[0] != "u5" {
		t.Errorf("events body %s: %v", ev.body, err)
	}
	for _, data := range [][]byte{e.Data, []byte(send.body)} {
		seq, sentAt, ok := benchFields(data)
		user, uok := intField(data, keyLgUser)
		if !ok || !uok || seq < 77 || sentAt <= 0 || user != 5 {
			t.Errorf("data %s: seq %d sentAt %d user %d", data, seq, sentAt, user)
		}
	}
	if send.path != "/api/socket-test/send/u5" {
		t.Errorf("send path %q", send.path)
	}
}
