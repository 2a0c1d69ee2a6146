//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// phaseOpts are shared by the measuring phases.
type phaseOpts struct {
	serverPIDs []int         // the servers, in --url order; none: do not read server CPU
	redisPIDs  []int         // the broker's processes: their CPU is reported apart, and is not the others'
	late       time.Duration // a delivery slower than this is late
	grace      time.Duration // how long to wait for stragglers after the last POST
	idleCores  float64       // the servers' CPU use while idle (pings), subtracted in sustain
}

// ours are the processes of the measurement besides the workers: servers
// and broker.
func (o phaseOpts) ours() []int { return append(slices.Clone(o.serverPIDs), o.redisPIDs...) }

// quant summarises a distribution, in milliseconds.
type quant struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// phaseResult is one measured phase, merged over all workers.
type phaseResult struct {
	Kind       string  `json:"kind"` // latency or sustain
	Conns      int     `json:"conns"`
	RateHz     float64 `json:"rate_hz,omitempty"`
	Broadcasts int     `json:"broadcasts"` // POSTs sent
	PostErrors int     `json:"post_errors"`
	PostError  string  `json:"post_error,omitempty"` // the first
	Skipped    int     `json:"skipped,omitempty"`    // sustain ticks dropped: too many POSTs in flight
	PostMs     quant   `json:"post_ms"`              // POST round trip

	Expected    int64   `json:"expected"`  // successful POSTs x connections
	Delivered   int64   `json:"delivered"` // frames received
	Missing     int64   `json:"missing"`
	Incomplete  int     `json:"incomplete_clients"` // clients short of a broadcast
	ClosedConns int     `json:"closed_conns"`
	Late        int64   `json:"late"`
	LateMs      float64 `json:"late_ms"`
	Gaps        int64   `json:"gaps"` // out-of-order or repeated ids
	Other       int64   `json:"other_frames"`

	// PostToLastMs is, per broadcast, the time from just before its POST to
	// its receipt by the last client; Complete counts broadcasts every client got.
	PostToLastMs *quant `json:"post_to_last_ms,omitempty"`
	Complete     int    `json:"complete_broadcasts"`
	Overlapping  int    `json:"overlapping,omitempty"` // latency: last receipt after the next POST
	DeliveryMs   quant  `json:"delivery_ms"`           // per delivery, over all clients

	WallS         float64 `json:"wall_s"` // first POST to last receipt
	DeliveredPerS float64 `json:"delivered_per_s"`

	// ServerCPUUsPerMsg is the server's utime+stime per frame received.
	// Latency phase: summed over the windows from each POST to its last
	// receipt, so that idle seconds between broadcasts (and the pings
	// that fall in them) do not count. Sustain: over the phase, less the
	// server's idle rate. Raw: over the whole phase, nothing taken off.
	ServerCPUS           float64 `json:"server_cpu_s"`
	ServerCPUUsPerMsg    float64 `json:"server_cpu_us_per_msg"`
	ServerCPUUsPerMsgRaw float64 `json:"server_cpu_us_per_msg_raw"`
	ServerCores          float64 `json:"server_cores"` // server CPU / wall
	ClientCPUUsPerMsg    float64 `json:"client_cpu_us_per_msg"`
	// OtherCores is the CPU the rest of the machine used meanwhile, in
	// cores; above a few tenths the figures above are skewed.
	OtherCores float64 `json:"other_cores"`
	Attempts   int     `json:"attempts,omitempty"`

	// With several nodes: where the POSTs went, each node's share, and
	// the broker's CPU (over the same windows as the servers').
	PostTo         string      `json:"post_to,omitempty"`
	Nodes          []phaseNode `json:"nodes,omitempty"`
	RedisCPUS      float64     `json:"redis_cpu_s,omitempty"`
	RedisUsPerPost float64     `json:"redis_cpu_us_per_broadcast,omitempty"`
}

// phaseNode is one node's part of a phase.
type phaseNode struct {
	Conns       int   `json:"conns"` // armed on this node
	Posts       int   `json:"posts"` // POSTs sent to this node
	Delivered   int64 `json:"delivered"`
	Missing     int64 `json:"missing"`
	ClosedConns int   `json:"closed_conns"`
	// PostToLastMs: per broadcast, from just before its POST to its
	// receipt by the last client of this node; Complete: broadcasts every
	// client of this node got.
	PostToLastMs *quant `json:"post_to_last_ms,omitempty"`
	Complete     int    `json:"complete_broadcasts"`
	// Server CPU of this node: latency, over the POST→last windows;
	// sustain, over the phase; per frame this node delivered.
	ServerCPUS        float64 `json:"server_cpu_s"`
	ServerCPUUsPerMsg float64 `json:"server_cpu_us_per_msg"`
}

