//go:build linux

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// benchResult is the output of `loadgen run`: one JSON object per run.
type benchResult struct {
	Machine     machine       `json:"machine"`
	ServerCmd   string        `json:"server_cmd"`
	ServerGo    string        `json:"server_go,omitempty"`
	ServerPID   int           `json:"server_pid"`
	N           int           `json:"n"`
	Connect     readyMsg      `json:"connect"`
	ServerConns int64         `json:"server_reported_conns"` // from /api/socket-test/stats; -1 unknown
	WriteFloor  float64       `json:"write_floor_us"`        // CPU of one 160-byte loopback TCP write here
	ClientBatch float64       `json:"client_events_per_wakeup"`
	RSS         rssResult     `json:"server_rss"`
	Kernel      kernelResult  `json:"kernel_slab"`
	ClientRSS   int64         `json:"client_rss_kib"` // all workers, after connecting
	Idle        *idleResult   `json:"server_idle,omitempty"`
	Latency     *phaseResult  `json:"latency,omitempty"`
	Sustain     []phaseResult `json:"sustain,omitempty"`
	Pings       int64         `json:"pings_answered"`
	TookS       float64       `json:"took_s"`

	// With several nodes (--url a,b,c): the nodes in order, where the
	// broadcasts went, and each node's figures. The RSS above is then the
	// nodes' sum (per connection: over all of them), server CPU too.
	URLs       []string     `json:"urls,omitempty"`
	ServerPIDs []int        `json:"server_pids,omitempty"`
	RedisPIDs  []int        `json:"redis_pids,omitempty"`
	PostTo     string       `json:"post_to,omitempty"`
	Nodes      []nodeResult `json:"nodes,omitempty"`
}

// nodeResult is one node of a cluster run.
type nodeResult struct {
	URL         string    `json:"url"`
	PID         int       `json:"pid"`
	Conns       int       `json:"conns"` // open on this node after connecting
	ServerConns int64     `json:"server_reported_conns"`
	RSS         rssResult `json:"rss"`
	IdleCores   float64   `json:"idle_cores,omitempty"`
}

type rssResult struct {
	BeforeKiB  int64   `json:"before_kib"`
	AfterKiB   int64   `json:"after_kib"`
	PerConnKiB float64 `json:"per_conn_kib"`
	PeakKiB    int64   `json:"peak_kib"` // VmHWM at the end: the most the process ever held
	// After the latency phase has sent every connection K messages and
	// they are idle again: per-connection write paths (goroutine stacks,
	// buffers) have been used once, as on a server that has delivered.
	AfterTrafficKiB     int64   `json:"after_traffic_kib,omitempty"`
	PerConnAfterTraffic float64 `json:"per_conn_after_traffic_kib,omitempty"`
	BeforeSamples       []int64 `json:"before_samples"`
	AfterSamples        []int64 `json:"after_samples"`
}

// idleResult is the server's CPU use while every connection is idle: its
// pings, timers and housekeeping. Sustained phases subtract it.
type idleResult struct {
	NodeCores      []float64 `json:"node_cores,omitempty"` // several nodes: each one's
	WindowS        float64   `json:"window_s"`
	CPUS           float64   `json:"cpu_s"`
	Cores          float64   `json:"cores"`
	UsPerConnPerS  float64   `json:"us_per_conn_per_s"`
	ClientPings    int64     `json:"pings_answered"` // by the clients, in the window
	OtherCoresSeen float64   `json:"other_cores"`
}

// kernelResult is the machine-wide Slab growth while the connections opened,
// shared by both ends of each loopback connection: per socket is /(2N).
type kernelResult struct {
	BeforeKiB    int64   `json:"before_kib"`
	AfterKiB     int64   `json:"after_kib"`
	PerSocketKiB float64 `json:"per_socket_kib"`
}

