package cluster

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the broker's figures on /metrics. A node alone registers
// them too (NewMetrics with no Node), so that one dashboard serves both:
// sidecar_broker_up is 1 there, the rest stay 0.
type Metrics struct {
	up         prometheus.Gauge
	published  *prometheus.CounterVec
	received   prometheus.Counter
	dropped    *prometheus.CounterVec
	errors     prometheus.Counter
	reconnects prometheus.Counter
	latency    prometheus.Histogram
	nodes      prometheus.Gauge
	redis      bool
	// The published counter of each kind, looked up once: a publish
	// counts without a label lookup.
	pubUser, pubRoom, pubBroadcast, pubRooms prometheus.Counter
}

// NewMetrics builds the broker's collectors and registers them in reg
// (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		up: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "sidecar", Name: "broker_up",
			Help: "1 when the broker reaches every node it should (always, alone); 0 while Redis is unavailable."}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "sidecar", Name: "broker_published_total",
			Help: "Envelopes published to Redis, by kind: user (a user's channel), room (a room's channel), broadcast (everyone, several rooms, many users), rooms (a room change)."}, []string{"kind"}),
		received: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "sidecar", Name: "broker_received_total",
			Help: "Envelopes received from other nodes and handed to this node's hub."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "sidecar", Name: "broker_dropped_total",
			Help: "Cross-node envelopes dropped, by reason: unavailable (Redis down), queue_full (Redis too slow), error (a publish failed), timeout (a publish timed out: a paused Redis may still run it when it resumes, late), malformed (received, not ours), receive_queue_full (this node's hub too slow for what arrives)."}, []string{"reason"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "sidecar", Name: "broker_errors_total",
			Help: "Redis round trips that failed."}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "sidecar", Name: "broker_reconnects_total",
			Help: "Times the node got Redis back: its first connection after a start without it, and each resubscription."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "sidecar", Name: "broker_latency_seconds",
			Help:    "From publish on one node to delivery to this node's hub (both clocks: meaningful on synchronized hosts).",
			Buckets: []float64{.0001, .00025, .0005, .001, .002, .005, .01, .025, .05, .1, .25, 1}}),
		nodes: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "sidecar", Name: "cluster_nodes",
			Help: "Nodes this node sees heartbeating, itself included (1 alone)."}),
	}
	for _, l := range []string{"user", "room", "broadcast", "rooms"} {
		m.published.WithLabelValues(l)
	}
	for _, l := range []string{"unavailable", "queue_full", "error", "timeout", "malformed", "receive_queue_full"} {
		m.dropped.WithLabelValues(l)
	}
	m.pubUser, m.pubRoom = m.published.WithLabelValues("user"), m.published.WithLabelValues("room")
	m.pubBroadcast, m.pubRooms = m.published.WithLabelValues("broadcast"), m.published.WithLabelValues("rooms")
	m.up.Set(1)
	m.nodes.Set(1)
	if reg != nil {
		for _, c := range []prometheus.Collector{m.up, m.published, m.received, m.dropped, m.errors, m.reconnects, m.latency, m.nodes} {
			reg.MustRegister(c)
		}
	}
	return m
}