// clocks are the CPU clocks read when a phase starts.
type clocks struct {
	t0                  time.Time
	server, kids, redis time.Duration
	each                []time.Duration // each server's
	meter               *cpuMeter
}

func startClocks(f *fleet, o phaseOpts) clocks {
	each := cpuEach(o.serverPIDs)
	var server time.Duration
	for _, d := range each {
		server += d
	}
	return clocks{meter: newCPUMeter(append(f.pids(), o.ours()...)), server: server, each: each,
		redis: cpuTimes(o.redisPIDs), kids: cpuTimes(f.pids()), t0: time.Now()}
}

// arm starts a phase on every worker and returns the connections it covers.
func (f *fleet) arm(ctx context.Context, base, count int64, late time.Duration) (int, error) {
	return f.armMode(ctx, base, count, late, "")
}

// armMode is arm for a kind of phase: "" counts broadcasts, "webhooks"
// counts webhooks, each to one user (see worker.message).
func (f *fleet) armMode(ctx context.Context, base, count int64, late time.Duration, mode string) (int, error) {
	armed := 0
	err := f.call(ctx, command{Op: "arm", Base: base, Count: count, LateMs: ms(late), Mode: mode}, func(_ int, raw json.RawMessage) error {
		var v struct {
			Conns int `json:"conns"`
		}
		err := json.Unmarshal(raw, &v)
		armed += v.Conns
		return err
	})
	return armed, err
}

// waitDelivered polls the workers every period until frames reach want or
// deadline passes.
func (f *fleet) waitDelivered(ctx context.Context, want int64, deadline time.Time, period time.Duration) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		var got int64
		err := f.call(ctx, command{Op: "count"}, func(_ int, raw json.RawMessage) error {
			var c countMsg
			err := json.Unmarshal(raw, &c)
			got += c.Frames
			return err
		})
		if err != nil || got >= want || time.Now().After(deadline) {
			return err
		}
		t.Reset(period)
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// merged is every worker's report for a phase, combined.
type merged struct {
	reportMsg
	hist hist
}

func (f *fleet) report(ctx context.Context, expect int64) (merged, error) {
	var m merged
	err := f.call(ctx, command{Op: "report", Expect: expect}, func(i int, raw json.RawMessage) error {
		var r reportMsg
		if err := json.Unmarshal(raw, &r); err != nil {
			return err
		}
		m.Armed += r.Armed
		m.Open += r.Open
		m.Closed += r.Closed
		m.Frames += r.Frames
		m.Other += r.Other
		m.Late += r.Late
		m.Gaps += r.Gaps
		m.Misrouted += r.Misrouted
		m.Incomplete += r.Incomplete
		m.Missing += r.Missing
		m.Pings += r.Pings
		m.WriteErrs += r.WriteErrs
		m.Closes += r.Closes
		m.ReadErrs += r.ReadErrs
		m.ProtoErrs += r.ProtoErrs
		m.Wakeups += r.Wakeups
		m.Events += r.Events
		m.NodeArmed = addInts(m.NodeArmed, r.NodeArmed)
		m.NodeOpen = addInts(m.NodeOpen, r.NodeOpen)
		m.NodeClosed = addInts(m.NodeClosed, r.NodeClosed)
		m.NodeFrames = addInts(m.NodeFrames, r.NodeFrames)
		m.NodeMissing = addInts(m.NodeMissing, r.NodeMissing)
		for len(m.NodeSeqs) < len(r.NodeSeqs) {
			m.NodeSeqs = append(m.NodeSeqs, make([]seqStat, len(r.Seqs)))
		}
		for k, ss := range r.NodeSeqs {
			mergeSeqs(m.NodeSeqs[k], ss)
		}
		if r.FirstRecv != 0 && (m.FirstRecv == 0 || r.FirstRecv < m.FirstRecv) {
			m.FirstRecv = r.FirstRecv
		}
		m.LastRecv = max(m.LastRecv, r.LastRecv)
		if m.Seqs == nil {
			m.Seqs = make([]seqStat, len(r.Seqs))
		}
		mergeSeqs(m.Seqs, r.Seqs)
		m.hist.merge(r.Hist, r.HistMaxUs)
		return nil
	})
	return m, err
}

// mergeSeqs adds the deliveries of src into dst, seq by seq (src beyond
// dst's length is left out).
func mergeSeqs(dst, src []seqStat) {
	for j, s := range src {
		if j >= len(dst) {
			break
		}
		d := &dst[j]
		if s.N > 0 && (d.N == 0 || s.Min < d.Min) {
			d.Min = s.Min
		}
		d.N += s.N
		d.Max = max(d.Max, s.Max)
	}
}

