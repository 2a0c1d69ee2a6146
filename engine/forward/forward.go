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
	DefaultTimeout        = 10 * time.Second // per attempt; also config's forward.timeout default
	DefaultRetryHorizon   = 24 * time.Hour
	DefaultInitialBackoff = time.Second
	DefaultMaxBackoff     = 10 * time.Minute
	DefaultConcurrency    = 4
	DefaultMaxPending     = 100_000
	// DefaultMaxPendingBytes fits a small VM: with a file store the bodies
	// are on disk, so this is mostly disk; with ":memory:" it is memory.
	DefaultMaxPendingBytes   = 64 << 20
	DefaultMaxPendingPerUser = 1 << 20
)

// userAgent is sent on every request.
const userAgent = "sidecar"

var (
	// ErrInvalidItem is returned (wrapped) by Enqueue for an item that can
	// never be delivered: empty or malformed ID, URL not absolute http(s).
	ErrInvalidItem = errors.New("forward: invalid item")
	// ErrFull is returned by Enqueue when the item would take the outbox
	// past MaxPending items or MaxPendingBytes: the inbound request should
	// be refused (a webhook with 503 and Retry-After, a client event with
	// an "overloaded" error ack) so its sender retries later.
	ErrFull = errors.New("forward: outbox full")
	// ErrUserFull is returned by Enqueue when the item would take its
	// Item.User past MaxPendingPerUser. It wraps ErrFull, so
	// errors.Is(err, ErrFull) holds for both.
	ErrUserFull = fmt.Errorf("%w: the user's share is used up", ErrFull)
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

	// Caps on what is queued; Enqueue refuses an item that would pass one
	// (ErrFull, ErrUserFull). An item counts as its body plus 1 KiB for
	// its bookkeeping, which covers what it takes in memory, so the byte
	// caps bound memory as well as disk. Items queued by an earlier run
	// are counted at New, even past a cap lowered since.
	MaxPending        int   // items (default 100,000)
	MaxPendingBytes   int64 // bytes in all (default 64 MiB)
	MaxPendingPerUser int64 // bytes per Item.User (default 1 MiB); items with no User count in the totals only

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
	// User is who caused it, for the per-user cap: the sender of a client
	// event. Empty for webhooks, which are not capped per user.
	User string
	URL  string // absolute http or https URL
	Body []byte // sent as is, as application/json; not kept by Enqueue
	// Created starts the retry horizon; zero means now.
	Created time.Time
}

// Stats are counters since New, except Pending and PendingBytes, which
// are the outbox's size now.
type Stats struct {
	Pending      int64 // queued now, including items waiting for a retry
	PendingBytes int64 // what they count against MaxPendingBytes
	Delivered    int64 // answered 2xx
	Retried      int64 // attempts that failed and were rescheduled
	Failed       int64 // dropped: the retry horizon passed, or the item was unreadable (also found so at New)
	Gone         int64 // dropped because the app answered 410 Gone
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

	budget *budget // what is queued, against the caps

	delivered, retried, failed, gone atomic.Int64
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
	if cfg.Concurrency < 0 || cfg.MaxPending < 0 || cfg.MaxPendingBytes < 0 || cfg.MaxPendingPerUser < 0 {
		return nil, fmt.Errorf("forward: negative Concurrency %d, MaxPending %d, MaxPendingBytes %d or MaxPendingPerUser %d",
			cfg.Concurrency, cfg.MaxPending, cfg.MaxPendingBytes, cfg.MaxPendingPerUser)
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.MaxPending == 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.MaxPendingBytes == 0 {
		cfg.MaxPendingBytes = DefaultMaxPendingBytes
	}
	if cfg.MaxPendingPerUser == 0 {
		cfg.MaxPendingPerUser = DefaultMaxPendingPerUser
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
		budget: newBudget(int64(cfg.MaxPending), cfg.MaxPendingBytes, cfg.MaxPendingPerUser),
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
	dropped, err := ob.Restore(func(r store.OutboxRecord) { f.budget.restore(r.User, charge(r.Size)) })
	if err != nil {
		return nil, fmt.Errorf("forward: %w", err)
	}
	f.failed.Store(int64(dropped))
	if cfg.Signer == nil {
		f.log.Warn("no signing secret: forwarded requests are unsigned")
	}
	if dropped > 0 {
		f.log.Error("outbox items from an earlier run were unreadable: dropped", "dropped", dropped)
	}
	if n, bytes := f.budget.counts(); n > 0 {
		f.log.Info("outbox has items from an earlier run", "pending", n, "bytes", bytes)
	}
	return f, nil
}

// Enqueue stores it in the outbox; when it returns nil the item is as
// durable as the store's sync policy makes it, and Run will deliver it.
// Enqueueing an ID that is still queued does nothing and returns nil.
// It returns ErrFull or ErrUserFull when the item would pass a cap, and
// another error when the store cannot take it (a full disk); either way
// nothing is queued.
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
	size := charge(int64(len(it.Body)))
	if err := f.budget.reserve(it.User, size); err != nil {
		if _, ok, lerr := f.ob.Load(it.ID); lerr == nil && ok {
			return nil // already queued: a no-op, even when full
		}
		return err
	}
	rec := store.OutboxRecord{
		ID: it.ID, EventID: it.EventID, URL: it.URL, User: it.User,
		Created: it.Created, Due: now.UnixNano(),
	}
	err := f.ob.Insert(rec, it.Body)
	if err != nil {
		f.budget.release(it.User, size)
		if errors.Is(err, store.ErrExists) {
			return nil
		}
		return fmt.Errorf("forward: enqueue %s: %w", it.ID, err)
	}
	f.poke()
	return nil
}

// Stats returns the current counters.
func (f *Forwarder) Stats() Stats {
	pending, bytes := f.budget.counts()
	return Stats{
		Pending:      pending,
		PendingBytes: bytes,
		Delivered:    f.delivered.Load(),
		Retried:      f.retried.Load(),
		Failed:       f.failed.Load(),
		Gone:         f.gone.Load(),
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