// runBench is `loadgen run`: the whole benchmark against one running server.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var t target
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	t.register(fs)
	n := fs.Int("n", 10000, "connections")
	pidList := fs.String("server-pid", "", "pid of the server process (required: RSS and CPU are read from /proc/<pid>); with several --url, one per URL, comma-separated")
	redisList := fs.String("redis-pid", "", "pids of the broker (redis-server), comma-separated: their CPU is reported and not counted as other processes'")
	postToFlag := fs.String("post-to", "rr", "with several --url: the node the broadcasts are POSTed to, rr (round-robin) or an index in --url")
	label := fs.String("server-cmd", "", "the server's command line, recorded in the result")
	serverGo := fs.String("server-go", "", "the server's Go version (go version <binary>), recorded in the result")
	warm := fs.Int("warm", 200, "connections that warm the server up before the RSS baseline")
	settleMin := fs.Duration("settle-min", 10*time.Second, "idle time before the RSS is read")
	settleMax := fs.Duration("settle-max", 60*time.Second, "longest wait for a steady RSS")
	k := fs.Int("k", 20, "latency: broadcasts")
	interval := fs.Duration("interval", time.Second, "latency: time between broadcasts")
	rates := fs.String("rates", "10", "sustain: comma-separated broadcast rates per second; empty skips")
	dur := fs.Duration("for", 30*time.Second, "sustain: duration of each rate")
	late := fs.Duration("late", time.Second, "a delivery slower than this is late")
	grace := fs.Duration("grace", 10*time.Second, "wait for stragglers after the last POST")
	idleWindow := fs.Duration("idle", 60*time.Second, "measure the idle server's CPU over this long (cover a ping interval); 0 skips")
	quietLimit := fs.Float64("quiet-limit", 0.25, "cores other processes may use during a measured phase")
	quietWait := fs.Duration("quiet-wait", 10*time.Minute, "longest wait for the machine to be quiet before a phase")
	attempts := fs.Int("attempts", 3, "tries per phase while other processes use more than --quiet-limit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := t.validate(); err != nil {
		return err
	}
	pids, err := serverPIDs(*pidList, t.nodes(), true)
	if err != nil {
		return err
	}
	redisPIDs, err := parsePIDs(*redisList)
	if err != nil {
		return fmt.Errorf("--redis-pid: %w", err)
	}
	to, err := parsePostTo(*postToFlag, t.nodes(), false)
	if err != nil {
		return err
	}
	rateList, err := sustainRates(*rates)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, t.Timeout)
	defer cancel()
	start := time.Now()
	logf := newLogf(stderr)
	res := benchResult{Machine: describeMachine(), ServerCmd: *label, ServerGo: *serverGo, ServerPID: pids[0], N: *n}
	multi := t.nodes() > 1
	if multi {
		res.ServerPIDs, res.RedisPIDs, res.PostTo = pids, redisPIDs, to.String()
		for i, u := range t.urls {
			res.URLs = append(res.URLs, u.String())
			res.Nodes = append(res.Nodes, nodeResult{URL: u.String(), PID: pids[i]})
		}
	}
	if fl, err := writeFloor(1000, 30, 3, 160); err == nil {
		res.WriteFloor = round3(float64(fl) / float64(time.Microsecond))
		logf("loopback write floor: %.2f µs CPU per 160-byte write", res.WriteFloor)
	}
	p := newPoster(&t, to)
	o := phaseOpts{serverPIDs: pids, redisPIDs: redisPIDs, late: *late, grace: *grace}
	seq := int64(1)

	// Warm up: a few connections and broadcasts, which also prove that the
	// server accepts our tokens and API key and passes seq through.
	logf("warm-up: %d connections", *warm)
	wf, err := startFleet(ctx, &t, *n, *warm, stderr)
	if err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if wf.ready.Open == 0 {
		wf.close()
		return fmt.Errorf("warm-up: no connection opened: %v", wf.ready.Errors)
	}
	wr, err := latencyPhase(ctx, wf, p, seq, 3, 200*time.Millisecond, phaseOpts{late: *late, grace: 5 * time.Second})
	wf.close()
	seq += 3
	if err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if wr.Delivered == 0 || wr.Missing > 0 {
		return fmt.Errorf("warm-up: %d of %d broadcast frames arrived (post error: %q); check --api-key and that the server passes body fields into data",
			wr.Delivered, wr.Expected, wr.PostError)
	}

	logf("RSS baseline")
	before, beforeSamples, err := settleRSSAll(ctx, pids, 3*time.Second, 20*time.Second)
	if err != nil {
		return err
	}
	res.RSS.BeforeKiB = sum64(before)
	if multi {
		for i := range res.Nodes {
			res.Nodes[i].RSS.BeforeKiB, res.Nodes[i].RSS.BeforeSamples = before[i], beforeSamples[i]
		}
	} else {
		res.RSS.BeforeSamples = beforeSamples[0]
	}
	res.Kernel.BeforeKiB = meminfoKiB("Slab:")

	logf("connecting %d", *n)
	f, err := startFleet(ctx, &t, 0, *n, stderr)
	if err != nil {
		return err
	}
	defer f.close()
	res.Connect = f.ready
	logf("connected %d, failed %d, in %d ms", f.ready.Open, f.ready.Failed, f.ready.TookMs)
	if f.ready.Open == 0 {
		return fmt.Errorf("no connection opened: %v", f.ready.Errors)
	}
	after, afterSamples, err := settleRSSAll(ctx, pids, *settleMin, *settleMax)
	if err != nil {
		return err
	}
	res.Kernel.AfterKiB = meminfoKiB("Slab:")
	res.RSS.AfterKiB = sum64(after)
	res.RSS.PerConnKiB = round3(float64(res.RSS.AfterKiB-res.RSS.BeforeKiB) / float64(f.ready.Open))
	res.Kernel.PerSocketKiB = round3(float64(res.Kernel.AfterKiB-res.Kernel.BeforeKiB) / float64(2*f.ready.Open))
	res.ServerConns = 0
	for i, api := range t.apis {
		c := p.serverConns(ctx, api)
		if c < 0 || res.ServerConns < 0 {
			res.ServerConns = -1
		} else {
			res.ServerConns += c
		}
		if multi {
			nd := &res.Nodes[i]
			nd.ServerConns = c
			nd.Conns = at(f.ready.PerNode, i)
			nd.RSS.AfterKiB, nd.RSS.AfterSamples = after[i], afterSamples[i]
			if nd.Conns > 0 {
				nd.RSS.PerConnKiB = round3(float64(nd.RSS.AfterKiB-nd.RSS.BeforeKiB) / float64(nd.Conns))
			}
			logf("node %d (pid %d): %d connections, RSS %d -> %d KiB: %.2f KiB per connection",
				i, nd.PID, nd.Conns, nd.RSS.BeforeKiB, nd.RSS.AfterKiB, nd.RSS.PerConnKiB)
		}
	}
	if !multi {
		res.RSS.AfterSamples = afterSamples[0]
	}
	for _, kp := range f.pids() {
		kib, _ := rssKiB(kp)
		res.ClientRSS += kib
	}
	logf("RSS %d -> %d KiB: %.2f KiB per connection", res.RSS.BeforeKiB, res.RSS.AfterKiB, res.RSS.PerConnKiB)

	if *idleWindow > 0 {
		logf("idle CPU over %v", *idleWindow)
		ir, err := measureIdle(ctx, f, pids, *idleWindow)
		if err != nil {
			return err
		}
		res.Idle = &ir
		o.idleCores = ir.Cores
		for i := range res.Nodes {
			res.Nodes[i].IdleCores = at(ir.NodeCores, i)
		}
		logf("idle: %.3f cores, %.2f µs per connection per second", ir.Cores, ir.UsPerConnPerS)
	}

	// measure runs a phase when the machine is quiet, and again (up to
	// attempts) when another process took CPU meanwhile; it keeps the
	// least disturbed try.
	measure := func(name string, do func() (phaseResult, error)) (phaseResult, error) {
		var best phaseResult
		for a := 1; a <= *attempts; a++ {
			if oc, quiet := waitQuiet(ctx, append(f.pids(), o.ours()...), *quietLimit, 5*time.Second, *quietWait); !quiet {
				logf("%s: machine still busy (others use %.2f cores); measuring anyway", name, oc)
			}
			r, err := do()
			if err != nil {
				return r, err
			}
			r.Attempts = a
			if a == 1 || r.OtherCores < best.OtherCores {
				best = r
			}
			if r.OtherCores <= *quietLimit {
				break
			}
			logf("%s: other processes used %.2f cores meanwhile", name, r.OtherCores)
		}
		return best, nil
	}

	if *k > 0 {
		logf("latency: %d broadcasts, %v apart", *k, *interval)
		lr, err := measure("latency", func() (phaseResult, error) {
			r, err := latencyPhase(ctx, f, p, seq, *k, *interval, o)
			seq += int64(*k)
			return r, err
		})
		if err != nil {
			return err
		}
		res.Latency = &lr
		logf("latency: POST->last %s ms; %.2f µs server CPU per message; others used %.2f cores",
			lr.PostToLastMs, lr.ServerCPUUsPerMsg, lr.OtherCores)
		for i, nd := range lr.Nodes {
			if nd.PostToLastMs != nil {
				logf("latency: node %d: %d POSTs, POST->last of its %d clients %s ms; %.2f µs server CPU per message it delivered",
					i, nd.Posts, nd.Conns, nd.PostToLastMs, nd.ServerCPUUsPerMsg)
			}
		}
		kibs, _, err := settleRSSAll(ctx, pids, *settleMin, *settleMax)
		if err != nil {
			return err
		}
		kib := sum64(kibs)
		res.RSS.AfterTrafficKiB = kib
		if open := lr.Conns - lr.ClosedConns; open > 0 {
			res.RSS.PerConnAfterTraffic = round3(float64(kib-res.RSS.BeforeKiB) / float64(open))
		}
		for i := range res.Nodes {
			nd := &res.Nodes[i]
			nd.RSS.AfterTrafficKiB = kibs[i]
			if i < len(lr.Nodes) {
				if open := lr.Nodes[i].Conns - lr.Nodes[i].ClosedConns; open > 0 {
					nd.RSS.PerConnAfterTraffic = round3(float64(kibs[i]-nd.RSS.BeforeKiB) / float64(open))
				}
			}
		}
		logf("RSS after traffic %d KiB: %.2f KiB per connection", kib, res.RSS.PerConnAfterTraffic)
	}
	for _, r := range rateList {
		logf("sustain: %g broadcasts/s for %v", r, *dur)
		sr, err := measure("sustain", func() (phaseResult, error) {
			r, err := sustainPhase(ctx, f, p, seq, r, *dur, o)
			seq += int64(r.Broadcasts + r.Skipped)
			return r, err
		})
		if err != nil {
			return err
		}
		res.Sustain = append(res.Sustain, sr)
		logf("sustain: %.0f delivered/s, missing %d, late %d, %.2f µs server CPU per message, %.2f cores; others used %.2f cores",
			sr.DeliveredPerS, sr.Missing, sr.Late, sr.ServerCPUUsPerMsg, sr.ServerCores, sr.OtherCores)
	}
	for i, pid := range pids {
		peak, _ := statusKiB(pid, "VmHWM:")
		res.RSS.PeakKiB += peak
		if multi {
			res.Nodes[i].RSS.PeakKiB = peak
		}
	}
	m, err := f.report(ctx, 0)
	if err == nil {
		res.Pings = m.Pings
		if m.Wakeups > 0 {
			res.ClientBatch = round3(float64(m.Events) / float64(m.Wakeups))
		}
	}
	res.TookS = round3(time.Since(start).Seconds())
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}

