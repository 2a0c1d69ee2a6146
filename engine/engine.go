// Package engine is the sidecar's runtime: the HTTP surface, the WebSocket
// connections on an epoll loop, the hub that indexes them by user and room,
// and delivery. It asks for decisions through Router and applies them.
package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/sidecar/sidecar/engine/auth"
	"github.com/sidecar/sidecar/engine/forward"
	"github.com/sidecar/sidecar/engine/netpoll"
	"github.com/sidecar/sidecar/engine/store"
	"github.com/sidecar/sidecar/engine/webhook"
)

// Close codes of the native protocol beyond RFC 6455's (DESIGN.md section 4).
const (
	CloseTokenExpired ws.StatusCode = 4001
	CloseSlowConsumer ws.StatusCode = 4008
	CloseRateLimited  ws.StatusCode = 4029
	CloseOverloaded   ws.StatusCode = 1013
)

// Limits bound what one node accepts. Zero values take the defaults of
// DESIGN.md section 5.
type Limits struct {
	MaxConnections            int
	MaxMessageBytes           int
	OutboundQueueBytes        int
	WriteTimeout              time.Duration
	HandshakeTimeout          time.Duration
	PingInterval              time.Duration
	IdleTimeout               time.Duration
	ClientEventsPerSecond     int // 0: unlimited
	ConnectionsPerIPPerSecond int // 0: unlimited
	Workers                   int // read workers; 0: 4 × GOMAXPROCS
	MaxHeaderBytes            int // HTTP request headers; over it: 431
}

func (l *Limits) setDefaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxConnections, 100000)
	def(&l.MaxMessageBytes, 65536)
	def(&l.OutboundQueueBytes, 1<<20)
	def(&l.Workers, 4*runtime.GOMAXPROCS(0))
	def(&l.MaxHeaderBytes, 16<<10)
	defd(&l.WriteTimeout, 5*time.Second)
	defd(&l.HandshakeTimeout, 10*time.Second)
	defd(&l.PingInterval, 25*time.Second)
	defd(&l.IdleTimeout, 60*time.Second)
}

// WebhookLimits bound the webhook endpoint.
type WebhookLimits struct {
	MaxBodyBytes int64         // over it: 413
	DedupTTL     time.Duration // how long a webhook-id is remembered
	Concurrency  int           // webhooks in the pipeline at once; over it: 429
}

// Check reports one readiness condition for /readyz: whether the node can
// serve, and a human-readable detail (shown even when ready).
type Check func() (ready bool, detail string)

// Config is everything the engine needs; main builds it from the file.
type Config struct {
	Logger    *slog.Logger
	Auth      *auth.Verifier
	Router    Router
	Store     *store.Store
	Forwarder *forward.Forwarder
	Webhooks  *webhook.Verifier
	// Metrics is where the engine registers its collectors; /metrics
	// serves it. Nil: a private registry.
	Metrics *prometheus.Registry
	Origins []string // allowed Origin values; empty allows all
	// AdminIf decides whether a JWT's claims may use /api/*.
	AdminIf      func(claims map[string]any) bool
	APIKeys      []string
	Limits       Limits
	Webhook      WebhookLimits
	Checks       map[string]Check
	DrainTimeout time.Duration // graceful shutdown budget; default 10s
}

