// Package engine is the sidecar's runtime: the HTTP surface, the WebSocket
// connections on an epoll loop, the hub that indexes them by user and room,
// and delivery. It asks for decisions through Router and carries them out.
//
// One webhook, end to end: serveWebhook (webhooks.go) verifies it and calls
// process (pipeline.go), which asks the Router, queues forwards, and hands
// each emit to the Broker (broker.go); the local broker gives it to the hub
// (hub.go), which sends it to the partitions owning a recipient
// (partition.go); each one frames it once per protocol (codec.go,
// native.go), appends the same bytes to every recipient's queue and writes
// each queue with one system call (outq.go, transport.go). On the way, a
// message kept for replay is stored in its streams (replay.go).
//
// Presence (presence.go, watch.go) lives in the partitions too: the one
// that owns a user sees their first connection and their last, and keeps
// the grace delay; one presence writer keeps the sessions and runs the
// transitions through the rules.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sidecar/sidecar/engine/auth"
	"github.com/sidecar/sidecar/engine/forward"
	"github.com/sidecar/sidecar/engine/netpoll"
	"github.com/sidecar/sidecar/engine/store"
	"github.com/sidecar/sidecar/engine/webhook"
)

// Close codes of the native protocol beyond RFC 6455's (the contract,
// docs/DESIGN.md section 4).
const (
	CloseTokenExpired ws.StatusCode = 4001
	CloseSlowConsumer ws.StatusCode = 4008
	CloseRateLimited  ws.StatusCode = 4029
)

// WebhookLimits bound the webhook endpoint.
type WebhookLimits struct {
	MaxBodyBytes int64         // over it: 413
	DedupTTL     time.Duration // how long a webhook-id is remembered
	Concurrency  int           // webhooks in the pipeline at once; over it: 429
}

// DefaultWebhookLimits are the webhook limits of config.example.yaml.
func DefaultWebhookLimits() WebhookLimits {
	return WebhookLimits{MaxBodyBytes: 1 << 20, DedupTTL: 24 * time.Hour, Concurrency: 256}
}

// Check reports one readiness condition for /readyz: whether the node can
// serve, and a human-readable detail (shown even when ready).
type Check func() (ready bool, detail string)

// Store is what the engine keeps in the node's store: webhook ids, for
// idempotency, and the store's health for /readyz.
type Store interface {
	MarkSeen(id string, ttl time.Duration) (first bool, err error)
	Unmark(id string) error
	Healthy() error
}

// Outbox queues requests to the app durably and delivers them while Run
// runs (engine/forward).
type Outbox interface {
	Enqueue(ctx context.Context, it forward.Item) error
	Run(ctx context.Context) error
	Stats() forward.Stats
}

// Config is everything the engine needs; main builds it from the file.
type Config struct {
	Logger    *slog.Logger
	Auth      *auth.Verifier
	Router    Router
	Store     Store
	Forwarder Outbox // nil: a forward is an error
	Webhooks  *webhook.Verifier
	// NewBroker builds the broker between the pipeline and the hubs, given
	// this node's hub. Nil: the local broker (one node). A broker that is a
	// UserRouter is told which users are here.
	NewBroker func(local Hub) (Broker, error)
	// ClusterPresence shares presence with the other nodes; nil: none.
	ClusterPresence ClusterPresence
	// ClusterStats is the cluster's part of the stats answer; nil: none.
	ClusterStats func() any
	// Relay finds the node that owns a Socket.IO polling session, to relay
	// its requests there (relay.go); nil: every session is this node's.
	Relay SessionRelay
	// Metrics is where the engine registers its collectors; /metrics
	// serves it. Nil: a private registry.
	Metrics *prometheus.Registry
	Origins []string // allowed Origin values; empty allows all
	// AdminIf decides whether a JWT's claims may use /api/*.
	AdminIf func(claims map[string]any) bool
	APIKeys []string // in clear, or "sha256:<hex>" of the key
	Limits  Limits
	Webhook WebhookLimits
	Checks  map[string]Check
	// Presence configures presence; PresenceStore keeps it (nil: in
	// memory alone).
	Presence      PresenceOptions
	PresenceStore PresenceStore
	// Streams keeps the missed-event streams (nil: no replay; a client
	// asking for one is told recovered: false); Replay says which events.
	Streams      StreamStore
	Replay       ReplayOptions
	SocketIO     SocketIOOptions
	pollLinger   time.Duration // how long an ended polling session waits for its last GET; 0: pollLinger
	DrainTimeout time.Duration // graceful shutdown budget; default 10s
	Partitions   int           // hub partitions; 0: GOMAXPROCS, at most 64
}