// latencyPhase sends k broadcasts interval apart and measures, for each, the
// time from its POST to its last receipt.
func latencyPhase(ctx context.Context, f *fleet, p *poster, base int64, k int, interval time.Duration, o phaseOpts) (phaseResult, error) {
	res := phaseResult{Kind: "latency", LateMs: ms(o.late)}
	armed, err := f.arm(ctx, base, int64(k), o.late)
	if err != nil {
		return res, err
	}
	res.Conns = armed
	if f.nodes > 1 {
		res.PostTo = p.to.String()
	}
	c0 := startClocks(f, o)
	t0 := c0.t0
	timer := time.NewTimer(0)
	defer timer.Stop()
	var posts []postResult
	win := windows{each: make([]time.Duration, len(o.serverPIDs))}
	for i := range k {
		if wait := time.Until(t0.Add(time.Duration(i) * interval)); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return res, ctx.Err()
			}
		}
		s0, k0, r0 := cpuEach(o.serverPIDs), cpuTimes(f.pids()), cpuTimes(o.redisPIDs)
		posts = append(posts, p.broadcast(ctx, base+int64(i)))
		// The window closes when every client has this broadcast, or when
		// the next one is due.
		next := t0.Add(time.Duration(i+1)*interval - 5*time.Millisecond)
		if err := f.waitDelivered(ctx, int64(i+1)*int64(armed), next, 5*time.Millisecond); err != nil {
			return res, err
		}
		for j, d := range subDurations(cpuEach(o.serverPIDs), s0) {
			win.each[j] += d
			win.server += d
		}
		win.kids += cpuTimes(f.pids()) - k0
		win.redis += cpuTimes(o.redisPIDs) - r0
		win.used = true
	}
	return finish(ctx, f, res, base, posts, c0, win, o, interval)
}

// sustainPhase broadcasts at rate per second for dur, open loop: a POST is
// due every 1/rate whatever the server does, with at most 16 in flight.
func sustainPhase(ctx context.Context, f *fleet, p *poster, base int64, rate float64, dur time.Duration, o phaseOpts) (phaseResult, error) {
	res := phaseResult{Kind: "sustain", RateHz: rate, LateMs: ms(o.late)}
	n := int(math.Round(rate * dur.Seconds()))
	armed, err := f.arm(ctx, base, int64(n), o.late)
	if err != nil {
		return res, err
	}
	res.Conns = armed
	if f.nodes > 1 {
		res.PostTo = p.to.String()
	}
	c0 := startClocks(f, o)
	t0 := c0.t0
	timer := time.NewTimer(0)
	defer timer.Stop()
	inflight := make(chan struct{}, 16)
	var (
		mu    sync.Mutex
		posts []postResult
		wg    sync.WaitGroup
		sent  int64
	)
	for i := range n {
		if wait := time.Until(t0.Add(time.Duration(float64(i) / rate * float64(time.Second)))); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return res, ctx.Err()
			}
		}
		select {
		case inflight <- struct{}{}:
		default:
			res.Skipped++
			continue
		}
		seq := base + sent
		sent++
		wg.Add(1)
		// Each POST goroutine ends with its request (30 s client timeout).
		go func() {
			defer wg.Done()
			r := p.broadcast(ctx, seq)
			<-inflight
			mu.Lock()
			posts = append(posts, r)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return finish(ctx, f, res, base, posts, c0, windows{}, o, 0)
}

// finish waits for the deliveries, reads the CPU clocks and merges reports.
// windows are the CPU times summed over the latency phase's busy windows.
type windows struct {
	server, kids, redis time.Duration
	each                []time.Duration // each server's
	used                bool
}

