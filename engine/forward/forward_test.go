package forward

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sidecar/sidecar/engine/store"
	"github.com/sidecar/sidecar/engine/webhook"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// buntdb's background goroutine ends within a second of Close; it is not
// ours to wait for.
var ignoreBunt = goleak.IgnoreTopFunction("github.com/tidwall/buntdb.(*DB).backgroundManager")

// checkLeaks verifies, after every other cleanup (Run stopped, servers and
// stores closed), that no goroutine started during the test is left.
// Registered first, so it runs last.
func checkLeaks(t *testing.T) {
	t.Helper()
	current := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, current, ignoreBunt) })
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// request is what the fake app saw.
type request struct {
	header    http.Header
	body      []byte
	verifyErr error // from a webhook.Verifier with the same secret
}

func (r request) id() string { return r.header.Get(webhook.HeaderID) }

// app is a fake of the app's HTTP endpoint. respond picks the answer to the
// n-th request (0-based); nil answers 200.
type app struct {
	*httptest.Server
	verifier *webhook.Verifier
	respond  func(n int, r *http.Request, w http.ResponseWriter) int

	mu   sync.Mutex
	reqs []request
}

func newApp(t *testing.T, clock func() time.Time, respond func(n int, r *http.Request, w http.ResponseWriter) int) *app {
	t.Helper()
	v, err := webhook.NewVerifier([]string{testSecret}, 0)
	if err != nil {
		t.Fatal(err)
	}
	v.SetClock(clock)
	a := &app{verifier: v, respond: respond}
	a.Server = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.Close)
	return a
}

func (a *app) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	_, verr := a.verifier.Verify(r.Header, body)
	a.mu.Lock()
	n := len(a.reqs)
	a.reqs = append(a.reqs, request{header: r.Header.Clone(), body: body, verifyErr: verr})
	a.mu.Unlock()
	status := http.StatusOK
	if a.respond != nil {
		status = a.respond(n, r, w)
	}
	w.WriteHeader(status)
}

func (a *app) requests() []request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]request(nil), a.reqs...)
}

func (a *app) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.reqs)
}

func statuses(codes ...int) func(int, *http.Request, http.ResponseWriter) int {
	return func(n int, _ *http.Request, _ http.ResponseWriter) int {
		if n < len(codes) {
			return codes[n]
		}
		return codes[len(codes)-1]
	}
}