// settleRSSAll is settleRSS of each pid, all at once.
func settleRSSAll(ctx context.Context, pids []int, minWait, maxWait time.Duration) ([]int64, [][]int64, error) {
	kib := make([]int64, len(pids))
	samples := make([][]int64, len(pids))
	errs := make([]error, len(pids))
	var wg sync.WaitGroup
	for i, pid := range pids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kib[i], samples[i], errs[i] = settleRSS(ctx, pid, minWait, maxWait)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, nil, fmt.Errorf("pid %d: %w", pids[i], err)
		}
	}
	return kib, samples, nil
}

func sum64(v []int64) int64 {
	var s int64
	for _, x := range v {
		s += x
	}
	return s
}

// settleRSS samples VmRSS once a second. After min it returns as soon as the
// last five samples lie within 1% (or 512 KiB) of each other, and at max in any
// case; the value is the median of the last five. A Go server's RSS moves
// while its GC and scavenger catch up with the allocations of connecting.
func settleRSS(ctx context.Context, pid int, minWait, maxWait time.Duration) (int64, []int64, error) {
	start := time.Now()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var samples []int64
	for {
		kib, err := rssKiB(pid)
		if err != nil {
			return 0, samples, fmt.Errorf("server RSS: %w", err)
		}
		samples = append(samples, kib)
		if len(samples) >= 5 {
			last := slices.Clone(samples[len(samples)-5:])
			slices.Sort(last)
			spread := last[4] - last[0]
			elapsed := time.Since(start)
			if elapsed >= maxWait || (elapsed >= minWait && (spread*100 <= last[4] || spread <= 512)) {
				return last[2], samples, nil
			}
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return 0, samples, ctx.Err()
		}
	}
}

