package forward

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidecar/sidecar/engine/store"
)

// userBytes is what user has queued now.
func userBytes(f *Forwarder, user string) int64 {
	f.budget.mu.Lock()
	defer f.budget.mu.Unlock()
	return f.budget.perUser[user]
}

func body(n int) []byte { return bytes.Repeat([]byte("b"), n) }

// Issue 7: the outbox was capped only by item count, so a few users
// sending large client events could fill memory. The byte cap refuses
// with ErrFull (not ErrUserFull) and frees room as items are delivered.
func TestMaxPendingBytes(t *testing.T) {
	checkLeaks(t)
	var up atomic.Bool
	a := newApp(t, time.Now, func(int, *http.Request, http.ResponseWriter) int {
		if up.Load() {
			return 200
		}
		return 503
	})
	f := newForwarder(t, Config{Signer: signer(t), MaxPendingBytes: 3 * charge(1000), MaxPendingPerUser: 1 << 30,
		InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
	for i := range 3 {
		enqueue(t, f, Item{ID: "fwd_" + strconv.Itoa(i), URL: a.URL, Body: body(1000), User: "u" + strconv.Itoa(i)})
	}
	err := f.Enqueue(context.Background(), Item{ID: "fwd_over", URL: a.URL, Body: body(1)})
	if !errors.Is(err, ErrFull) || errors.Is(err, ErrUserFull) {
		t.Errorf("Enqueue past MaxPendingBytes = %v, want ErrFull, not ErrUserFull", err)
	}
	if err := f.Enqueue(context.Background(), Item{ID: "fwd_1", URL: a.URL, Body: body(1000)}); err != nil {
		t.Errorf("re-Enqueue of a queued id when full = %v, want nil (no-op)", err)
	}
	if got, want := f.Stats(), (Stats{Pending: 3, PendingBytes: 3 * charge(1000)}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}

	up.Store(true)
	stop := startRun(t, f)
	waitFor(t, "three deliveries", func() bool { return f.Stats().Delivered == 3 })
	stop()
	if got := f.Stats(); got.Pending != 0 || got.PendingBytes != 0 {
		t.Errorf("Stats() after delivery = %+v, want nothing pending", got)
	}
	enqueue(t, f, Item{ID: "fwd_over", URL: a.URL, Body: body(1000)})
}

// The per-user cap refuses one user's items with ErrUserFull (which is
// also ErrFull) while others, and webhooks, still get in; the user's room
// comes back when their items are delivered, gone or dropped.
func TestMaxPendingPerUser(t *testing.T) {
	checkLeaks(t)
	clock := newClock()
	a := newApp(t, clock.Now, func(n int, r *http.Request, _ http.ResponseWriter) int {
		switch r.Header.Get("Webhook-Id") {
		case "a_gone":
			return 410
		case "a_fails":
			return 500
		}
		return 200
	})
	f := newForwarder(t, Config{Signer: signer(t), Now: clock.Now, MaxPendingPerUser: 3 * charge(100),
		InitialBackoff: time.Hour, MaxBackoff: time.Hour, RetryHorizon: time.Minute})
	ctx := context.Background()
	for _, id := range []string{"a_ok", "a_gone", "a_fails"} {
		enqueue(t, f, Item{ID: id, URL: a.URL, Body: body(100), User: "alice"})
	}
	err := f.Enqueue(ctx, Item{ID: "a_4", URL: a.URL, Body: body(100), User: "alice"})
	if !errors.Is(err, ErrUserFull) || !errors.Is(err, ErrFull) {
		t.Errorf("Enqueue past alice's share = %v, want ErrUserFull (and ErrFull)", err)
	}
	enqueue(t, f, Item{ID: "b_1", URL: a.URL, Body: body(100), User: "bob"})
	for i := range 5 { // webhooks are not counted per user
		enqueue(t, f, Item{ID: "wh_" + strconv.Itoa(i), URL: a.URL, Body: body(100)})
	}
	if got := userBytes(f, "alice"); got != 3*charge(100) {
		t.Errorf("alice has %d bytes queued, want %d", got, 3*charge(100))
	}

	stop := startRun(t, f)
	// Delivered (2xx), gone (410) and failed (retry horizon passed) all
	// give the room back.
	waitFor(t, "every outcome", func() bool { s := f.Stats(); return s.Delivered == 7 && s.Gone == 1 && s.Failed == 1 })
	stop()
	if got := userBytes(f, "alice"); got != 0 {
		t.Errorf("alice has %d bytes queued after all her items left, want 0", got)
	}
	if got := f.Stats(); got.Pending != 0 || got.PendingBytes != 0 {
		t.Errorf("Stats() = %+v, want nothing pending", got)
	}
	if n := len(f.budget.perUser); n != 0 {
		t.Errorf("%d users still tracked with nothing queued, want 0", n)
	}
	enqueue(t, f, Item{ID: "a_4", URL: a.URL, Body: body(100), User: "alice"})
}

// An item bigger than a cap on its own is refused, not queued forever.
func TestItemBiggerThanCap(t *testing.T) {
	f := newForwarder(t, Config{Signer: signer(t), MaxPendingBytes: 10 << 10, MaxPendingPerUser: 4 << 10})
	ctx := context.Background()
	if err := f.Enqueue(ctx, Item{ID: "u", URL: "http://app.invalid/", Body: body(5 << 10), User: "u"}); !errors.Is(err, ErrUserFull) {
		t.Errorf("Enqueue of a body over the per-user cap = %v, want ErrUserFull", err)
	}
	if err := f.Enqueue(ctx, Item{ID: "w", URL: "http://app.invalid/", Body: body(11 << 10)}); !errors.Is(err, ErrFull) {
		t.Errorf("Enqueue of a body over the byte cap = %v, want ErrFull", err)
	}
	if got := f.Stats(); got != (Stats{}) {
		t.Errorf("Stats() = %+v, want nothing queued", got)
	}
}

// Concurrent Enqueues never take the outbox past a cap, even for an
// instant (checked inside the store's Insert, after the reservation),
// while deliveries free room at the same time; the counts end exact.
func TestCapsUnderConcurrency(t *testing.T) {
	checkLeaks(t)
	const (
		maxBytes   = 20 * (600 + itemOverhead)
		maxPerUser = 6 * (600 + itemOverhead)
	)
	a := newApp(t, time.Now, nil)
	ob := newFakeOutbox()
	var f *Forwarder
	var over atomic.Int64
	ob.insert = func(rec store.OutboxRecord) error {
		if s := f.Stats(); s.PendingBytes > maxBytes {
			over.Add(1)
		}
		if rec.User != "" && userBytes(f, rec.User) > maxPerUser {
			over.Add(1)
		}
		return nil
	}
	f = newForwarder(t, Config{Outbox: ob, Signer: signer(t), MaxPendingBytes: maxBytes, MaxPendingPerUser: maxPerUser, Concurrency: 2})
	stop := startRun(t, f)

	var (
		wg       sync.WaitGroup
		accepted atomic.Int64
		refused  atomic.Int64
	)
	for p := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				user := "user" + strconv.Itoa(p%3)
				if p >= 6 {
					user = "" // webhooks
				}
				it := Item{ID: "fwd_" + strconv.Itoa(p) + "_" + strconv.Itoa(i), URL: a.URL, Body: body(100 + 100*(i%6)), User: user}
				switch err := f.Enqueue(context.Background(), it); {
				case err == nil:
					accepted.Add(1)
				case errors.Is(err, ErrFull):
					refused.Add(1)
				default:
					t.Errorf("Enqueue(%s) = %v", it.ID, err)
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, "the queue to drain", func() bool { return f.Stats().Delivered == accepted.Load() })
	stop()
	if n := over.Load(); n != 0 {
		t.Errorf("a cap was passed %d times", n)
	}
	if got := f.Stats(); got.Pending != 0 || got.PendingBytes != 0 || len(f.budget.perUser) != 0 {
		t.Errorf("Stats() = %+v, users tracked %d; want all released", got, len(f.budget.perUser))
	}
	if refused.Load() == 0 {
		t.Error("no Enqueue was refused: the caps were never reached, the test proves nothing")
	}
	t.Logf("accepted %d, refused %d", accepted.Load(), refused.Load())
}

// A restart rebuilds the counts, per user too, from the stored records,
// and delivers what was queued.
func TestRestartRestoresCounts(t *testing.T) {
	checkLeaks(t)
	path := filepath.Join(t.TempDir(), "node.db")
	var up atomic.Bool
	a := newApp(t, time.Now, func(int, *http.Request, http.ResponseWriter) int {
		if up.Load() {
			return 200
		}
		return 503
	})
	cfg := func(s *store.Store) Config {
		return Config{Store: s, Signer: signer(t), MaxPendingPerUser: 2 * charge(60<<10),
			InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond}
	}
	s := openStore(t, path)
	f := newForwarder(t, cfg(s))
	enqueue(t, f, Item{ID: "a_1", URL: a.URL, Body: body(60 << 10), User: "alice"})
	enqueue(t, f, Item{ID: "a_2", URL: a.URL, Body: body(60 << 10), User: "alice"})
	enqueue(t, f, Item{ID: "b_1", URL: a.URL, Body: body(10), User: "bob"})
	enqueue(t, f, Item{ID: "wh_1", URL: a.URL, Body: body(500)})
	before := f.Stats()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, path)
	defer func() { _ = s.Close() }()
	f = newForwarder(t, cfg(s))
	if got := f.Stats(); got.Pending != 4 || got.PendingBytes != before.PendingBytes {
		t.Errorf("Stats() after restart = %+v, want Pending 4 and PendingBytes %d", got, before.PendingBytes)
	}
	if got := userBytes(f, "alice"); got != 2*charge(60<<10) {
		t.Errorf("alice's bytes after restart = %d, want %d", got, 2*charge(60<<10))
	}
	if err := f.Enqueue(context.Background(), Item{ID: "a_3", URL: a.URL, Body: body(1), User: "alice"}); !errors.Is(err, ErrUserFull) {
		t.Errorf("Enqueue for alice after restart = %v, want ErrUserFull: her share was restored", err)
	}
	up.Store(true)
	stop := startRun(t, f)
	waitFor(t, "delivery", func() bool { return f.Stats().Delivered == 4 })
	stop()
	if got := f.Stats(); got.Pending != 0 || got.PendingBytes != 0 {
		t.Errorf("Stats() after delivery = %+v, want nothing pending", got)
	}
}

// A store error from Insert is returned, not ErrFull, and gives the room
// back.
func TestEnqueueStoreErrorReleases(t *testing.T) {
	ob := newFakeOutbox()
	fail := true
	ob.insert = func(store.OutboxRecord) error {
		if fail {
			return errors.New("disk full")
		}
		return nil
	}
	f := newForwarder(t, Config{Outbox: ob, Signer: signer(t), MaxPendingPerUser: charge(10)})
	for range 3 {
		if err := f.Enqueue(context.Background(), Item{ID: "x", URL: "http://app.invalid/", Body: body(10), User: "u"}); err == nil || errors.Is(err, ErrFull) {
			t.Fatalf("Enqueue with a failing store = %v, want the store's error", err)
		}
	}
	fail = false
	enqueue(t, f, Item{ID: "x", URL: "http://app.invalid/", Body: body(10), User: "u"})
	if got := f.Stats(); got.Pending != 1 || got.PendingBytes != charge(10) {
		t.Errorf("Stats() = %+v, want exactly the one item", got)
	}
}
