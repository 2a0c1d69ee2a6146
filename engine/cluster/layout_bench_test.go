package cluster

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sidecar/sidecar/engine"
	"github.com/sidecar/sidecar/internal/redistest"
)

// countHub counts what a node's hub is handed.
type countHub struct{ n atomic.Int64 }

func (h *countHub) Deliver(m *engine.Message, wait bool) (int, error) { h.n.Add(1); return 0, nil }
func (h *countHub) Rooms(string, bool, []string) error                { return nil }

func cpuNow() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func redisCPU(b *testing.B, r *redistest.Server) time.Duration {
	out, err := r.Do("INFO", "cpu")
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, l := range strings.Split(out, "\n") {
		for _, k := range []string{"used_cpu_sys:", "used_cpu_user:"} {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), k); ok {
				f, _ := strconv.ParseFloat(v, 64)
				total += f
			}
		}
	}
	return time.Duration(total * float64(time.Second))
}

// BenchmarkLayout decides the channel layout: events to one user, whose
// connections are on one of three nodes, published by another, by that
// user's channel (only the node holding the user receives it) or by the
// one broadcast channel (every node receives it and finds no recipient on
// two of them). It reports, per event, the CPU of the three nodes and of
// Redis. Run: go test -run XXX -bench Layout -benchtime 20000x ./engine/cluster
func BenchmarkLayout(b *testing.B) {
	for _, tc := range []struct {
		name string
		max  int
	}{{"per-user", 8}, {"broadcast", 0}} {
		b.Run(tc.name, func(b *testing.B) {
			defer func(old int) { maxUserChannels = old }(maxUserChannels)
			maxUserChannels = tc.max
			r := redistest.Start(b)
			var hubs [3]*countHub
			var brokers [3]engine.Broker
			for i := range 3 {
				n, err := New(Options{URL: r.URL(), NodeID: fmt.Sprint("n", i), PublishQueue: 1 << 20})
				if err != nil {
					b.Fatal(err)
				}
				hubs[i] = &countHub{}
				brokers[i], _ = n.Broker(hubs[i])
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { defer close(done); n.Run(ctx, nopTeller{}, 0) }()
				b.Cleanup(func() { cancel(); <-done })
			}
			// 1,000 users on each of nodes 1 and 2.
			for i := range 2000 {
				brokers[1+i%2].(engine.UserRouter).Here("u"+strconv.Itoa(i), true)
			}
			time.Sleep(500 * time.Millisecond)
			msg := func(i int) *engine.Message {
				return &engine.Message{Event: "newNotification", Data: []byte(`{"title":"a booking","bookingId":"b-1234567"}`),
					To: engine.Target{Users: []string{"u" + strconv.Itoa(i%2000)}}}
			}
			brokers[0].Publish(context.Background(), msg(0), false) // warm
			time.Sleep(100 * time.Millisecond)
			base := hubs[1].n.Load() + hubs[2].n.Load()
			base0 := hubs[0].n.Load()
			cpu0, rcpu0 := cpuNow(), redisCPU(b, r)
			b.ResetTimer()
			for i := range b.N {
				brokers[0].Publish(context.Background(), msg(i), false)
			}
			want := int64(b.N) // the user's node alone
			if tc.max == 0 {
				want *= 2 // both
			}
			for hubs[1].n.Load()+hubs[2].n.Load()-base < want {
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			b.ReportMetric(float64(cpuNow()-cpu0)/float64(b.N), "node-cpu-ns/op")
			b.ReportMetric(float64(redisCPU(b, r)-rcpu0)/float64(b.N), "redis-cpu-ns/op")
			b.ReportMetric(float64(hubs[0].n.Load()-base0+hubs[1].n.Load()+hubs[2].n.Load()-base)/float64(b.N), "hub-deliveries/op")
		})
	}
}

type nopTeller struct{}

func (nopTeller) TellPresence(string, bool, time.Time) {}
func (nopTeller) Counts() (int64, int64)               { return 0, 0 }
func (nopTeller) InPresenceOrder(fn func()) bool       { fn(); return true }

// BenchmarkSubscriptions is what per-user channels cost Redis and a node:
// b.N users arrive on a node at once (a connect storm), and it reports the
// time until Redis has all their subscriptions, and Redis's memory per
// subscription. Run: go test -run XXX -bench Subscriptions -benchtime 10000x ./engine/cluster
func BenchmarkSubscriptions(b *testing.B) {
	r := redistest.Start(b)
	n, err := New(Options{URL: r.URL(), NodeID: "n"})
	if err != nil {
		b.Fatal(err)
	}
	br, _ := n.Broker(&countHub{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx, nopTeller{}, 0) }()
	defer func() { cancel(); <-done }()
	mem := func() float64 {
		out, _ := r.Do("INFO", "memory")
		for _, l := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "used_memory:"); ok {
				f, _ := strconv.ParseFloat(v, 64)
				return f
			}
		}
		return 0
	}
	time.Sleep(300 * time.Millisecond) // the broadcast channel
	m0 := mem()
	b.ResetTimer()
	for i := range b.N {
		br.(engine.UserRouter).Here("user-"+strconv.Itoa(i), true)
	}
	last := n.chUser + "user-" + strconv.Itoa(b.N-1)
	for {
		out, _ := r.Do("PUBSUB", "SHARDNUMSUB", last)
		if strings.HasSuffix(strings.TrimSpace(out), "1") {
			break
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric((mem()-m0)/float64(b.N), "redis-B/sub")
}