// sustainRates reads `run`'s --rates: empty (or blank) skips the sustained
// phases, as the flag's help says; anything else is parseRates'.
func sustainRates(s string) ([]float64, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	return parseRates(s)
}

func parseRates(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		r, err := strconv.ParseFloat(f, 64)
		if err != nil || !(r > 0) || math.IsInf(r, 0) { // !(r > 0) also refuses NaN
			return nil, fmt.Errorf("--rates: bad rate %q", f)
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--rates: no rate in %q", s)
	}
	return out, nil
}

// runHold is `loadgen hold`: open N connections and keep them idle.
func runHold(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var t target
	fs := flag.NewFlagSet("hold", flag.ContinueOnError)
	t.register(fs)
	n := fs.Int("n", 1000, "connections")
	dur := fs.Duration("duration", time.Minute, "how long to hold them (or until SIGINT/SIGTERM)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := t.validate(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, min(t.Timeout, *dur+t.ReadyWait))
	defer cancel()
	f, err := startFleet(ctx, &t, 0, *n, stderr)
	if err != nil {
		return err
	}
	defer f.close()
	enc := json.NewEncoder(stdout)
	enc.Encode(f.ready)
	hold := time.NewTimer(*dur)
	defer hold.Stop()
	select {
	case <-hold.C:
	case <-ctx.Done():
	}
	// Report with a fresh context: the hold may have ended by its deadline.
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	m, err := f.report(rctx, 0)
	if err != nil {
		return err
	}
	return enc.Encode(map[string]any{"type": "held", "open": m.Open, "pings_answered": m.Pings,
		"server_closes": m.Closes, "read_errs": m.ReadErrs, "proto_errs": m.ProtoErrs})
}

// runLatency is `loadgen latency`: K broadcasts to N connections.
func runLatency(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runPhase(ctx, "latency", args, stdout, stderr)
}

// runSustain is `loadgen sustain`: broadcasts at a rate for a while.
func runSustain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runPhase(ctx, "sustain", args, stdout, stderr)
}

