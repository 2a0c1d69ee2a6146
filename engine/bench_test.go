package engine

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sidecar/sidecar/engine/auth"
	"github.com/sidecar/sidecar/engine/store"
)

// benchEngine is an engine whose partitions run but which serves nothing:
// its conns all write to one sink socket, so a benchmark measures the
// delivery path and a cheap system call, not a client.
func benchEngine(tb testing.TB, users, connsPerUser int) (*Engine, func()) {
	tb.Helper()
	verifier, err := auth.New(auth.Config{Secret: []byte(testSecret)})
	if err != nil {
		tb.Fatal(err)
	}
	st, err := store.Open(":memory:", store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	e, err := New(Config{Auth: verifier, Router: &fakeRouter{}, Store: st})
	if err != nil {
		tb.Fatal(err)
	}
	fd, closeSink := sinkSocket(tb)
	var running sync.WaitGroup
	for _, p := range e.hub.parts {
		running.Add(1)
		go func() { defer running.Done(); p.run(time.Hour) }()
	}
	now := time.Now()
	for u := 0; u < users; u++ {
		ident := &auth.Identity{UserID: fmt.Sprintf("user-%d", u)}
		for i := 0; i < connsPerUser; i++ {
			c := newConn(fd, ident, 0, now)
			c.part = e.hub.partFor(c.user)
			c.part.jobs <- job{kind: jobAdd, c: c}
		}
	}
	waitFor(tb, 10*time.Second, "conns indexed", func() bool { return e.Stats().Connections == int64(users*connsPerUser) })
	return e, func() {
		for _, p := range e.hub.parts {
			p.jobs <- job{kind: jobStop}
		}
		running.Wait() // the sink must outlive every flush
		closeSink()
		st.Close()
		e.poller.Close()
		e.poller.Release()
	}
}

// BenchmarkPublish is one event to N connections, end to end through
// Publish: encode once, the partitions' queues, one write per connection.
// allocs/op stays the same for 1 and 10,000 recipients: nothing per
// recipient.
func BenchmarkPublish(b *testing.B) {
	data := map[string]any{"title": "New booking", "message": "Ana booked Haircut", "bookingId": "b1"}
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprintf("broadcast-%d", n), func(b *testing.B) {
			e, stop := benchEngine(b, n, 1)
			defer stop()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, got, _ := e.Publish("newNotification", data, Target{All: true}, true); got != n {
					b.Fatalf("delivered %d, want %d", got, n)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/recipient")
		})
	}
	b.Run("user-with-3-tabs", func(b *testing.B) {
		e, stop := benchEngine(b, 1000, 3)
		defer stop()
		to := Target{Users: []string{"user-7"}}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			e.Publish("newNotification", data, to, true)
		}
	})
}

// BenchmarkPartitionDeliver is the per-recipient work alone, on one
// partition: queue the shared frame on every conn, then one write each.
func BenchmarkPartitionDeliver(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprintf("%d-conns", n), func(b *testing.B) {
			p, d, stop := soloPartition(b, n)
			defer stop()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				p.deliver(d)
				p.flushDirty()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/recipient")
		})
	}
}

// soloPartition is a partition not run by a goroutine, with n conns on one
// sink socket, and a delivery to all of them.
func soloPartition(tb testing.TB, n int) (*partition, *delivery, func()) {
	tb.Helper()
	e := bareEngine(Limits{OutboundQueueBytes: 1 << 20})
	p := newPartition(e, 0, 1)
	e.hub.parts = []*partition{p}
	fd, closeSink := sinkSocket(tb)
	now := time.Now()
	for i := 0; i < n; i++ {
		c := newConn(fd, &auth.Identity{UserID: fmt.Sprintf("u%d", i)}, 0, now)
		c.part = p
		p.add(c, nil, nil, false, "", nil)
	}
	d := testDelivery(e, Target{All: true})
	return p, d, closeSink
}

// bareEngine is an engine with what a partition run by hand needs: no
// goroutines, no listener.
func bareEngine(l Limits) *Engine {
	e := &Engine{limits: l}
	e.hub.codecs[protoNative] = nativeCodec{}
	e.hub.codecs[protoSocketIO] = sioCodec{}
	e.metrics = newMetrics(e)
	e.ruleLog = ruleLog{log: slog.New(slog.DiscardHandler), errors: e.metrics.ruleErrors}
	e.pool.init()
	e.ready.init()
	return e
}

// testDelivery is the seed's newNotification to to, not yet framed.
func testDelivery(e *Engine, to Target) *delivery {
	m := &Message{ID: "1-1", Event: "newNotification", Data: []byte(`{"title":"New booking","bookingId":"b1"}`), To: to}
	return &delivery{msg: m, codecs: &e.hub.codecs}
}

// TestDeliveryAllocatesNothingPerRecipient holds the hot path to zero
// allocations: delivering one event to 1,000 connections, users and rooms
// alike, native and Socket.IO mixed, and flushing them.
func TestDeliveryAllocatesNothingPerRecipient(t *testing.T) {
	p, all, stop := soloPartition(t, 1000)
	defer stop()
	for i, c := range p.conns {
		if i%2 == 1 {
			c.proto = protoSocketIO
		}
	}
	for _, c := range p.conns[:500] {
		p.join(c, []string{"room-a"})
	}
	users := make([]string, 0, 200)
	for i := 0; i < 200; i++ {
		users = append(users, fmt.Sprintf("u%d", i))
	}
	mixed := testDelivery(p.e, Target{Users: users, Rooms: []string{"room-a"}, Except: []string{"u3"}})
	for name, d := range map[string]*delivery{"broadcast": all, "users+room+except": mixed} {
		var got int
		allocs := testing.AllocsPerRun(50, func() {
			got = p.deliver(d)
			p.flushDirty()
		})
		if allocs != 0 {
			t.Errorf("%s: %.1f allocations per delivery to %d conns, want 0", name, allocs, got)
		}
		if name == "users+room+except" && got != 499 { // 500 in the room, the 200 users among them, less u3
			t.Errorf("mixed target reached %d conns, want 499", got)
		}
	}
}

func BenchmarkNativeFrame(b *testing.B) {
	data := []byte(`{"title":"New booking","message":"Ana booked Haircut","bookingId":"b1"}`)
	var codec nativeCodec
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		codec.encodeEvent("newNotification", data, "1795639498789-2")
	}
}

// BenchmarkHubAddRemove is a conn joining the index and leaving it.
func BenchmarkHubAddRemove(b *testing.B) {
	p, _, stop := soloPartition(b, 10000)
	defer stop()
	ident := &auth.Identity{UserID: "u-new"}
	c := newConn(0, ident, 0, time.Now())
	c.part = p
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.add(c, nil, nil, false, "", nil)
		p.unindex(c)
	}
}

// sinkSocket is a socket-shaped /dev/null: a non-blocking UDP socket
// connected to a bound port that nobody reads. Sends never block and never
// fail; the kernel drops the datagrams once the receiver's buffer is full.
// Conns share it, so a benchmark of 10,000 recipients needs two
// descriptors, not 10,000.
func sinkSocket(tb testing.TB) (int, func()) {
	tb.Helper()
	rx, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	port := rx.LocalAddr().(*net.UDPAddr).Port
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		tb.Fatal(err)
	}
	return fd, func() { unix.Close(fd); rx.Close() }
}