func finish(ctx context.Context, f *fleet, res phaseResult, base int64, posts []postResult, c0 clocks,
	win windows, o phaseOpts, interval time.Duration) (phaseResult, error) {
	t0, cpu0, kids0 := c0.t0, c0.server, c0.kids
	res.Broadcasts = len(posts)
	nodes := f.nodes
	if nodes > 1 {
		res.Nodes = make([]phaseNode, nodes)
	}
	var took []float64
	ok := map[int64]bool{}
	for _, r := range posts {
		took = append(took, ms(r.took))
		if res.Nodes != nil && r.node < nodes {
			res.Nodes[r.node].Posts++
		}
		if r.err != nil {
			res.PostErrors++
			if res.PostError == "" {
				res.PostError = r.err.Error()
			}
			continue
		}
		ok[r.seq] = true
	}
	res.PostMs = quantOf(took)
	okN := int64(len(ok))
	res.Expected = okN * int64(res.Conns)
	if err := f.waitDelivered(ctx, res.Expected, time.Now().Add(o.grace), 20*time.Millisecond); err != nil {
		return res, err
	}
	each1, kids1, redis1 := cpuEach(o.serverPIDs), cpuTimes(f.pids()), cpuTimes(o.redisPIDs)
	var cpu1 time.Duration
	for _, d := range each1 {
		cpu1 += d
	}
	phaseWall := time.Since(t0)
	res.OtherCores = round3(c0.meter.otherCores())
	m, err := f.report(ctx, okN)
	if err != nil {
		return res, err
	}
	res.Delivered = m.Frames
	res.Missing = m.Missing
	res.Incomplete = m.Incomplete
	res.ClosedConns = m.Closed
	res.Late = m.Late
	res.Gaps = m.Gaps
	res.Other = m.Other
	res.DeliveryMs = quant{P50: m.hist.quantile(0.5), P99: m.hist.quantile(0.99), Max: float64(m.hist.max) / 1000}

	var toLast []float64
	for i, s := range m.Seqs {
		if !ok[base+int64(i)] {
			continue
		}
		if int(s.N) >= res.Conns {
			res.Complete++
		}
		if s.N > 0 {
			toLast = append(toLast, float64(s.Max)/1e6)
			if interval > 0 && time.Duration(s.Max) > interval {
				res.Overlapping++
			}
		}
	}
	if res.Kind == "latency" {
		q := quantOf(toLast)
		res.PostToLastMs = &q
	}
	for j := range res.Nodes {
		nd := &res.Nodes[j]
		nd.Conns = at(m.NodeArmed, j)
		nd.Delivered = at(m.NodeFrames, j)
		nd.Missing = at(m.NodeMissing, j)
		nd.ClosedConns = at(m.NodeClosed, j)
		if j < len(m.NodeSeqs) {
			var last []float64
			for i, s := range m.NodeSeqs[j] {
				if !ok[base+int64(i)] {
					continue
				}
				if int(s.N) >= nd.Conns {
					nd.Complete++
				}
				if s.N > 0 {
					last = append(last, float64(s.Max)/1e6)
				}
			}
			if res.Kind == "latency" {
				q := quantOf(last)
				nd.PostToLastMs = &q
			}
		}
		if j < len(each1) && j < len(c0.each) {
			d := each1[j] - c0.each[j]
			if win.used && j < len(win.each) {
				d = win.each[j]
			}
			nd.ServerCPUS = round3(d.Seconds())
			if nd.Delivered > 0 {
				nd.ServerCPUUsPerMsg = round3(float64(d) / float64(time.Microsecond) / float64(nd.Delivered))
			}
		}
	}
	if len(o.redisPIDs) > 0 {
		d := redis1 - c0.redis
		if win.used {
			d = win.redis
		}
		res.RedisCPUS = round3(d.Seconds())
		if okN > 0 {
			res.RedisUsPerPost = round3(float64(d) / float64(time.Microsecond) / float64(okN))
		}
	}
	if m.LastRecv > 0 {
		res.WallS = round3(float64(m.LastRecv-t0.UnixNano()) / 1e9)
		res.DeliveredPerS = math.Round(float64(m.Frames) / res.WallS)
	}
	perMsg := func(d time.Duration) float64 {
		if m.Frames == 0 {
			return 0
		}
		return round3(float64(d) / float64(time.Microsecond) / float64(m.Frames))
	}
	if len(o.serverPIDs) > 0 {
		d := cpu1 - cpu0
		res.ServerCPUS = d.Seconds()
		res.ServerCPUUsPerMsgRaw = perMsg(d)
		if win.used {
			res.ServerCPUUsPerMsg = perMsg(win.server)
		} else {
			idle := time.Duration(o.idleCores * float64(phaseWall))
			res.ServerCPUUsPerMsg = perMsg(max(0, d-idle))
		}
		if res.WallS > 0 {
			res.ServerCores = round3(res.ServerCPUS / res.WallS)
		}
	}
	if win.used {
		res.ClientCPUUsPerMsg = perMsg(win.kids)
	} else {
		res.ClientCPUUsPerMsg = perMsg(kids1 - kids0)
	}
	return res, nil
}

// at is v[i], or zero beyond v.
func at[T int | int64 | float64](v []T, i int) T {
	if i < len(v) {
		return v[i]
	}
	return 0
}

func serverCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	d, _ := cpuTime(pid)
	return d
}

// quantOf is the nearest-rank p50, p99 and max of v, in the units of v.
func quantOf(v []float64) quant {
	if len(v) == 0 {
		return quant{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	at := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(s)))) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return quant{P50: round3(at(0.5)), P99: round3(at(0.99)), Max: round3(s[len(s)-1])}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

func (q quant) String() string {
	return fmt.Sprintf("p50 %.1f, p99 %.1f, max %.1f", q.P50, q.P99, q.Max)
}