// Engine is one sidecar node. Build it with New, run it with Serve.
type Engine struct {
	cfg     Config
	log     *slog.Logger
	limits  Limits
	router  Router
	metrics *metrics
	started time.Time

	poller  *netpoll.Poller
	parts   []*partition
	readq   chan *conn
	fds     fdTable
	life    eventQueue
	ipRate  ipLimiter
	readers sync.Pool // *reader for handshake leftovers

	openFDs   atomic.Int64 // conns whose descriptor is still open
	nextConn  atomic.Uint64
	nextEvent atomic.Uint64
	stopping  atomic.Bool
	// upgradeMu: upgrades hold it for reading; shutdown takes it for
	// writing, so it waits for those in flight and none starts after.
	upgradeMu sync.RWMutex
	// stopped is closed when the partitions stop: whoever would still send
	// them a job, or wait on one, gives up instead of blocking forever.
	stopped chan struct{}

	webhookSlots chan struct{}
	events       eventCounts
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
	if cfg.Webhook.MaxBodyBytes <= 0 {
		cfg.Webhook.MaxBodyBytes = 1 << 20
	}
	if cfg.Webhook.DedupTTL <= 0 {
		cfg.Webhook.DedupTTL = 24 * time.Hour
	}
	if cfg.Webhook.Concurrency <= 0 {
		cfg.Webhook.Concurrency = 256
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	cfg.Limits.setDefaults()
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
		readq:        make(chan *conn, 4096),
		stopped:      make(chan struct{}),
		webhookSlots: make(chan struct{}, cfg.Webhook.Concurrency),
	}
	e.life.init(2*cfg.Limits.MaxConnections+1024, func() { e.metrics.lifecycleDropped.Inc() })
	e.events.init()
	e.ipRate.init(cfg.Limits.ConnectionsPerIPPerSecond)
	n := runtime.GOMAXPROCS(0)
	if n > 64 {
		n = 64
	}
	for i := 0; i < n; i++ {
		e.parts = append(e.parts, newPartition(e, i, 8192))
	}
	e.readers.New = func() any { return e.newReader() }
	e.metrics = newMetrics(e)
	if err := e.metrics.register(cfg.Metrics); err != nil {
		poller.Release()
		return nil, err
	}
	return e, nil
}

func (e *Engine) newReader() *reader {
	return &reader{e: e, buf: make([]byte, 16<<10)}
}

// Serve runs the node on ln until ctx is done, then shuts down gracefully:
// stop accepting, close every connection with 1001 after flushing what was
// queued for it, within DrainTimeout. It returns nil after a clean
// shutdown.
func (e *Engine) Serve(ctx context.Context, ln net.Listener) error {
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
	var wg sync.WaitGroup
	// Each goroutine below is stopped by the shutdown sequence at the end.
	for _, p := range e.parts {
		wg.Add(1)
		go func() { defer wg.Done(); p.run(time.Second) }()
	}
	var readers sync.WaitGroup
	for i := 0; i < e.limits.Workers; i++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			r := e.newReader()
			for c := range e.readq {
				if c == nil { // Serve's stop signal
					return
				}
				r.readTurn(c)
			}
		}()
	}
	pollDone := make(chan error, 1)
	go func() { pollDone <- e.poller.Wait(e.onEvent) }()
	lifeCtx, stopLife := context.WithCancel(context.WithoutCancel(ctx))
	wg.Add(1)
	go func() { defer wg.Done(); e.life.run(lifeCtx, e.processLifecycle) }()
	if e.cfg.Forwarder != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.cfg.Forwarder.Run(lifeCtx); err != nil && !errors.Is(err, context.Canceled) {
				e.log.Error("forwarder stopped", "err", err)
			}
		}()
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	e.log.Info("listening", "addr", ln.Addr().String(), "partitions", len(e.parts), "workers", e.limits.Workers)

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

	// Shutdown: stop accepting and let HTTP requests in flight finish.
	e.upgradeMu.Lock()
	e.stopping.Store(true)
	e.upgradeMu.Unlock()
	drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.DrainTimeout)
	defer cancel()
	if serr := srv.Shutdown(drainCtx); serr != nil {
		srv.Close()
	}
	// Close every connection with 1001; their queues flush first.
	open := e.drain(drainCtx)
	e.log.Info("connections closed", "left_open", open)
	stopLife()
	if !pollStopped {
		e.poller.Close()
		if perr := <-pollDone; err == nil && perr != nil && !errors.Is(perr, netpoll.ErrClosed) {
			err = perr
		}
	}
	// Stop the read workers with one nil each. The queue is never closed:
	// a worker still in a turn may pass it on with requeue, and a send on a
	// closed channel panics.
	for i := 0; i < e.limits.Workers; i++ {
		e.readq <- nil
	}
	readers.Wait()
	close(e.stopped)
	for _, p := range e.parts {
		p.jobs <- job{kind: jobStop}
	}
	wg.Wait()
	// Nothing runs now. Conns still open past the drain deadline (a peer
	// that never answered, a reader that never finished) are torn down here
	// so that an embedding program does not leak their descriptors.
	if n := e.fds.closeAll(); n > 0 {
		e.openFDs.Add(-int64(n))
		e.log.Warn("descriptors closed after the drain deadline", "count", n)
	}
	e.poller.Release()
	return err
}

