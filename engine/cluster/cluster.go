// Package cluster joins sidecar nodes through Redis: what one node
// publishes reaches the recipients on every node, presence is the
// cluster's, and webhook ids are remembered cluster-wide.
//
// A Node is this process's membership. It owns one rueidis client and four
// goroutines, all started by Run and stopped when its context ends:
//
//   - the publisher drains the bounded queue of envelopes this node sends
//     (Publish never waits for Redis: a full queue, or Redis down, drops
//     the cross-node copy and counts it; local delivery goes on);
//   - the subscriber holds one dedicated connection with the node's
//     subscriptions and hands what arrives to the local hub;
//   - the monitor pings Redis, heartbeats, re-establishes presence after an
//     outage and ends the sessions of nodes that stopped heartbeating;
//   - the connector, while Redis is unreachable at start, retries it.
//
// Channels (sharded pub/sub, SPUBLISH and SSUBSCRIBE, Redis 7.0 or later):
// "{<prefix>}:u:<user>" carries events to a few users, which only the
// nodes holding that user subscribe to; "{<prefix>}:r:<room>" events to one
// room, which only the nodes with a member of it subscribe to (a presence
// event, to its user's watchers, is one); and "{<prefix>}:b" everything
// else (everyone, several rooms, many users), which every node receives. The hash tag puts every channel in
// one slot, so that in a Redis Cluster what one node publishes reaches the
// others in the order it was published.
//
// Keys (one slot each, so a Redis Cluster spreads them):
//
//	<prefix>:node:<id>   this node's heartbeat, expiring after node_timeout
//	<prefix>:nodes       the set of node ids
//	<prefix>:nu:<id>     the set of users with a session on node id
//	<prefix>:pu:<user>   the set of nodes where user has a session
//	<prefix>:us:<user>   hash: s status, l last seen (unix ms)
//	<prefix>:seen:<id>   a webhook id, for the webhook dedup TTL
//	<prefix>:sweep:<id>  the claim of the node ending a dead node's sessions
//	<prefix>:tok:<token> the advertised address of the node whose polling session ids start with token (relay.go)
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"

	"github.com/sidecar/sidecar/engine"
)

// Options configure a Node.
type Options struct {
	URL    string // redis:// or rediss://; a Redis Cluster is discovered
	NodeID string // this node's id; empty: host-pid-random
	Prefix string // of keys and channels; default "sidecar"
	// Required makes New fail when Redis cannot be reached; otherwise the
	// node starts alone, degraded, and joins when Redis answers.
	Required bool
	// Heartbeat is how often the node heartbeats; default 1s.
	Heartbeat time.Duration
	// NodeTimeout is how long a silent node is still alive; past it, its
	// users go offline. Default 5s.
	NodeTimeout time.Duration
	// PublishQueue bounds the envelopes waiting for Redis; default 10000.
	PublishQueue int
	// Timeout bounds one Redis round trip; default 1s.
	Timeout time.Duration
	// Advertise is the base URL ("http://10.0.0.5:8080") at which the other
	// nodes reach this one, to relay the requests of the Socket.IO polling
	// sessions it owns. Empty: none are relayed.
	Advertise string
	Logger    *slog.Logger
	Metrics   prometheus.Registerer // nil: not registered
}

// Defaults are the options a zero field stands for (NodeID aside: it is
// made at start).
func Defaults() Options {
	return Options{Prefix: "sidecar", Heartbeat: time.Second, NodeTimeout: 5 * time.Second, PublishQueue: 10000, Timeout: time.Second}
}