// Engine is one sidecar node. Build it with New, run it with Serve.
type Engine struct {
	cfg    Config
	log    *slog.Logger
	limits Limits
	router Router
	broker Broker
	// userRouter is the broker, if it routes by user (nil: it does not).
	userRouter UserRouter
	roomRouter RoomRouter // likewise, by room
	metrics    *metrics
	ruleLog    ruleLog
	started    time.Time
	// runCtx is the context of work that is not a request's: client and
	// lifecycle events, forwards. It ends when Serve has drained them.
	runCtx  context.Context
	stopRun context.CancelFunc

	poller  *netpoll.Poller
	hub     hub
	ready   readyQueue
	pool    rulePool
	fds     fdTable
	ipRate  ipLimiter
	readers sync.Pool // *reader for handshake leftovers

	openFDs atomic.Int64 // conns whose descriptor is still open
	// slots counts the connections admitted whose close event has not run
	// yet; limits.max_connections bounds it.
	slots     atomic.Int64
	nextEvent atomic.Uint64
	stopping  atomic.Bool
	// upgradeMu: upgrades hold it for reading; shutdown takes it for
	// writing, so it waits for those in flight and none starts after.
	upgradeMu sync.RWMutex
	// handshakes are Socket.IO WebSockets waiting for their CONNECT.
	handshakes handshakes
	// polls are the Engine.IO long-polling sessions.
	polls pollSessions
	// preConnect counts the Socket.IO sessions and handshakes waiting for
	// their CONNECT (admitPreConnect).
	preConnect atomic.Int64

	apiKeys      apiKeys
	webhookSlots chan struct{}
	events       eventCounts

	pstore   PresenceStore
	presence presenceWriter
	streams  StreamStore
	keeper   keeper
	// stamper is streams if it stamps ids for a cluster (nil: no); then
	// lastStamp is the newest such id this node has seen, under stampMu.
	stamper   StreamStamper
	stampMu   sync.Mutex
	lastStamp store.StreamID
}

