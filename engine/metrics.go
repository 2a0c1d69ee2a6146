package engine

import (
	"strconv"
	"sync/atomic"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// metrics are the engine's Prometheus collectors. The counters of the
// per-recipient path (deliveries, bytes) are per partition and summed when
// scraped, so delivering shares no cache line; the per-message and
// per-event counters (client events, publishes, closes) are shared.
type metrics struct {
	accepted            prometheus.Counter
	refused             prometheus.Counter
	authFailures        prometheus.Counter
	slowConsumers       prometheus.Counter
	rateLimited         prometheus.Counter
	clientEvents        prometheus.Counter
	published           prometheus.Counter
	ruleErrors          *prometheus.CounterVec
	lifecycleFailed     prometheus.Counter
	closes              *prometheus.CounterVec
	webhooks            *prometheus.CounterVec
	unknownEvents       prometheus.Counter
	presence            *prometheus.CounterVec
	presenceStoreErrors prometheus.Counter
	replayed            prometheus.Counter
	replayStoreErrors   prometheus.Counter
	relayed             prometheus.Counter
	relayErrors         prometheus.Counter
	collectors          []prometheus.Collector
}

func newMetrics(e *Engine) *metrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "sidecar", Name: name, Help: help})
	}
	m := &metrics{
		accepted:      counter("connections_accepted_total", "WebSocket connections upgraded."),
		refused:       counter("connections_refused_total", "Handshakes refused by the connection limit or the per-IP rate."),
		authFailures:  counter("auth_failures_total", "Handshakes refused for a missing or invalid token."),
		slowConsumers: counter("slow_consumers_total", "Connections closed with 4008 for a full queue or a write timeout."),
		rateLimited:   counter("client_rate_limited_total", "Connections closed with 4029 for sending too many events."),
		clientEvents:  counter("client_events_total", "Events received from clients."),
		published:     counter("events_published_total", "Events encoded and handed to the hub."),
		ruleErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "sidecar", Name: "rule_errors_total",
			Help: "Rule evaluations that failed at run time and were skipped for that event, by rule and kind (nil, type, budget, timeout, encode, panic, other)."},
			[]string{"rule", "kind"}),
		lifecycleFailed: counter("lifecycle_failed_total", "Lifecycle events whose decisions could not all be kept (a forward that could not be queued)."),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "sidecar", Name: "connections_closed_total",
			Help: "Connections closed, by close code (0: the peer vanished)."}, []string{"code"}),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "sidecar", Name: "webhooks_total",
			Help: "Webhook requests, by answer status."}, []string{"status"}),
		unknownEvents: counter("client_unknown_events_total", "Client events that no rule handles and the engine does not build in, answered unknown_event."),
		presence: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "sidecar", Name: "presence_transitions_total",
			Help: "Users that went online or offline (after the grace delay), by state."}, []string{"state"}),
		presenceStoreErrors: counter("presence_store_errors_total", "Batches of presence sessions the store failed to keep."),
		replayed:            counter("replayed_events_total", "Missed events replayed to reconnecting clients."),
		relayed:             counter("socketio_relayed_total", "Socket.IO requests relayed to the node that owns their polling session (no sticky sessions)."),
		relayErrors:         counter("socketio_relay_errors_total", "Socket.IO requests that could not be relayed to their session's node (answered unknown sid)."),
		replayStoreErrors:   counter("replay_store_errors_total", "Events delivered but not kept for replay because the store failed."),
	}
	sum := func(f func(p *partition) *atomic.Int64) func() float64 {
		return func() float64 { return float64(e.hub.sum(f)) }
	}
	m.collectors = []prometheus.Collector{
		m.accepted, m.refused, m.authFailures, m.slowConsumers, m.rateLimited,
		m.clientEvents, m.published, m.ruleErrors, m.lifecycleFailed, m.closes, m.webhooks,
		m.unknownEvents, m.presence, m.presenceStoreErrors, m.replayed, m.replayStoreErrors, m.relayed, m.relayErrors,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "sidecar", Name: "connections", Help: "Open WebSocket connections."},
			sum(func(p *partition) *atomic.Int64 { return &p.nConns })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "sidecar", Name: "users", Help: "Users with at least one connection on this node."},
			sum(func(p *partition) *atomic.Int64 { return &p.nUsers })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "sidecar", Name: "deliveries_total", Help: "Frames queued to connections."},
			sum(func(p *partition) *atomic.Int64 { return &p.delivered })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "sidecar", Name: "bytes_written_total", Help: "Bytes written to WebSocket connections."},
			sum(func(p *partition) *atomic.Int64 { return &p.bytesOut })),
	}
	if fw := e.cfg.Forwarder; fw != nil {
		m.collectors = append(m.collectors,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "sidecar", Name: "forward_pending", Help: "Requests to the app queued in the outbox."},
				func() float64 { return float64(fw.Stats().Pending) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "sidecar", Name: "forward_pending_bytes", Help: "What the outbox's queued requests count against forward.max_pending_bytes."},
				func() float64 { return float64(fw.Stats().PendingBytes) }))
	}
	return m
}

func (m *metrics) register(r prometheus.Registerer) error {
	for _, c := range m.collectors {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// closed counts a close by its code. A client's close code is echoed, so
// codes outside the ones this server sends or RFC 6455 registers count
// as "other": a client cannot make label values without bound.
func (m *metrics) closed(code ws.StatusCode) {
	label := "other"
	if code == 0 || (code >= 1000 && code <= 1015) || code == CloseTokenExpired || code == CloseSlowConsumer || code == CloseRateLimited {
		label = strconv.Itoa(int(code))
	}
	m.closes.WithLabelValues(label).Inc()
}

func (m *metrics) webhook(status int) {
	m.webhooks.WithLabelValues(strconv.Itoa(status)).Inc()
}

// counterValue reads a counter, for stats.
func counterValue(c prometheus.Counter) float64 {
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		return 0
	}
	return d.GetCounter().GetValue()
}
