// Package forward delivers events to the app: signed Standard Webhooks POSTs,
// queued durably in the node's store before the inbound request is answered,
// and retried with exponential backoff and full jitter until the app answers
// 2xx, answers 410 Gone, or the retry horizon passes. Pending items survive a
// restart and resume when Run starts again.
//
// The bodies of queued items are not held in memory: with a file store
// they are written once to the store's spool directory, read back for each
// attempt, and a retry rewrites only the small bookkeeping record (see
// store.Outbox). With the in-memory store they stay in memory.
//
// Delivery is at least once: if the node stops between the app's 2xx and the
// removal of the item, the item is sent again with the same webhook-id, which
// the app can use as its idempotency key. Items are not ordered.
package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sidecar/sidecar/engine/store"
	"github.com/sidecar/sidecar/engine/webhook"
)

// Defaults for zero Config fields.
const (
	DefaultTimeout        = 15 * time.Second // the spec recommends 15-30 s
	DefaultRetryHorizon   = 24 * time.Hour
	DefaultInitialBackoff = time.Second
	DefaultMaxBackoff     = 10 * time.Minute
	DefaultConcurrency    = 4
	DefaultMaxPending     = 100_000
)

// userAgent is sent on every request.
const userAgent = "sidecar"

var (
	// ErrInvalidItem is returned (wrapped) by Enqueue for an item that can
	// never be delivered: empty or malformed ID, URL not absolute http(s).
	ErrInvalidItem = errors.New("forward: invalid item")
	// ErrFull is returned by Enqueue when MaxPending items are queued; the
	// inbound request should be refused (503) so its sender retries later.
	ErrFull = errors.New("forward: outbox full")
	// ErrRunning is returned by Run when another Run is active.
	ErrRunning = errors.New("forward: already running")
)

// Config configures a Forwarder. Zero durations and counts take the
// defaults above; negative ones are an error.
type Config struct {
	Store *store.Store // required unless Outbox is set; the outbox shares the node's file
	// Outbox, if set, is used instead of Store.Outbox(): a seam for tests.
	Outbox Outbox
	// Signer signs each attempt. nil sends unsigned requests (with
	// webhook-id and webhook-timestamp) and logs a warning once, in New.
	Signer *webhook.Signer
	// Client sends the requests. nil: a client with Timeout that does not
	// follow redirects (the spec treats 3xx as a failure).
	Client *http.Client

	Timeout time.Duration // per attempt
	// RetryHorizon drops an item whose next retry would fall more than
	// this long after Item.Created. It is checked after a failure, so
	// every item, even one older than the horizon after a long
	// downtime, gets one attempt.
	RetryHorizon   time.Duration
	InitialBackoff time.Duration // ceiling of the first retry delay; doubles per failure
	MaxBackoff     time.Duration // largest ceiling, also caps Retry-After
	Concurrency    int           // parallel deliveries
	MaxPending     int           // Enqueue refuses beyond this many queued items (approximate under concurrency)

	Logger *slog.Logger     // nil discards
	Now    func() time.Time // nil is time.Now; tests freeze it
}

// Item is one request to deliver.
type Item struct {
	// ID is unique per item and becomes webhook-id on every attempt, so
	// the app can deduplicate retries. At most webhook.MaxIDLen bytes, no
	// '.'. Enqueueing an ID that is still queued is a no-op.
	ID      string
	EventID string // the event that caused it, for logs
	URL     string // absolute http or https URL
	Body    []byte // sent as is, as application/json; not kept by Enqueue
	// Created starts the retry horizon; zero means now.
	Created time.Time
}

// Stats are counters since New, except Pending, which is the outbox size.
type Stats struct {
	Pending   int64 // queued now, including items waiting for a retry
	Delivered int64 // answered 2xx
	Retried   int64 // attempts that failed and were rescheduled
	Failed    int64 // dropped: the retry horizon passed (or the record was unreadable)
	Gone      int64 // dropped because the app answered 410 Gone
}

// Forwarder queues and delivers items. Enqueue and Stats are safe for
// concurrent use, also while Run is running.
type Forwarder struct {
	cfg       Config
	ob        Outbox
	client    *http.Client
	ownClient bool // client was made here; Run closes its idle connections
	log       *slog.Logger
	now       func() time.Time
	// jitter picks the actual delay below a backoff ceiling; a field so
	// tests can make it deterministic.
	jitter func(ceiling time.Duration) time.Duration

	wake    chan struct{} // cap 1: Enqueue and finished deliveries poke the scheduler
	running atomic.Bool

	mu sync.Mutex
	// hold is guarded by mu. An id is present while a worker has it (zero
	// time) or, after the store refused to record an attempt's outcome,
	// until the time it may be tried again. The scheduler skips held ids.
	hold map[string]time.Time

	pending, delivered, retried, failed, gone atomic.Int64
}