// New checks cfg and builds an engine. Nothing runs until Serve.
func New(cfg Config) (*Engine, error) {
	if cfg.Auth == nil {
		return nil, errors.New("engine: no authenticator")
	}
	if cfg.Router == nil {
		return nil, errors.New("engine: no router")
	}
	if cfg.Store == nil {
		return nil, errors.New("engine: no store")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	if cfg.AdminIf == nil {
		cfg.AdminIf = func(claims map[string]any) bool { return claims["role"] == "admin" }
	}
	dw := DefaultWebhookLimits()
	if cfg.Webhook.MaxBodyBytes <= 0 {
		cfg.Webhook.MaxBodyBytes = dw.MaxBodyBytes
	}
	if cfg.Webhook.DedupTTL <= 0 {
		cfg.Webhook.DedupTTL = dw.DedupTTL
	}
	if cfg.Webhook.Concurrency <= 0 {
		cfg.Webhook.Concurrency = dw.Concurrency
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	cfg.Limits.setDefaults()
	cfg.Presence.setDefaults()
	cfg.SocketIO.setDefaults()
	if cfg.pollLinger <= 0 {
		cfg.pollLinger = pollLinger
	}
	keys, err := parseAPIKeys(cfg.APIKeys)
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	parts := cfg.Partitions
	if parts <= 0 {
		parts = runtime.GOMAXPROCS(0)
	}
	parts = min(parts, 64)
	poller, err := netpoll.New()
	if err != nil {
		return nil, err
	}
	e := &Engine{
		cfg:          cfg,
		log:          cfg.Logger.With("component", "engine"),
		limits:       cfg.Limits,
		router:       cfg.Router,
		started:      time.Now(),
		poller:       poller,
		apiKeys:      keys,
		webhookSlots: make(chan struct{}, cfg.Webhook.Concurrency),
	}
	e.pstore = cfg.PresenceStore
	if e.pstore == nil {
		e.pstore = noPresenceStore{}
	}
	e.streams = cfg.Streams
	e.stamper, _ = cfg.Streams.(StreamStamper)
	e.keeper.opt = cfg.Replay
	e.presence.init(e)
	e.runCtx, e.stopRun = context.WithCancel(context.Background())
	e.hub.stopped = make(chan struct{})
	e.hub.codecs[protoNative] = nativeCodec{}
	e.hub.codecs[protoSocketIO] = sioCodec{}
	e.hub.stamp = e.stamp
	e.hub.sawStamp = e.sawStamp
	for i := 0; i < parts; i++ {
		e.hub.parts = append(e.hub.parts, newPartition(e, i, 8192))
	}
	e.ready.init()
	e.pool.init()
	e.events.init()
	e.ipRate.init(cfg.Limits.ConnectionsPerIPPerSecond)
	e.readers.New = func() any { return e.newReader() }
	e.metrics = newMetrics(e)
	e.ruleLog = ruleLog{log: e.log, errors: e.metrics.ruleErrors}
	if err := e.metrics.register(cfg.Metrics); err != nil {
		poller.Release()
		return nil, err
	}
	e.broker = localBroker{hub: &e.hub}
	if cfg.NewBroker != nil {
		if e.broker, err = cfg.NewBroker(&e.hub); err != nil {
			poller.Release()
			return nil, fmt.Errorf("engine: broker: %w", err)
		}
		e.userRouter, _ = e.broker.(UserRouter)
		e.roomRouter, _ = e.broker.(RoomRouter)
	}
	return e, nil
}

func (e *Engine) newReader() *reader {
	return &reader{e: e, buf: make([]byte, 16<<10)}
}

// Serve runs the node on ln until ctx is done, then shuts down gracefully
// within DrainTimeout, in this order: stop accepting and finish the HTTP
// requests in flight; close every connection with 1001 after flushing what
// was queued for it; stop reading; run every client and connection.close
// event still queued through the rules; stop the forwarder (what it has not
// delivered stays queued in the store); stop the partitions. It returns nil
// after a clean shutdown.
func (e *Engine) Serve(ctx context.Context, ln net.Listener) error {
	defer e.stopRun()
	// net/http reads up to MaxHeaderBytes + 4096 bytes of request head
	// before it answers 431; take the slack off so the limit is the limit.
	maxHeader := max(e.limits.MaxHeaderBytes-4096, 1)
	srv := &http.Server{
		Handler:           e.Handler(),
		ReadHeaderTimeout: e.limits.HandshakeTimeout,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    maxHeader,
		ErrorLog:          slog.NewLogLogger(e.log.Handler(), slog.LevelDebug),
	}
	// Every goroutine below is stopped by the shutdown sequence at the end.
	var parts, readers, rulers sync.WaitGroup
	for _, p := range e.hub.parts {
		parts.Go(func() { p.run(time.Second) })
	}
	for range e.limits.Workers {
		readers.Go(func() {
			r := e.newReader()
			for c := e.ready.pop(); c != nil; c = e.ready.pop() {
				r.readTurn(c)
			}
		})
	}
	for range e.limits.RuleWorkers {
		rulers.Go(e.ruleWorker)
	}
	go e.presence.run() // stopped by handOffPresence
	e.restoreSessions(time.Now())
	pollDone := make(chan error, 1)
	go func() { pollDone <- e.poller.Wait(e.onEvent) }()
	fwdCtx, stopFwd := context.WithCancel(context.WithoutCancel(ctx))
	defer stopFwd()
	var fwd sync.WaitGroup
	if e.cfg.Forwarder != nil {
		fwd.Go(func() {
			if err := e.cfg.Forwarder.Run(fwdCtx); err != nil && !errors.Is(err, context.Canceled) {
				e.log.Error("forwarder stopped", "err", err)
			}
		})
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	e.log.Info("listening", "addr", ln.Addr().String(), "partitions", len(e.hub.parts),
		"read_workers", e.limits.Workers, "rule_workers", e.limits.RuleWorkers)

	var err error
	pollStopped := false
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("http serve: %w", err)
	case err = <-pollDone:
		err = fmt.Errorf("poller: %w", err)
		pollStopped = true
	}

	// 1. Stop accepting, and let HTTP requests in flight finish.
	e.upgradeMu.Lock()
	e.stopping.Store(true)
	e.upgradeMu.Unlock()
	e.handshakes.close()
	e.endPolling() // their waiting GETs return, so that Shutdown need not wait for them
	drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.DrainTimeout)
	defer cancel()
	if serr := srv.Shutdown(drainCtx); serr != nil {
		srv.Close()
	}
	// 2. Close every connection with 1001; their queues flush first.
	open := e.drain(drainCtx)
	e.log.Info("connections closed", "left_open", open)
	e.handOffPresence(latest(drainCtx, time.Now().Add(lifecycleGrace)))
	if !pollStopped {
		e.poller.Close()
		if perr := <-pollDone; err == nil && perr != nil && !errors.Is(perr, netpoll.ErrClosed) {
			err = perr
		}
	}
	// 3. Stop reading. Turns still queued end here.
	for _, c := range e.ready.close() {
		e.endReader(c, 0, "")
	}
	readers.Wait()
	// 4. Run what is queued for the rules: client events and every close
	// event, with a live context, so their forwards are kept. They get
	// what is left of the drain budget, and at least a short grace.
	lifeCtx, cancelLife := context.WithDeadline(context.WithoutCancel(ctx),
		latest(drainCtx, time.Now().Add(lifecycleGrace)))
	left, parked := e.pool.drain(lifeCtx)
	cancelLife()
	rulers.Wait()
	if lifecycle, client := e.abandon(left, parked); lifecycle+client+e.pool.dropped.Load() > 0 {
		e.log.Error("events not run before the drain deadline", "lifecycle_queued", lifecycle,
			"client_queued", client, "after_the_deadline", e.pool.dropped.Load())
	}
	// 5. The forwarder: what it has not delivered stays in the store.
	stopFwd()
	fwd.Wait()
	// 6. The partitions.
	close(e.hub.stopped)
	for _, p := range e.hub.parts {
		p.jobs <- job{kind: jobStop}
	}
	parts.Wait()
	// Nothing runs now. Conns still open past the drain deadline (a peer
	// that never answered, a reader that never finished) are torn down here
	// so that an embedding program does not leak their descriptors. Their
	// close events ran in step 4: each left the index in step 2.
	if left := e.fds.closeAll(); len(left) > 0 {
		e.openFDs.Add(-int64(len(left)))
		e.log.Warn("descriptors closed after the drain deadline", "count", len(left))
	}
	e.poller.Release()
	return err
}

// lifecycleGrace is the least time shutdown gives queued lifecycle events.
const lifecycleGrace = 2 * time.Second

func latest(ctx context.Context, t time.Time) time.Time {
	if d, ok := ctx.Deadline(); ok && d.After(t) {
		return d
	}
	return t
}

// abandon ends what the rule pool could not run before its deadline: the
// read turns it held. It counts the events left in the queue: lifecycle
// ones, and client ones (their acks are not sent). What was stopped midway
// or submitted after the deadline is in pool.dropped.
func (e *Engine) abandon(left []ruleTask, parked []*conn) (lifecycle, client int64) {
	for _, t := range left {
		if t.ev != nil {
			lifecycle++
			continue
		}
		client += t.count()
		e.endReader(t.c, 0, "") // submits its close event: counted as dropped below
	}
	for _, c := range parked {
		e.endReader(c, 0, "")
	}
	return lifecycle, client
}

// drain closes every connection with 1001 and waits, until ctx is done, for
// their descriptors to close. It returns how many were still open.
func (e *Engine) drain(ctx context.Context) int64 {
	done := make(chan struct{}, len(e.hub.parts))
	for _, p := range e.hub.parts {
		p.jobs <- job{kind: jobDrain, done: done}
	}
	for range e.hub.parts {
		<-done
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for e.openFDs.Load() > 0 {
		select {
		case <-ctx.Done():
			return e.openFDs.Load()
		case <-t.C:
		}
	}
	return 0
}

// onEvent runs on the poller goroutine for every readiness event. It never
// blocks: a readable conn joins the ready queue (unbounded, one entry per
// conn at most), a writable one posts to its owner's mailbox.
func (e *Engine) onEvent(fd int, ev netpoll.Event) {
	c := e.fds.get(fd)
	if c == nil {
		return
	}
	if ev&netpoll.Hangup != 0 {
		c.hup.Store(true) // before the turn: the reader must read to EOF
	}
	if ev&(netpoll.Readable|netpoll.Hangup) != 0 && c.schedule() {
		c.readyAt = time.Now().UnixNano()
		if !e.ready.push(c) {
			e.endReader(c, 0, "")
		}
	}
	if ev&netpoll.Writable != 0 && c.wantOut.Load() {
		c.post(mailFlush)
	}
}

// newEventID returns a node-unique, increasing id: unix millis and a
// sequence number, the shape of a Redis stream id.
func (e *Engine) newEventID() string {
	return e.idAt(time.Now().UnixMilli())
}

func (e *Engine) idAt(ms int64) string {
	seq := e.nextEvent.Add(1)
	b := make([]byte, 0, 24)
	b = strconv.AppendInt(b, ms, 10)
	b = append(b, '-')
	b = strconv.AppendUint(b, seq, 10)
	return string(b)
}

// Publish sends event name with data (any JSON-able value, or
// json.RawMessage) to the targets, without rules. The data is encoded once
// here and framed once per protocol by the hub. With wait, it returns after
// this node's hub has queued it, with the number of connections it reached;
// without, delivered is 0.
func (e *Engine) Publish(name string, data any, to Target, wait bool) (id string, delivered int, err error) {
	p, err := encodeData(data)
	if err != nil {
		return "", 0, fmt.Errorf("encode %s data: %w", name, err)
	}
	m := &Message{Event: name, Data: p, To: to}
	delivered, err = e.publish(context.Background(), m, wait)
	return m.ID, delivered, err
}

// publish counts m and hands it to the broker.
func (e *Engine) publish(ctx context.Context, m *Message, wait bool) (int, error) {
	e.events.add(m.Event)
	e.metrics.published.Inc()
	return e.broker.Publish(ctx, m, wait)
}

// ErrStopped is returned by Publish once the node has stopped.
var ErrStopped = errors.New("engine: stopped")