func openStore(t testing.TB, path string) *store.Store {
	t.Helper()
	s, err := store.Open(path, store.Options{Sync: "always"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newForwarder(t testing.TB, cfg Config) *Forwarder {
	t.Helper()
	if cfg.Store == nil {
		s := openStore(t, store.Memory)
		t.Cleanup(func() { _ = s.Close() })
		cfg.Store = s
	}
	f, err := New(cfg)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	return f
}

func signer(t testing.TB) *webhook.Signer {
	t.Helper()
	s, err := webhook.NewSigner(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startRun runs f.Run in the background; the returned stop cancels it and
// checks that it returns nil promptly.
func startRun(t *testing.T, f *Forwarder) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }() // stopped by cancel below
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run() = %v, want nil after cancel", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitFor polls cond; it fails the test if cond is still false after a
// generous deadline (a hang, not a timing assertion).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func enqueue(t testing.TB, f *Forwarder, it Item) {
	t.Helper()
	if err := f.Enqueue(context.Background(), it); err != nil {
		t.Fatalf("Enqueue(%s) = %v", it.ID, err)
	}
}

func loadT(t testing.TB, f *Forwarder, id string) (store.OutboxRecord, bool) {
	t.Helper()
	rec, ok, err := f.ob.Load(id)
	if err != nil {
		t.Fatalf("load(%s) = %v", id, err)
	}
	return rec, ok
}

func TestDeliverSigned(t *testing.T) {
	checkLeaks(t)
	clock := newClock()
	a := newApp(t, clock.Now, nil)
	f := newForwarder(t, Config{Signer: signer(t), Now: clock.Now})
	body := []byte(`{"event":"bookingUpdate","data":{"id":7}}`)
	enqueue(t, f, Item{ID: "fwd_1", EventID: "evt_1", URL: a.URL + "/api/bookings/socket-update", Body: body})
	if got := f.Stats().Pending; got != 1 {
		t.Errorf("Stats().Pending after Enqueue = %d, want 1", got)
	}
	stop := startRun(t, f)
	waitFor(t, "delivery", func() bool { return f.Stats().Delivered == 1 })
	stop()

	reqs := a.requests()
	if len(reqs) != 1 {
		t.Fatalf("app got %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.verifyErr != nil {
		t.Errorf("Verifier rejected the forwarded request: %v", r.verifyErr)
	}
	checks := []struct{ name, got, want string }{
		{"webhook-id", r.id(), "fwd_1"},
		{"webhook-timestamp", r.header.Get(webhook.HeaderTimestamp), strconv.FormatInt(clock.Now().Unix(), 10)},
		{"Content-Type", r.header.Get("Content-Type"), "application/json"},
		{"User-Agent", r.header.Get("User-Agent"), "sidecar"},
		{"body", string(r.body), string(body)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("request %s = %q, want %q", c.name, c.got, c.want)
		}
	}
	if got, want := f.Stats(), (Stats{Delivered: 1}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
	if _, ok := loadT(t, f, "fwd_1"); ok {
		t.Error("delivered item still in the outbox")
	}
}

// 500, 500, 200: the item is retried with the same webhook-id and a backoff
// ceiling that doubles. The fake clock only moves when the test moves it, so
// due times are checked exactly.
func TestRetryWithBackoff(t *testing.T) {
	checkLeaks(t)
	clock := newClock()
	a := newApp(t, clock.Now, statuses(500, 500, 200))
	f := newForwarder(t, Config{
		Signer: signer(t), Now: clock.Now,
		InitialBackoff: time.Second, MaxBackoff: time.Minute, RetryHorizon: time.Hour,
	})
	var (
		mu       sync.Mutex
		ceilings []time.Duration
	)
	f.jitter = func(c time.Duration) time.Duration {
		mu.Lock()
		ceilings = append(ceilings, c)
		mu.Unlock()
		return c * 3 / 4 // inside [0, c), and exact to check
	}
	enqueue(t, f, Item{ID: "fwd_retry", URL: a.URL, Body: []byte(`{}`)})
	startRun(t, f)

	for i, ceiling := range []time.Duration{time.Second, 2 * time.Second} {
		waitFor(t, "retry "+strconv.Itoa(i+1)+" recorded", func() bool { return f.Stats().Retried == int64(i+1) })
		rec, ok := loadT(t, f, "fwd_retry")
		if !ok {
			t.Fatal("item left the outbox after a 500")
		}
		wantDue := clock.Now().Add(ceiling * 3 / 4)
		if rec.Attempts != i+1 || rec.Due != wantDue.UnixNano() {
			t.Errorf("after failure %d: attempts %d, due %v; want %d, %v", i+1, rec.Attempts, time.Unix(0, rec.Due), i+1, wantDue)
		}
		if rec.LastErr != "500 Internal Server Error" {
			t.Errorf("after failure %d: last error %q, want the status", i+1, rec.LastErr)
		}
		if n := a.count(); n != i+1 {
			t.Fatalf("app got %d requests before the item was due, want %d", n, i+1)
		}
		clock.Advance(ceiling * 3 / 4)
		f.poke()
	}
	waitFor(t, "delivery", func() bool { return f.Stats().Delivered == 1 })

	mu.Lock()
	got := append([]time.Duration(nil), ceilings...)
	mu.Unlock()
	if want := []time.Duration{time.Second, 2 * time.Second}; !equalDurations(got, want) {
		t.Errorf("backoff ceilings = %v, want %v", got, want)
	}
	for i, r := range a.requests() {
		if r.id() != "fwd_retry" || r.verifyErr != nil {
			t.Errorf("attempt %d: webhook-id %q, verify %v; want fwd_retry, nil", i, r.id(), r.verifyErr)
		}
	}
	if got, want := f.Stats(), (Stats{Delivered: 1, Retried: 2}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// One answer per case, checked through Stats, the stored record and the
// next due time. The fake clock is frozen, so a retry never comes due.
func TestStatusHandling(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		retryAfter string
		want       Stats
		wantDue    time.Duration // from now, for retried items
	}{
		{"200", 200, "", Stats{Delivered: 1}, 0},
		{"204", 204, "", Stats{Delivered: 1}, 0},
		{"302 is not followed", 302, "", Stats{Pending: 1, Retried: 1}, time.Second},
		{"404", 404, "", Stats{Pending: 1, Retried: 1}, time.Second},
		{"410 stops", 410, "", Stats{Gone: 1}, 0},
		{"500", 500, "", Stats{Pending: 1, Retried: 1}, time.Second},
		{"429 with Retry-After seconds", 429, "30", Stats{Pending: 1, Retried: 1}, 30 * time.Second},
		{"503 Retry-After capped at MaxBackoff", 503, "7200", Stats{Pending: 1, Retried: 1}, time.Minute},
		{"503 Retry-After below backoff", 503, "0", Stats{Pending: 1, Retried: 1}, time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newClock()
			a := newApp(t, clock.Now, func(_ int, _ *http.Request, w http.ResponseWriter) int {
				if tc.status == 302 {
					w.Header().Set("Location", "/elsewhere")
				}
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				return tc.status
			})
			f := newForwarder(t, Config{
				Signer: signer(t), Now: clock.Now,
				InitialBackoff: time.Second, MaxBackoff: time.Minute, RetryHorizon: time.Hour,
			})
			f.jitter = func(c time.Duration) time.Duration { return c }
			enqueue(t, f, Item{ID: "fwd_status", URL: a.URL, Body: []byte(`{}`)})
			stop := startRun(t, f)
			waitFor(t, "the outcome", func() bool { s := f.Stats(); return s.Pending == 0 || s.Retried > 0 })
			stop()
			tc.want.PendingBytes = tc.want.Pending * charge(2) // a retried item still counts
			if got := f.Stats(); got != tc.want {
				t.Errorf("Stats() = %+v, want %+v", got, tc.want)
			}
			if n := a.count(); n != 1 {
				t.Errorf("app got %d requests, want 1 (redirects not followed)", n)
			}
			rec, ok := loadT(t, f, "fwd_status")
			if ok != (tc.want.Pending == 1) {
				t.Fatalf("item in outbox = %v, want %v", ok, tc.want.Pending == 1)
			}
			if ok && rec.Due != clock.Now().Add(tc.wantDue).UnixNano() {
				t.Errorf("next attempt in %v, want %v", time.Unix(0, rec.Due).Sub(clock.Now()), tc.wantDue)
			}
		})
	}
}

// RetryHorizon counts from Item.Created; an item whose next attempt would
// fall past it is dropped and counted Failed.
func TestRetryHorizon(t *testing.T) {
	const horizon = time.Hour
	tests := []struct {
		name         string
		age          time.Duration // of the item when enqueued
		wantRequests int
	}{
		{"horizon passes after the first failure", horizon - 500*time.Millisecond, 1},
		{"horizon passes after the second failure", horizon - 1500*time.Millisecond, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			clock := newClock()
			a := newApp(t, clock.Now, statuses(500))
			f := newForwarder(t, Config{
				Signer: signer(t), Now: clock.Now,
				InitialBackoff: time.Second, MaxBackoff: time.Minute, RetryHorizon: horizon,
			})
			f.jitter = func(c time.Duration) time.Duration { return c }
			enqueue(t, f, Item{ID: "fwd_old", URL: a.URL, Created: clock.Now().Add(-tc.age)})
			stop := startRun(t, f)
			for i := 1; i < tc.wantRequests; i++ {
				waitFor(t, "a retry", func() bool { return f.Stats().Retried == int64(i) })
				clock.Advance(backoffCeiling(time.Second, time.Minute, i))
				f.poke()
			}
			waitFor(t, "the item to fail", func() bool { return f.Stats().Failed == 1 })
			stop()
			if n := a.count(); n != tc.wantRequests {
				t.Errorf("app got %d requests, want %d", n, tc.wantRequests)
			}
			if got, want := f.Stats(), (Stats{Retried: int64(tc.wantRequests - 1), Failed: 1}); got != want {
				t.Errorf("Stats() = %+v, want %+v", got, want)
			}
			if _, ok := loadT(t, f, "fwd_old"); ok {
				t.Error("failed item still in the outbox")
			}
		})
	}
}

// Items queued before a restart, including one that already failed once,
// are delivered by the next process.
func TestRestartResumes(t *testing.T) {
	checkLeaks(t)
	path := filepath.Join(t.TempDir(), "node.db")
	var (
		up     atomic.Bool // the app answers 503 until it is up
		mu     sync.Mutex
		served = map[string]int{} // 2xx answers per webhook-id
	)
	a := newApp(t, time.Now, func(_ int, r *http.Request, _ http.ResponseWriter) int {
		if !up.Load() {
			return 503
		}
		mu.Lock()
		served[r.Header.Get(webhook.HeaderID)]++
		mu.Unlock()
		return 200
	})

	s := openStore(t, path)
	f := newForwarder(t, Config{Store: s, Signer: signer(t), InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
	enqueue(t, f, Item{ID: "fwd_failed_once", URL: a.URL})
	stop := startRun(t, f)
	waitFor(t, "a failed attempt", func() bool { return f.Stats().Retried >= 1 })
	stop()
	for i := range 3 {
		enqueue(t, f, Item{ID: "fwd_" + strconv.Itoa(i), URL: a.URL, Body: []byte(`{"n":` + strconv.Itoa(i) + `}`)})
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	up.Store(true)
	s = openStore(t, path)
	defer func() { _ = s.Close() }()
	f = newForwarder(t, Config{Store: s, Signer: signer(t), InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
	if got := f.Stats().Pending; got != 4 {
		t.Fatalf("Stats().Pending after restart = %d, want 4", got)
	}
	stop = startRun(t, f)
	waitFor(t, "all four delivered", func() bool { return f.Stats().Delivered == 4 })
	stop()
	for _, r := range a.requests() {
		if r.verifyErr != nil {
			t.Errorf("%s: %v", r.id(), r.verifyErr)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, id := range []string{"fwd_failed_once", "fwd_0", "fwd_1", "fwd_2"} {
		if served[id] != 1 {
			t.Errorf("%s delivered %d times after restart, want 1", id, served[id])
		}
	}
	if got := f.Stats().Pending; got != 0 {
		t.Errorf("Stats().Pending = %d, want 0", got)
	}
}

// Stopping Run while the app is slow cancels the attempt without counting
// it; the item is delivered after a restart.
func TestShutdownMidAttempt(t *testing.T) {
	checkLeaks(t)
	path := filepath.Join(t.TempDir(), "node.db")
	entered := make(chan struct{}, 1)
	var fast atomic.Bool // after the restart the app answers at once
	slow := newApp(t, time.Now, func(_ int, r *http.Request, _ http.ResponseWriter) int {
		if fast.Load() {
			return 200
		}
		entered <- struct{}{}
		<-r.Context().Done()
		return 500
	})
	s := openStore(t, path)
	f := newForwarder(t, Config{Store: s, Signer: signer(t), Timeout: time.Minute})
	enqueue(t, f, Item{ID: "fwd_slow", URL: slow.URL})
	stop := startRun(t, f)
	<-entered
	stop()
	if got, want := f.Stats(), (Stats{Pending: 1, PendingBytes: charge(0)}); got != want {
		t.Errorf("Stats() after shutdown mid-attempt = %+v, want %+v", got, want)
	}
	rec, ok := loadT(t, f, "fwd_slow")
	if !ok || rec.Attempts != 0 {
		t.Errorf("record after shutdown = %+v, %v; want queued with 0 attempts", rec, ok)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	fast.Store(true)

	s = openStore(t, path)
	defer func() { _ = s.Close() }()
	f = newForwarder(t, Config{Store: s, Signer: signer(t)})
	stop = startRun(t, f)
	waitFor(t, "delivery after restart", func() bool { return f.Stats().Delivered == 1 })
	stop()
}

func TestConcurrentEnqueue(t *testing.T) {
	checkLeaks(t)
	const producers, each = 8, 25
	a := newApp(t, time.Now, nil)
	f := newForwarder(t, Config{Signer: signer(t), Concurrency: 4})
	startRun(t, f)
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := "fwd_" + strconv.Itoa(p) + "_" + strconv.Itoa(i)
				if err := f.Enqueue(context.Background(), Item{ID: id, URL: a.URL, Body: []byte(`{}`)}); err != nil {
					t.Errorf("Enqueue(%s) = %v", id, err)
				}
				// Also re-enqueue an earlier id: a no-op if still queued.
				if i > 0 {
					_ = f.Enqueue(context.Background(), Item{ID: "fwd_" + strconv.Itoa(p) + "_0", URL: a.URL})
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, "the queue to drain", func() bool { return f.Stats().Pending == 0 })
	seen := map[string]int{}
	for _, r := range a.requests() {
		seen[r.id()]++
		if r.verifyErr != nil {
			t.Errorf("%s: %v", r.id(), r.verifyErr)
		}
	}
	if len(seen) != producers*each {
		t.Errorf("app saw %d distinct ids, want %d", len(seen), producers*each)
	}
	for p := range producers {
		for i := 1; i < each; i++ {
			if id := "fwd_" + strconv.Itoa(p) + "_" + strconv.Itoa(i); seen[id] != 1 {
				t.Errorf("%s delivered %d times, want 1", id, seen[id])
			}
		}
	}
	if got := f.Stats(); got.Delivered != int64(a.count()) || got.Retried != 0 {
		t.Errorf("Stats() = %+v, want Delivered = %d requests and no retries", got, a.count())
	}
}

func TestEnqueueDuplicateIsNoop(t *testing.T) {
	f := newForwarder(t, Config{Signer: signer(t)})
	for range 3 {
		enqueue(t, f, Item{ID: "fwd_dup", URL: "http://app.invalid/x"})
	}
	if got := f.Stats().Pending; got != 1 {
		t.Errorf("Stats().Pending = %d, want 1", got)
	}
}

func TestEnqueueErrors(t *testing.T) {
	tests := []struct {
		name string
		it   Item
		want error
	}{
		{"empty id", Item{URL: "http://a/b"}, ErrInvalidItem},
		{"id with dot", Item{ID: "a.b", URL: "http://a/b"}, ErrInvalidItem},
		{"id too long", Item{ID: strings.Repeat("x", webhook.MaxIDLen+1), URL: "http://a/b"}, ErrInvalidItem},
		{"relative url", Item{ID: "x", URL: "/api/x"}, ErrInvalidItem},
		{"ftp url", Item{ID: "x", URL: "ftp://a/b"}, ErrInvalidItem},
		{"no host", Item{ID: "x", URL: "http:///b"}, ErrInvalidItem},
		{"unparsable url", Item{ID: "x", URL: "http://a b/%zz"}, ErrInvalidItem},
	}
	f := newForwarder(t, Config{Signer: signer(t)})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := f.Enqueue(context.Background(), tc.it); !errors.Is(err, tc.want) {
				t.Errorf("Enqueue(%+v) = %v, want %v", tc.it, err, tc.want)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.Enqueue(ctx, Item{ID: "x", URL: "http://a/b"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Enqueue(cancelled ctx) = %v, want context.Canceled", err)
	}
	if got := f.Stats().Pending; got != 0 {
		t.Errorf("Stats().Pending = %d after rejected items, want 0", got)
	}
}

func TestMaxPending(t *testing.T) {
	f := newForwarder(t, Config{Signer: signer(t), MaxPending: 2})
	enqueue(t, f, Item{ID: "a", URL: "http://app.invalid/"})
	enqueue(t, f, Item{ID: "b", URL: "http://app.invalid/"})
	if err := f.Enqueue(context.Background(), Item{ID: "c", URL: "http://app.invalid/"}); !errors.Is(err, ErrFull) {
		t.Errorf("Enqueue over MaxPending = %v, want ErrFull", err)
	}
	if err := f.Enqueue(context.Background(), Item{ID: "a", URL: "http://app.invalid/"}); err != nil {
		t.Errorf("re-Enqueue of a queued id when full = %v, want nil (no-op)", err)
	}
}

func TestNewErrors(t *testing.T) {
	s := openStore(t, store.Memory)
	defer func() { _ = s.Close() }()
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no store", Config{}},
		{"negative timeout", Config{Store: s, Timeout: -1}},
		{"negative horizon", Config{Store: s, RetryHorizon: -1}},
		{"initial above max", Config{Store: s, InitialBackoff: time.Hour, MaxBackoff: time.Minute}},
		{"negative concurrency", Config{Store: s, Concurrency: -1}},
		{"negative max pending", Config{Store: s, MaxPending: -1}},
		{"negative max pending bytes", Config{Store: s, MaxPendingBytes: -1}},
		{"negative max pending per user", Config{Store: s, MaxPendingPerUser: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil {
				t.Errorf("New(%s) = nil error, want one", tc.name)
			}
		})
	}
}

// Without a Signer, requests carry webhook-id and webhook-timestamp but no
// signature, and the warning is logged once, not per request.
func TestUnsignedWarnsOnce(t *testing.T) {
	checkLeaks(t)
	var logs bytes.Buffer
	a := newApp(t, time.Now, nil)
	f := newForwarder(t, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	enqueue(t, f, Item{ID: "u1", URL: a.URL})
	enqueue(t, f, Item{ID: "u2", URL: a.URL})
	stop := startRun(t, f)
	waitFor(t, "two deliveries", func() bool { return f.Stats().Delivered == 2 })
	stop()
	for _, r := range a.requests() {
		if r.header.Get(webhook.HeaderSignature) != "" || r.id() == "" || r.header.Get(webhook.HeaderTimestamp) == "" {
			t.Errorf("unsigned request headers = %v, want id and timestamp only", r.header)
		}
		if !errors.Is(r.verifyErr, webhook.ErrMissingHeader) {
			t.Errorf("Verify(unsigned) = %v, want ErrMissingHeader", r.verifyErr)
		}
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Errorf("%d warnings logged, want 1:\n%s", n, logs.String())
	}
}

func TestRunTwice(t *testing.T) {
	checkLeaks(t)
	f := newForwarder(t, Config{Signer: signer(t)})
	stop := startRun(t, f)
	waitFor(t, "Run to start", f.running.Load)
	if err := f.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run() = %v, want ErrRunning", err)
	}
	stop()
}

// RELIABILITY case 49 on the outbound side: when the store cannot record an
// outcome (disk full, simulated with RLIMIT_FSIZE as in engine/store), the
// item is held back for a backoff instead of being re-sent in a loop, and is
// finished once writes work again. The app sees it twice: at least once.
// Not parallel: the limit is process-wide.
func TestStoreFailureHoldsItem(t *testing.T) {
	checkLeaks(t)
	clock := newClock()
	a := newApp(t, clock.Now, nil)
	path := filepath.Join(t.TempDir(), "node.db")
	s := openStore(t, path)
	defer func() { _ = s.Close() }()
	f := newForwarder(t, Config{Store: s, Signer: signer(t), Now: clock.Now,
		InitialBackoff: time.Minute, MaxBackoff: time.Hour})
	enqueue(t, f, Item{ID: "fwd_hold", URL: a.URL})

	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	restore := func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
			t.Fatalf("restore RLIMIT_FSIZE: %v", err)
		}
	}
	t.Cleanup(restore)
	full := old
	full.Cur = 1 // no file may grow now
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &full); err != nil {
		t.Fatal(err)
	}

	stop := startRun(t, f)
	waitFor(t, "the first attempt", func() bool { return a.count() == 1 })
	waitFor(t, "the store failure", func() bool { return s.Healthy() != nil })
	// Give a looping scheduler every chance to show itself, then check it
	// did not re-send: the hold is an hour of fake time.
	for range 50 {
		f.poke()
		time.Sleep(time.Millisecond)
	}
	if n := a.count(); n != 1 {
		t.Fatalf("app got %d requests while the store was failing, want 1", n)
	}
	if got := f.Stats(); got.Delivered != 0 || got.Pending != 1 {
		t.Errorf("Stats() = %+v, want the item still pending, not counted delivered", got)
	}

	restore()
	clock.Advance(time.Minute)
	f.poke()
	waitFor(t, "delivery once the disk has room", func() bool { return f.Stats().Delivered == 1 })
	stop()
	if n := a.count(); n != 2 {
		t.Errorf("app got %d requests, want 2 (re-sent after the unrecorded success)", n)
	}
	if err := s.Healthy(); err != nil {
		t.Errorf("store Healthy() = %v after recovery, want nil", err)
	}
}

// BenchmarkEnqueue queues small (70 B) and large (60 KB, a client event
// near the message limit) bodies. Every benchRound items the outbox is
// thrown away and reopened outside the timer, so the disk and memory a run
// uses stay bounded whatever b.N is.
func BenchmarkEnqueue(b *testing.B) {
	const benchRound = 1000
	small := []byte(`{"event":"bookingUpdate","data":{"id":"b_1","status":"confirmed"}}`)
	large := bytes.Repeat([]byte("x"), 60<<10)
	for _, bc := range []struct {
		name string
		file bool
		body []byte
	}{
		{"memory/70B", false, small},
		{"file/70B", true, small},
		{"memory/60KB", false, large},
		{"file/60KB", true, large},
	} {
		b.Run(bc.name, func(b *testing.B) {
			dir := b.TempDir()
			var s *store.Store
			var f *Forwarder
			open := func() {
				path := store.Memory
				if bc.file {
					path = filepath.Join(dir, "node.db")
				}
				var err error
				if s, err = store.Open(path, store.Options{Sync: "everysecond"}); err != nil {
					b.Fatal(err)
				}
				if f, err = New(Config{Store: s, Signer: signer(b), MaxPending: 1 << 30, MaxPendingBytes: 1 << 40}); err != nil {
					b.Fatal(err)
				}
			}
			reset := func() {
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
				entries, _ := os.ReadDir(dir)
				for _, e := range entries {
					if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
						b.Fatal(err)
					}
				}
			}
			ids := make([]string, benchRound)
			for i := range ids {
				ids[i] = "fwd_" + strconv.Itoa(i)
			}
			open()
			ctx := context.Background()
			b.SetBytes(int64(len(bc.body)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i > 0 && i%benchRound == 0 {
					b.StopTimer()
					reset()
					open()
					b.StartTimer()
				}
				if err := f.Enqueue(ctx, Item{ID: ids[i%benchRound], URL: "http://app.internal/hook", Body: bc.body}); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			reset()
		})
	}
}