// drain closes every connection with 1001 and waits, until ctx is done, for
// their descriptors to close. It returns how many were still open.
func (e *Engine) drain(ctx context.Context) int64 {
	done := make(chan int, len(e.parts))
	for _, p := range e.parts {
		p.jobs <- job{kind: jobDrain, done: done}
	}
	for range e.parts {
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

// onEvent runs on the poller goroutine for every readiness event.
func (e *Engine) onEvent(fd int, ev netpoll.Event) {
	c := e.fds.get(fd)
	if c == nil {
		return
	}
	if ev&netpoll.Hangup != 0 {
		c.hup.Store(true) // before the turn: the reader must read to EOF
	}
	if ev&(netpoll.Readable|netpoll.Hangup) != 0 && c.schedule() {
		e.readq <- c
	}
	if ev&netpoll.Writable != 0 && c.wantOut.Load() {
		c.part.jobs <- job{kind: jobFlush, c: c}
	}
}

// requeue passes c's read turn to the back of the queue, if there is room.
func (e *Engine) requeue(c *conn) bool {
	select {
	case e.readq <- c:
		return true
	default:
		return false
	}
}

// sendTo queues frame for c alone, through its owner.
func (e *Engine) sendTo(c *conn, frame []byte) {
	c.part.jobs <- job{kind: jobSend, c: c, frame: frame}
}

// closeConn asks c's owner to close it with code.
func (e *Engine) closeConn(c *conn, code ws.StatusCode, reason string) {
	c.part.jobs <- job{kind: jobClose, c: c, code: code, reason: reason}
}

// readerGone tells c's owner that the reader side ended.
func (e *Engine) readerGone(c *conn, code ws.StatusCode, reason string) {
	c.part.jobs <- job{kind: jobReaderGone, c: c, code: code, reason: reason}
}

// connClosed runs on the owner when c leaves the index.
func (e *Engine) connClosed(c *conn, code ws.StatusCode) {
	e.metrics.closed(code)
	e.life.push(&Event{
		ID:     e.newEventID(),
		Type:   "connection.close",
		Source: SourceLifecycle,
		Time:   time.Now(),
		Sender: c.identity(),
		Data:   map[string]any{"code": float64(code)},
	})
}

// partFor is the partition that owns user's connections.
func (e *Engine) partFor(user string) *partition {
	if len(e.parts) == 1 {
		return e.parts[0]
	}
	h := fnv.New32a()
	h.Write([]byte(user))
	return e.parts[h.Sum32()%uint32(len(e.parts))]
}

// newEventID returns a node-unique, increasing id: unix millis and a
// sequence number, the shape of a Redis stream id.
func (e *Engine) newEventID() string {
	seq := e.nextEvent.Add(1)
	b := make([]byte, 0, 24)
	b = strconv.AppendInt(b, time.Now().UnixMilli(), 10)
	b = append(b, '-')
	b = strconv.AppendUint(b, seq, 10)
	return string(b)
}

// Publish sends event name with data (any JSON-able value, or
// json.RawMessage) to the targets. The frame is encoded once. With wait, it
// returns after every partition has queued it, with the number of
// connections it reached; without, delivered is 0.
func (e *Engine) Publish(name string, data any, to Target, wait bool) (id string, delivered int, err error) {
	var payload []byte
	switch d := data.(type) {
	case json.RawMessage:
		payload = d
	case nil:
		payload = []byte("null")
	default:
		if payload, err = json.Marshal(d); err != nil {
			return "", 0, fmt.Errorf("encode %s data: %w", name, err)
		}
	}
	if !utf8.Valid(payload) {
		return "", 0, fmt.Errorf("%s data is not valid UTF-8", name)
	}
	id = e.newEventID()
	d := &delivery{frame: nativeFrame(name, payload, id), to: to}
	e.events.add(name)
	e.metrics.published.Inc()
	if to.Empty() {
		return id, 0, nil
	}
	var mask uint64
	if to.All || len(to.Rooms) > 0 {
		mask = 1<<uint(len(e.parts)) - 1
	} else {
		for _, u := range to.Users {
			mask |= 1 << uint(e.partFor(u).id)
		}
	}
	if wait {
		d.done = make(chan struct{})
		for i := range e.parts {
			if mask&(1<<uint(i)) != 0 {
				d.pending.Add(1)
			}
		}
	}
	for i, p := range e.parts {
		if mask&(1<<uint(i)) != 0 && !e.send(p, job{kind: jobDeliver, d: d}) {
			return id, 0, ErrStopped
		}
	}
	if wait {
		select {
		case <-d.done:
		case <-e.stopped:
			return id, 0, ErrStopped
		}
		return id, int(d.delivered.Load()), nil
	}
	return id, 0, nil
}

// ErrStopped is returned by Publish once the node has stopped.
var ErrStopped = errors.New("engine: stopped")

// send hands j to p, or gives up if the partitions have stopped. Paths that
// may run after shutdown began (HTTP handlers, the pipeline) use it; the
// poller and the read workers stop before the partitions and send directly.
func (e *Engine) send(p *partition, j job) bool {
	select {
	case p.jobs <- j:
		return true
	case <-e.stopped:
		return false
	}
}

// Stats is the node's state for /api/socket-test/stats.
type Stats struct {
	Connections   int64            `json:"connections"`
	Users         int64            `json:"users"`
	UptimeSeconds int64            `json:"uptime_seconds"`
	Events        map[string]int64 `json:"events"`
	Delivered     int64            `json:"delivered"`
	SlowConsumers int64            `json:"slow_consumers"`
	Forward       *forward.Stats   `json:"forward,omitempty"`
}

// Stats returns the node's counters now.
func (e *Engine) Stats() Stats {
	s := Stats{
		UptimeSeconds: int64(time.Since(e.started).Seconds()),
		Events:        e.events.snapshot(),
		SlowConsumers: int64(counterValue(e.metrics.slowConsumers)),
	}
	for _, p := range e.parts {
		s.Connections += p.nConns.Load()
		s.Users += p.nUsers.Load()
		s.Delivered += p.delivered.Load()
	}
	if e.cfg.Forwarder != nil {
		fs := e.cfg.Forwarder.Stats()
		s.Forward = &fs
	}
	return s
}

// fdTable maps a descriptor to its conn for the poller.
type fdTable struct {
	mu    sync.RWMutex
	conns []*conn // guarded by mu
}

func (t *fdTable) get(fd int) *conn {
	t.mu.RLock()
	var c *conn
	if fd < len(t.conns) {
		c = t.conns[fd]
	}
	t.mu.RUnlock()
	return c
}

func (t *fdTable) set(fd int, c *conn) {
	t.mu.Lock()
	if fd >= len(t.conns) {
		n := 2 * len(t.conns)
		if n <= fd {
			n = fd + 1024
		}
		grown := make([]*conn, n)
		copy(grown, t.conns)
		t.conns = grown
	}
	t.conns[fd] = c
	t.mu.Unlock()
}

// closeAll closes every descriptor still in the table and returns how
// many; only for the end of Serve, when nothing else runs.
func (t *fdTable) closeAll() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for fd, c := range t.conns {
		if c != nil {
			unix.Close(fd)
			t.conns[fd] = nil
			n++
		}
	}
	return n
}

// remove clears fd's slot if it still holds c; the descriptor is closed
// right after, and only then may the number be reused.
func (t *fdTable) remove(fd int, c *conn) {
	t.mu.Lock()
	if fd < len(t.conns) && t.conns[fd] == c {
		t.conns[fd] = nil
	}
	t.mu.Unlock()
}

// eventCounts counts published events by name, for stats. Names come from
// rules and API callers; past maxEventNames the rest count as "other".
type eventCounts struct {
	mu sync.Mutex
	m  map[string]int64 // guarded by mu
}

const maxEventNames = 1000

func (c *eventCounts) init() { c.m = make(map[string]int64) }

func (c *eventCounts) add(name string) {
	c.mu.Lock()
	if _, ok := c.m[name]; !ok && len(c.m) >= maxEventNames {
		name = "other"
	}
	c.m[name]++
	c.mu.Unlock()
}

func (c *eventCounts) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string]int64, len(c.m))
	for k, v := range c.m {
		m[k] = v
	}
	return m
}