func (o *Options) setDefaults() {
	d := Defaults()
	if o.Prefix == "" {
		o.Prefix = d.Prefix
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = d.Heartbeat
	}
	if o.NodeTimeout <= 0 {
		o.NodeTimeout = d.NodeTimeout
	}
	if o.PublishQueue <= 0 {
		o.PublishQueue = d.PublishQueue
	}
	if o.Timeout <= 0 {
		o.Timeout = d.Timeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.NodeID == "" {
		o.NodeID = newNodeID()
	}
}

func newNodeID() string {
	host, _ := os.Hostname()
	var b [4]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// Teller is what the node tells the engine: presence transitions the
// cluster decided. *engine.Engine implements it.
type Teller interface {
	TellPresence(user string, online bool, at time.Time)
	// InPresenceOrder runs fn on the presence writer, in order with the
	// node's own changes, and waits; false if the writer has stopped.
	InPresenceOrder(fn func()) bool
	// Counts are the node's connections and users, for its heartbeat.
	Counts() (connections, users int64)
}

// Node is this process in the cluster. Build it with New, attach it to the
// engine (Broker, Presence, Store, PresenceStore), and run it with Run.
type Node struct {
	opt Options
	log *slog.Logger
	id  string
	m   *Metrics

	client    atomic.Pointer[rueidis.Client] // nil until Redis first answers
	up        atomic.Bool                    // the last round trip worked
	upChanged chan struct{}                  // signalled when up turns true

	hub    engine.Hub // set by Broker
	teller Teller     // set by Run

	// The publisher's queue (publish.go).
	pubMu   sync.Mutex
	pubQ    []outgoing
	pubWake chan struct{}

	// The subscriptions wanted: the channels of the users with a
	// connection here and of the rooms with a member here, and the users
	// with a session here as Apply last heard them, to re-establish
	// presence after an outage (subscribe.go). The pending sets are those
	// whose channel changed since the subscriber last looked.
	subMu        sync.Mutex
	users        map[string]uint8    // user: chWanted, chSubscribed, userSession (subscribe.go)
	roomSubs     map[string]uint8    // room: chWanted, chSubscribed
	pendingUsers map[string]struct{} // users whose channel's wanted state changed
	pendingRooms map[string]struct{}
	rooms        map[string]uint64 // room: the partitions with a member (a bit each)
	subWake      chan struct{}

	resync atomic.Bool // presence must be told again to Redis (presence.go)
	// epochDue: the replay epoch is to be checked (at start, and after
	// an outage: a Redis that restarted may have lost the streams).
	epochDue atomic.Bool

	chBroadcast string
	chUser      string // prefix of the per-user channels
	chRoom      string // prefix of the per-room channels

	relay relay // relay.go

	// recv queues what arrives from the other nodes for the hub, so that a
	// busy hub never stalls the subscriber connection (subscribe.go).
	recv chan *envelope

	// statuses set while Redis was unavailable, told it when it is back.
	stMu     sync.Mutex
	statuses map[string]string
}

// New builds a node and connects to Redis. With opt.Required, a Redis that
// does not answer within opt.Timeout (a few tries) is an error; without,
// the node starts alone and keeps trying.
func New(opt Options) (*Node, error) {
	opt.setDefaults()
	if strings.ContainsAny(opt.Prefix, "{}") {
		return nil, fmt.Errorf("cluster: prefix %q: no braces", opt.Prefix)
	}
	n := &Node{
		opt:          opt,
		log:          opt.Logger.With("component", "cluster", "node", opt.NodeID),
		id:           opt.NodeID,
		upChanged:    make(chan struct{}, 1),
		pubWake:      make(chan struct{}, 1),
		users:        make(map[string]uint8),
		roomSubs:     make(map[string]uint8),
		pendingUsers: make(map[string]struct{}),
		pendingRooms: make(map[string]struct{}),
		subWake:      make(chan struct{}, 1),
		chBroadcast:  "{" + opt.Prefix + "}:b",
		chUser:       "{" + opt.Prefix + "}:u:",
		relay:        relay{token: newToken()},
		recv:         make(chan *envelope, recvQueue),
		rooms:        make(map[string]uint64),
		chRoom:       "{" + opt.Prefix + "}:r:",
	}
	n.epochDue.Store(true)
	n.m = NewMetrics(opt.Metrics)
	n.m.redis = true
	if _, err := rueidis.ParseURL(opt.URL); err != nil {
		return nil, fmt.Errorf("cluster: broker.redis_url: %w", err)
	}
	err := n.connect()
	if err != nil && opt.Required {
		return nil, fmt.Errorf("cluster: redis unreachable and broker.on_unavailable is refuse: %w", err)
	}
	if err != nil {
		n.log.Error("REDIS UNREACHABLE: this node starts alone (degraded) and joins the cluster when Redis answers; cross-node delivery and cluster presence wait until then", "err", err)
	}
	return n, nil
}

// ID is this node's id in the cluster.
func (n *Node) ID() string { return n.id }

// connect builds the client, once: rueidis reconnects by itself after.
func (n *Node) connect() error {
	opt, err := rueidis.ParseURL(n.opt.URL)
	if err != nil {
		return err
	}
	opt.DisableCache = true // client-side caching: not used, and needs RESP3 tracking
	// KeepAlive is also the gap of rueidis's own pings, which find a dead
	// connection (a host gone without a reset): a heartbeat.
	opt.Dialer = net.Dialer{Timeout: n.opt.Timeout, KeepAlive: n.opt.Heartbeat}
	opt.ConnWriteTimeout = 2 * n.opt.Timeout
	opt.ClientName = "sidecar:" + n.id
	// rueidis's defaults (0.5 MiB read and write buffers and a ring of
	// 1,024 per connection) are sized for heavy pipelines; a node's
	// traffic to Redis is a few commands per event, and those buffers
	// would cost as much as 5,000 idle connections.
	opt.ReadBufferEachConn = 64 << 10
	opt.WriteBufferEachConn = 64 << 10
	opt.RingScaleEachConn = 8
	c, err := rueidis.NewClient(opt)
	if err != nil {
		return err
	}
	n.client.Store(&c)
	n.setUp(true)
	n.log.Info("connected to redis", "nodes", len(c.Nodes()))
	return nil
}

// redis is the client, or nil while Redis has never answered.
func (n *Node) redis() rueidis.Client {
	if p := n.client.Load(); p != nil {
		return *p
	}
	return nil
}

// usable is the client if Redis is believed up: callers on a hot path do
// not wait for a Redis known to be down.
func (n *Node) usable() (rueidis.Client, bool) {
	c := n.redis()
	return c, c != nil && n.up.Load()
}

var errDown = errors.New("cluster: redis unavailable")

// setUp records whether Redis answers, and logs and counts the change.
func (n *Node) setUp(up bool) {
	if n.up.Swap(up) == up {
		return
	}
	if up {
		n.m.up.Set(1)
		select {
		case n.upChanged <- struct{}{}:
		default:
		}
		return
	}
	n.m.up.Set(0)
	n.resync.Store(true)
	n.epochDue.Store(true)
	n.log.Error("REDIS UNAVAILABLE: local delivery goes on; cross-node messages are dropped and counted until it is back")
}

// failed records an error of a Redis round trip. A broken connection
// marks Redis down at once; a timeout does not (a slow Redis is not a dead
// one: the heartbeat's ping decides).
func (n *Node) failed(err error) {
	if err == nil {
		return
	}
	n.m.errors.Inc()
	if rueidis.IsRedisNil(err) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return
	}
	if _, isRedisErr := rueidis.IsRedisErr(err); !isRedisErr {
		n.setUp(false) // the connection, not the command
	}
}

// Run runs the node's goroutines until ctx ends, then leaves the cluster:
// its heartbeat is left to expire after grace, so that its users, unless
// they reconnect to another node within it, go offline on the others.
func (n *Node) Run(ctx context.Context, t Teller, grace time.Duration) {
	n.teller = t
	var wg sync.WaitGroup
	wg.Go(func() { n.runConnector(ctx) })
	wg.Go(func() { n.runPublisher(ctx) })
	wg.Go(func() { n.runSubscriber(ctx) })
	wg.Go(func() { n.runHeartbeat(ctx) })
	wg.Go(func() { n.runMonitor(ctx) })
	wg.Go(func() { n.runDeliverer(ctx) })
	wg.Wait()
	n.leave(grace)
	if c := n.redis(); c != nil {
		c.Close()
	}
}

// runConnector retries Redis while it has never answered.
func (n *Node) runConnector(ctx context.Context) {
	delay := 250 * time.Millisecond
	for n.redis() == nil {
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		if err := n.connect(); err != nil {
			n.m.errors.Inc()
			delay = min(2*delay, 2*time.Second)
			continue
		}
		n.m.reconnects.Inc()
	}
}

// ctx bounds one round trip.
func (n *Node) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), n.opt.Timeout)
}

func (n *Node) key(parts ...string) string {
	return n.opt.Prefix + ":" + strings.Join(parts, ":")
}

// Check is the node's readiness detail for /readyz: ready either way (a node
// alone still serves its own connections), and "degraded" while Redis is
// unavailable.
func (n *Node) Check() (bool, string) {
	if n.up.Load() {
		return true, "redis: connected, node " + n.id
	}
	return true, "degraded: redis unavailable; this node serves alone (cross-node delivery and cluster presence paused)"
}