// New checks cfg and counts the items already queued in the store (from an
// earlier run); Run delivers them.
func New(cfg Config) (*Forwarder, error) {
	ob := cfg.Outbox
	if ob == nil {
		if cfg.Store == nil {
			return nil, errors.New("forward: Config.Store is nil")
		}
		ob = cfg.Store.Outbox()
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"Timeout", &cfg.Timeout, DefaultTimeout},
		{"RetryHorizon", &cfg.RetryHorizon, DefaultRetryHorizon},
		{"InitialBackoff", &cfg.InitialBackoff, DefaultInitialBackoff},
		{"MaxBackoff", &cfg.MaxBackoff, DefaultMaxBackoff},
	} {
		if *d.v < 0 {
			return nil, fmt.Errorf("forward: negative %s %v", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if cfg.InitialBackoff > cfg.MaxBackoff {
		return nil, fmt.Errorf("forward: InitialBackoff %v above MaxBackoff %v", cfg.InitialBackoff, cfg.MaxBackoff)
	}
	if cfg.Concurrency < 0 || cfg.MaxPending < 0 {
		return nil, fmt.Errorf("forward: negative Concurrency %d or MaxPending %d", cfg.Concurrency, cfg.MaxPending)
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.MaxPending == 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	f := &Forwarder{
		cfg:    cfg,
		ob:     ob,
		client: cfg.Client,
		log:    cfg.Logger,
		now:    cfg.Now,
		jitter: fullJitter,
		wake:   make(chan struct{}, 1),
		hold:   make(map[string]time.Time),
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	f.log = f.log.With("component", "forward")
	if f.now == nil {
		f.now = time.Now
	}
	if f.client == nil {
		f.ownClient = true
		f.client = &http.Client{
			Timeout: cfg.Timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	var n int64
	dropped, err := ob.Restore(func(store.OutboxRecord) { n++ })
	if err != nil {
		return nil, fmt.Errorf("forward: %w", err)
	}
	f.pending.Store(n)
	f.failed.Store(int64(dropped))
	if cfg.Signer == nil {
		f.log.Warn("no signing secret: forwarded requests are unsigned")
	}
	if dropped > 0 {
		f.log.Error("outbox items from an earlier run were unreadable: dropped", "dropped", dropped)
	}
	if n > 0 {
		f.log.Info("outbox has items from an earlier run", "pending", n)
	}
	return f, nil
}

// Enqueue stores it in the outbox; when it returns nil the item is as
// durable as the store's sync policy makes it, and Run will deliver it.
// Enqueueing an ID that is still queued does nothing and returns nil.
func (f *Forwarder) Enqueue(ctx context.Context, it Item) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validate(&it); err != nil {
		return err
	}
	now := f.now()
	if it.Created.IsZero() {
		it.Created = now
	}
	if f.pending.Load() >= int64(f.cfg.MaxPending) {
		if _, ok, err := f.ob.Load(it.ID); err == nil && ok {
			return nil // already queued: a no-op, even when full
		}
		return ErrFull
	}
	rec := store.OutboxRecord{
		ID: it.ID, EventID: it.EventID, URL: it.URL,
		Created: it.Created, Due: now.UnixNano(),
	}
	switch err := f.ob.Insert(rec, it.Body); {
	case errors.Is(err, store.ErrExists):
		return nil
	case err != nil:
		return fmt.Errorf("forward: enqueue %s: %w", it.ID, err)
	}
	f.pending.Add(1)
	f.poke()
	return nil
}

// Stats returns the current counters.
func (f *Forwarder) Stats() Stats {
	return Stats{
		Pending:   f.pending.Load(),
		Delivered: f.delivered.Load(),
		Retried:   f.retried.Load(),
		Failed:    f.failed.Load(),
		Gone:      f.gone.Load(),
	}
}

func validate(it *Item) error {
	switch {
	case it.ID == "":
		return fmt.Errorf("%w: empty ID", ErrInvalidItem)
	case len(it.ID) > webhook.MaxIDLen:
		return fmt.Errorf("%w: ID longer than %d bytes", ErrInvalidItem, webhook.MaxIDLen)
	case strings.IndexByte(it.ID, '.') >= 0:
		return fmt.Errorf("%w: ID %q contains '.'", ErrInvalidItem, it.ID)
	}
	u, err := url.Parse(it.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: URL %q is not an absolute http(s) URL", ErrInvalidItem, it.URL)
	}
	return nil
}

// poke wakes the scheduler without blocking.
func (f *Forwarder) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// fullJitter is "full jitter" backoff: uniform in [0, ceiling).
func fullJitter(ceiling time.Duration) time.Duration {
	if ceiling <= 0 {
		return 0
	}
	return rand.N(ceiling)
}

// backoffCeiling is InitialBackoff doubled per earlier failure, capped at
// MaxBackoff. failures counts the failed attempts so far (at least 1).
func backoffCeiling(initial, ceiling time.Duration, failures int) time.Duration {
	d := initial
	for i := 1; i < failures; i++ {
		if d >= ceiling/2 {
			return ceiling
		}
		d *= 2
	}
	return min(d, ceiling)
}