func runPhase(ctx context.Context, kind string, args []string, stdout, stderr io.Writer) error {
	var t target
	fs := flag.NewFlagSet(kind, flag.ContinueOnError)
	t.register(fs)
	n := fs.Int("n", 1000, "connections")
	pidList := fs.String("server-pid", "", "server pid, to report its CPU time (optional); with several --url, one per URL, comma-separated")
	postToFlag := fs.String("post-to", "rr", "with several --url: the node the broadcasts are POSTed to, rr (round-robin) or an index in --url")
	k := fs.Int("k", 20, "latency: broadcasts")
	interval := fs.Duration("interval", time.Second, "latency: time between broadcasts")
	rate := fs.Float64("rate", 10, "sustain: broadcasts per second")
	dur := fs.Duration("for", 30*time.Second, "sustain: how long")
	late := fs.Duration("late", time.Second, "a delivery slower than this is late")
	grace := fs.Duration("grace", 10*time.Second, "wait for stragglers after the last POST")
	seq := fs.Int64("seq", time.Now().Unix()%1000000*1000, "first broadcast seq")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := t.validate(); err != nil {
		return err
	}
	pids, err := serverPIDs(*pidList, t.nodes(), false)
	if err != nil {
		return err
	}
	to, err := parsePostTo(*postToFlag, t.nodes(), false)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, t.Timeout)
	defer cancel()
	f, err := startFleet(ctx, &t, 0, *n, stderr)
	if err != nil {
		return err
	}
	defer f.close()
	enc := json.NewEncoder(stdout)
	enc.Encode(f.ready)
	o := phaseOpts{serverPIDs: pids, late: *late, grace: *grace}
	var r phaseResult
	if kind == "latency" {
		r, err = latencyPhase(ctx, f, newPoster(&t, to), *seq, *k, *interval, o)
	} else {
		r, err = sustainPhase(ctx, f, newPoster(&t, to), *seq, *rate, *dur, o)
	}
	if err != nil {
		return err
	}
	return enc.Encode(r)
}

// measureIdle reads the servers' CPU time across window while nobody sends.
func measureIdle(ctx context.Context, f *fleet, pids []int, window time.Duration) (idleResult, error) {
	before, err := f.report(ctx, 0)
	if err != nil {
		return idleResult{}, err
	}
	c0 := startClocks(f, phaseOpts{serverPIDs: pids})
	t := time.NewTimer(window)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return idleResult{}, ctx.Err()
	}
	each := subDurations(cpuEach(pids), c0.each)
	var d time.Duration
	for _, x := range each {
		d += x
	}
	wall := time.Since(c0.t0)
	after, err := f.report(ctx, 0)
	if err != nil {
		return idleResult{}, err
	}
	r := idleResult{
		WindowS:        round3(wall.Seconds()),
		CPUS:           d.Seconds(),
		Cores:          round3(d.Seconds() / wall.Seconds()),
		ClientPings:    after.Pings - before.Pings,
		OtherCoresSeen: round3(c0.meter.otherCores()),
	}
	if len(pids) > 1 {
		for _, x := range each {
			r.NodeCores = append(r.NodeCores, round3(x.Seconds()/wall.Seconds()))
		}
	}
	if after.Open > 0 {
		r.UsPerConnPerS = round3(float64(d.Microseconds()) / wall.Seconds() / float64(after.Open))
	}
	return r, nil
}
