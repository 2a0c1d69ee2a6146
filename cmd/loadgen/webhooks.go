//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sidecar/sidecar/engine/webhook"
)

// webhooksResult is the output of `loadgen webhooks`: one JSON object.
type webhooksResult struct {
	Kind      string        `json:"kind"` // "webhooks"
	Machine   machine       `json:"machine"`
	ServerCmd string        `json:"server_cmd"`
	ServerGo  string        `json:"server_go,omitempty"`
	ServerPID int           `json:"server_pid"`
	Store     string        `json:"store,omitempty"` // as the caller describes it (path, sync policy)
	N         int           `json:"n"`               // WebSocket clients, users u0..u(N-1)
	HTTPConns int           `json:"http_conns"`      // POSTs in flight at most
	BatchUs   float64       `json:"client_batch_us"` // receipt times are late by up to this
	Connect   readyMsg      `json:"connect"`
	Idle      *idleResult   `json:"server_idle,omitempty"`
	Rates     []webhookRate `json:"rates"`
	// Best is the highest rate with every webhook answered 202 and
	// delivered exactly once, nothing skipped; 0 when none was.
	BestRate  float64 `json:"best_rate"`
	BestP99Ms float64 `json:"best_post_to_client_p99_ms"`
	TookS     float64 `json:"took_s"`

	// With several nodes: the nodes (--url), where the webhooks went, and
	// the share of them sent again to another node (--resend).
	URLs       []string `json:"urls,omitempty"`
	ServerPIDs []int    `json:"server_pids,omitempty"`
	RedisPIDs  []int    `json:"redis_pids,omitempty"`
	PostTo     string   `json:"post_to,omitempty"`
	Resend     float64  `json:"resend,omitempty"`
}

// webhookRate is one rate of the sweep.
type webhookRate struct {
	RateHz  float64 `json:"rate_hz"`
	ForS    float64 `json:"for_s"`
	Offered int     `json:"offered"` // webhooks due at rate over for
	Sent    int     `json:"sent"`
	// Skipped: due while every HTTP connection was busy, so never sent.
	// The open loop does not queue (a queue would hide the server's delay).
	Skipped    int            `json:"skipped"`
	Status     map[string]int `json:"status"` // HTTP status → count; "error" for transport errors
	Accepted   int            `json:"accepted"`
	TooMany    int            `json:"status_429"`
	OtherFail  int            `json:"other_failures"` // neither 202 nor 429, transport errors included
	FirstError string         `json:"first_error,omitempty"`

	PostWallS     float64 `json:"post_wall_s"` // first POST to the last answer
	AcceptedPerS  float64 `json:"accepted_per_s"`
	DeliveredPerS float64 `json:"delivered_per_s"` // frames / (first POST to last receipt)
	PostMs        quant   `json:"post_ms"`         // POST round trip, all answered
	// StartLagMs: from a webhook's due time to the start of its POST, the
	// load generator's own scheduling delay (not in the latencies).
	StartLagMs quant `json:"start_lag_ms"`
	// DeliveryMs: from just before signing and POSTing to the client's
	// receipt (its epoll batch time), per delivered frame.
	DeliveryMs quant `json:"post_to_client_ms"`

	Delivered   int64 `json:"delivered"`
	Missing     int64 `json:"missing"`    // answered 202, never delivered
	Duplicates  int64 `json:"duplicates"` // deliveries beyond the first
	Unexpected  int64 `json:"unexpected"` // deliveries of webhooks not answered 202
	Misrouted   int64 `json:"misrouted"`  // delivered to another user's connection
	Other       int64 `json:"other_frames"`
	ClosedConns int   `json:"closed_conns"`

	// Local: webhooks POSTed to the node their recipient is connected to;
	// Cross: to another node. Nodes: each node's part.
	Local int           `json:"local,omitempty"`
	Cross int           `json:"cross,omitempty"`
	Nodes []webhookNode `json:"nodes,omitempty"`
	// Resent: accepted webhooks POSTed again, same id and body, to another
	// node right after their 202 (--resend), as a sender's retry would;
	// each must be answered 200 duplicate and not delivered again.
	// ResentAccepted: answered 202 (the cluster did not know the id).
	Resent          int     `json:"resent,omitempty"`
	ResentDuplicate int     `json:"resent_duplicate,omitempty"`
	ResentAccepted  int     `json:"resent_accepted,omitempty"`
	ResentFailed    int     `json:"resent_failed,omitempty"`
	ResentError     string  `json:"resent_first_error,omitempty"`
	RedisCPUS       float64 `json:"redis_cpu_s,omitempty"`
	RedisUsPerWh    float64 `json:"redis_cpu_us_per_webhook,omitempty"`

	// Server utime+stime from the first POST until the last delivery
	// (or the grace ran out), per accepted webhook, less the server's idle
	// rate; raw: nothing taken off.
	ServerCPUS         float64 `json:"server_cpu_s"`
	ServerCPUUsPerWh   float64 `json:"server_cpu_us_per_webhook"`
	ServerCPUUsPerWhRw float64 `json:"server_cpu_us_per_webhook_raw"`
	ServerCores        float64 `json:"server_cores"`
	// The load generator: the POSTing coordinator and the WebSocket workers.
	PosterCPUS    float64 `json:"client_poster_cpu_s"`
	WorkersCPUS   float64 `json:"client_workers_cpu_s"`
	ClientCores   float64 `json:"client_cores"`
	ClientUsPerWh float64 `json:"client_cpu_us_per_webhook"`
	OtherCores    float64 `json:"other_cores"`
	Clean         bool    `json:"clean"`
}

// webhookNode is one node's part of a rate.
type webhookNode struct {
	Posted     int     `json:"posted"`   // webhooks POSTed to it
	Accepted   int     `json:"accepted"` // of them, answered 202
	Conns      int     `json:"conns"`    // clients connected to it
	Delivered  int64   `json:"delivered"`
	CPUS       float64 `json:"server_cpu_s"`
	CPUUsPerWh float64 `json:"server_cpu_us_per_accepted_webhook"` // per webhook this node accepted
}

// runWebhooks is `loadgen webhooks`: N clients connect, then signed
// booking.created webhooks are POSTed open loop at each rate, each to one
// connected user through the server's rules.
func runWebhooks(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var t target
	fs := flag.NewFlagSet("webhooks", flag.ContinueOnError)
	t.register(fs)
	n := fs.Int("n", 1000, "connections, users <prefix>0..<prefix>(n-1); webhook k goes to user k mod n")
	pidList := fs.String("server-pid", "", "pid of the server process, to read its CPU time (optional); with several --url, one per URL, comma-separated")
	redisList := fs.String("redis-pid", "", "pids of the broker (redis-server), comma-separated: their CPU is reported and not counted as other processes'")
	postToFlag := fs.String("post-to", "rr", "with several --url: the node each webhook is POSTed to: rr (round-robin, 1 in n to the recipient's node), local (the recipient's), cross (the next one), or an index in --url")
	resend := fs.Float64("resend", 0, "this fraction of the accepted webhooks is POSTed again, same id, to another node right after its 202; each must be answered 200 duplicate and not delivered twice")
	label := fs.String("server-cmd", "", "the server's command line, recorded in the result")
	serverGo := fs.String("server-go", "", "the server's Go version, recorded in the result")
	store := fs.String("store", "", "the server's store (path, sync policy), recorded in the result")
	secret := fs.String("webhook-secret", firstKey(firstEnv("LOADGEN_WEBHOOK_SECRET", "SIDECAR_WEBHOOKS__SECRETS", "WEBHOOK_SECRET")),
		"whsec_ secret to sign with (env LOADGEN_WEBHOOK_SECRET, first of SIDECAR_WEBHOOKS__SECRETS, WEBHOOK_SECRET)")
	whURL := fs.String("webhook-url", "", "webhook endpoint (default: <api>/webhooks); with several --url, one per URL, comma-separated")
	conns := fs.Int("conns", 64, "HTTP keep-alive connections: POSTs in flight at most")
	rates := fs.String("rates", "1000,2000,4000,8000", "comma-separated webhooks per second, swept in order")
	dur := fs.Duration("for", 20*time.Second, "duration of each rate")
	late := fs.Duration("late", time.Second, "a delivery slower than this is late")
	grace := fs.Duration("grace", 10*time.Second, "wait for deliveries after the last answer")
	warm := fs.Float64("warm", 200, "warm-up rate for 2 s before the sweep (also checks the secret and the rules); 0 skips")
	idleWindow := fs.Duration("idle", 10*time.Second, "measure the idle server's CPU over this long first; 0 skips")
	pause := fs.Duration("pause", 3*time.Second, "pause between rates")
	keepGoing := fs.Bool("keep-going", false, "sweep every rate, also after one that lost or refused webhooks")
	quietLimit := fs.Float64("quiet-limit", 0.25, "before each rate, wait until other processes use fewer cores than this")
	quietWait := fs.Duration("quiet-wait", time.Minute, "longest wait for a quiet machine before each rate")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := t.validate(); err != nil {
		return err
	}
	if *secret == "" {
		return errors.New("no webhook secret: set --webhook-secret or SIDECAR_WEBHOOKS__SECRETS")
	}
	signer, err := webhook.NewSigner(*secret)
	if err != nil {
		return fmt.Errorf("--webhook-secret: %w", err)
	}
	rateList, err := parseRates(*rates)
	if err != nil {
		return err
	}
	if *conns < 1 || *n < 1 {
		return errors.New("--conns and -n must be positive")
	}
	if !(*resend >= 0 && *resend <= 1) {
		return fmt.Errorf("--resend %g: want a fraction, 0..1", *resend)
	}
	pids, err := serverPIDs(*pidList, t.nodes(), false)
	if err != nil {
		return err
	}
	redisPIDs, err := parsePIDs(*redisList)
	if err != nil {
		return fmt.Errorf("--redis-pid: %w", err)
	}
	to, err := parsePostTo(*postToFlag, t.nodes(), true)
	if err != nil {
		return err
	}
	var whURLs []string
	if *whURL == "" {
		for _, a := range t.apis {
			whURLs = append(whURLs, a+"/webhooks")
		}
	} else if whURLs = strings.Split(*whURL, ","); len(whURLs) != t.nodes() {
		return fmt.Errorf("--webhook-url: %d URLs for %d --url: want one per --url", len(whURLs), t.nodes())
	}
	ctx, cancel := context.WithTimeout(ctx, t.Timeout)
	defer cancel()
	start := time.Now()
	logf := newLogf(stderr)
	res := webhooksResult{Kind: "webhooks", Machine: describeMachine(), ServerCmd: *label, ServerGo: *serverGo,
		Store: *store, N: *n, HTTPConns: *conns, BatchUs: float64(t.Batch) / 1e3, Resend: *resend}
	if len(pids) > 0 {
		res.ServerPID = pids[0]
	}
	if t.nodes() > 1 {
		res.ServerPIDs, res.RedisPIDs, res.PostTo = pids, redisPIDs, to.String()
		for _, u := range t.urls {
			res.URLs = append(res.URLs, u.String())
		}
	}

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
	p, err := newWebhookPoster(whURLs, signer, t.UserPrefix, *n, *conns)
	if err != nil {
		return err
	}
	p.to, p.resend = to, *resend
	o := phaseOpts{serverPIDs: pids, redisPIDs: redisPIDs, late: *late, grace: *grace}
	base := int64(1)

	if *warm > 0 {
		logf("warm-up: %g webhooks/s for 2 s", *warm)
		wr, err := webhookPhase(ctx, f, p, base, *warm, 2*time.Second, o)
		base += int64(wr.Offered)
		if err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		if wr.Accepted == 0 || wr.Delivered == 0 {
			return fmt.Errorf("warm-up: %d accepted, %d delivered (statuses %v, first error %q): check --webhook-secret, "+
				"that the rules turn booking.created into newNotification with bookingId: data.id for user(data.providerId)",
				wr.Accepted, wr.Delivered, wr.Status, wr.FirstError)
		}
		logf("warm-up: %d accepted, %d delivered, missing %d", wr.Accepted, wr.Delivered, wr.Missing)
	}
	if *idleWindow > 0 && len(pids) > 0 {
		logf("idle CPU over %v", *idleWindow)
		ir, err := measureIdle(ctx, f, pids, *idleWindow)
		if err != nil {
			return err
		}
		res.Idle = &ir
		o.idleCores = ir.Cores
		logf("idle: %.3f cores", ir.Cores)
	}
	for i, r := range rateList {
		if i > 0 || *warm > 0 {
			sleepCtx(ctx, *pause)
		}
		if oc, quiet := waitQuiet(ctx, append(f.pids(), o.ours()...), *quietLimit, 3*time.Second, *quietWait); !quiet {
			logf("machine still busy (others use %.2f cores); measuring anyway", oc)
		}
		logf("rate %g webhooks/s for %v", r, *dur)
		wr, err := webhookPhase(ctx, f, p, base, r, *dur, o)
		base += int64(wr.Offered)
		if err != nil {
			return err
		}
		res.Rates = append(res.Rates, wr)
		logf("rate %g: %.0f accepted/s, %d skipped, 429 %d, other %d; delivered %d, missing %d, dup %d; POST p99 %.1f ms; POST->client p50 %.1f p99 %.1f max %.1f ms; server %.1f µs/webhook (%.2f cores), client %.2f cores; others %.2f cores",
			r, wr.AcceptedPerS, wr.Skipped, wr.TooMany, wr.OtherFail, wr.Delivered, wr.Missing, wr.Duplicates,
			wr.PostMs.P99, wr.DeliveryMs.P50, wr.DeliveryMs.P99, wr.DeliveryMs.Max, wr.ServerCPUUsPerWh, wr.ServerCores, wr.ClientCores, wr.OtherCores)
		if t.nodes() > 1 {
			for j, nd := range wr.Nodes {
				logf("rate %g: node %d: %d POSTed, %d accepted, %d delivered to its %d clients, %.1f µs server CPU per webhook it accepted",
					r, j, nd.Posted, nd.Accepted, nd.Delivered, nd.Conns, nd.CPUUsPerWh)
			}
			logf("rate %g: %d POSTed to the recipient's node, %d to another", r, wr.Local, wr.Cross)
		}
		if wr.Resent > 0 {
			logf("rate %g: resent %d to another node: %d answered duplicate, %d accepted again, %d failed%s",
				r, wr.Resent, wr.ResentDuplicate, wr.ResentAccepted, wr.ResentFailed, problem(wr.ResentError))
		}
		if wr.Clean && r > res.BestRate {
			res.BestRate, res.BestP99Ms = r, wr.DeliveryMs.P99
		}
		if !wr.Clean && !*keepGoing {
			logf("rate %g lost, refused or skipped webhooks: stopping the sweep (--keep-going sweeps on)", r)
			break
		}
	}
	res.TookS = round3(time.Since(start).Seconds())
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// webhookPhase POSTs webhooks base.. at rate for dur, open loop: webhook i is
// due at i/rate; when every connection is busy at its due time it is
// skipped, not queued. Then it waits for the deliveries and accounts.
func webhookPhase(ctx context.Context, f *fleet, p *webhookPoster, base int64, rate float64, dur time.Duration, o phaseOpts) (webhookRate, error) {
	res := webhookRate{RateHz: rate, ForS: dur.Seconds(), Status: map[string]int{}}
	n := int(math.Round(rate * dur.Seconds()))
	res.Offered = n
	_, err := f.armMode(ctx, base, int64(n), o.late, "webhooks")
	if err != nil {
		return res, err
	}
	posts := make([]whPost, n)
	// At most conns webhooks are in flight (queued to a sender or being
	// POSTed); a webhook due while conns are is skipped.
	jobs := make(chan int, p.conns)
	var inflight atomic.Int64
	var wg sync.WaitGroup
	var t0 time.Time
	// The senders end when jobs is closed.
	for range p.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wcs := make([]whConn, len(p.nodes))
			defer func() {
				for _, wc := range wcs {
					if wc.c != nil {
						wc.c.Close()
					}
				}
			}()
			for i := range jobs {
				start := time.Now()
				r := p.post(ctx, wcs, base+int64(i))
				r.lag = start.Sub(t0.Add(time.Duration(float64(i) / rate * float64(time.Second))))
				posts[i] = r
				inflight.Add(-1)
			}
		}()
	}
	self := os.Getpid()
	poster0, _ := cpuTime(self)
	c0 := startClocks(f, o)
	t0 = c0.t0
	timer := time.NewTimer(0)
	defer timer.Stop()
	skipped := make([]bool, n)
dispatch:
	for i := range n {
		if wait := time.Until(t0.Add(time.Duration(float64(i) / rate * float64(time.Second)))); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				break dispatch
			}
		}
		if inflight.Load() >= int64(p.conns) {
			skipped[i] = true
			res.Skipped++
			continue
		}
		inflight.Add(1)
		jobs <- i
		res.Sent++
	}
	close(jobs)
	wg.Wait()
	lastAnswer := time.Now()
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	res.PostWallS = round3(lastAnswer.Sub(t0).Seconds())

	nodes := len(p.nodes)
	if nodes > 1 {
		res.Nodes = make([]webhookNode, nodes)
	}
	var took, lag []float64
	for i, r := range posts {
		if skipped[i] {
			continue
		}
		if res.Nodes != nil {
			nd := &res.Nodes[r.node]
			nd.Posted++
			if r.status == http.StatusAccepted {
				nd.Accepted++
			}
			if r.node == r.home {
				res.Local++
			} else {
				res.Cross++
			}
		}
		if r.resent {
			res.Resent++
			switch {
			case r.duplicate:
				res.ResentDuplicate++
			case r.resendStatus == http.StatusAccepted:
				res.ResentAccepted++
			default:
				res.ResentFailed++
				if res.ResentError == "" {
					res.ResentError = fmt.Sprintf("status %d: %v", r.resendStatus, r.resendErr)
				}
			}
		}
		lag = append(lag, ms(r.lag))
		switch {
		case r.err != nil && r.status == 0:
			res.Status["error"]++
		default:
			res.Status[strconv.Itoa(r.status)]++
			took = append(took, ms(r.took))
		}
		switch r.status {
		case http.StatusAccepted:
			res.Accepted++
		case http.StatusTooManyRequests:
			res.TooMany++
		default:
			res.OtherFail++
		}
		if r.err != nil && r.status != http.StatusTooManyRequests && res.FirstError == "" {
			res.FirstError = r.err.Error()
		}
	}
	res.PostMs = quantOf(took)
	res.StartLagMs = quantOf(lag)
	if res.PostWallS > 0 {
		res.AcceptedPerS = math.Round(float64(res.Accepted) / res.PostWallS)
	}

	if err := f.waitDelivered(ctx, int64(res.Accepted), time.Now().Add(o.grace), 20*time.Millisecond); err != nil {
		return res, err
	}
	each1, kids1, redis1 := cpuEach(o.serverPIDs), cpuTimes(f.pids()), cpuTimes(o.redisPIDs)
	var cpu1 time.Duration
	for _, d := range each1 {
		cpu1 += d
	}
	poster1, _ := cpuTime(self)
	phaseWall := time.Since(t0)
	res.OtherCores = round3(c0.meter.otherCores())
	m, err := f.report(ctx, 0)
	if err != nil {
		return res, err
	}
	res.Delivered = m.Frames
	res.Misrouted = m.Misrouted
	res.Other = m.Other
	res.ClosedConns = m.Closed
	res.DeliveryMs = quant{P50: m.hist.quantile(0.5), P99: m.hist.quantile(0.99), Max: float64(m.hist.max) / 1000}
	for i := range n {
		got := int64(0)
		if i < len(m.Seqs) {
			got = int64(m.Seqs[i].N)
		}
		if posts[i].status == http.StatusAccepted && !skipped[i] {
			if got == 0 {
				res.Missing++
			}
			res.Duplicates += max(0, got-1)
		} else {
			res.Unexpected += got
		}
	}
	if m.LastRecv > 0 {
		if wall := float64(m.LastRecv-t0.UnixNano()) / 1e9; wall > 0 {
			res.DeliveredPerS = math.Round(float64(m.Frames) / wall)
		}
	}
	perWh := func(d time.Duration) float64 {
		if res.Accepted == 0 {
			return 0
		}
		return round3(float64(d) / float64(time.Microsecond) / float64(res.Accepted))
	}
	if len(o.serverPIDs) > 0 {
		d := cpu1 - c0.server
		res.ServerCPUS = d.Seconds()
		res.ServerCPUUsPerWhRw = perWh(d)
		res.ServerCPUUsPerWh = perWh(max(0, d-time.Duration(o.idleCores*float64(phaseWall))))
		res.ServerCores = round3(d.Seconds() / phaseWall.Seconds())
	}
	for j := range res.Nodes {
		nd := &res.Nodes[j]
		nd.Conns = at(m.NodeArmed, j)
		nd.Delivered = at(m.NodeFrames, j)
		if j < len(each1) && j < len(c0.each) {
			d := each1[j] - c0.each[j]
			nd.CPUS = round3(d.Seconds())
			if nd.Accepted > 0 {
				nd.CPUUsPerWh = round3(float64(d) / float64(time.Microsecond) / float64(nd.Accepted))
			}
		}
	}
	if len(o.redisPIDs) > 0 {
		d := redis1 - c0.redis
		res.RedisCPUS = round3(d.Seconds())
		res.RedisUsPerWh = perWh(d)
	}
	res.PosterCPUS = (poster1 - poster0).Seconds()
	res.WorkersCPUS = (kids1 - c0.kids).Seconds()
	res.ClientCores = round3((res.PosterCPUS + res.WorkersCPUS) / phaseWall.Seconds())
	res.ClientUsPerWh = perWh(poster1 - poster0 + kids1 - c0.kids)
	res.Clean = res.Skipped == 0 && res.TooMany == 0 && res.OtherFail == 0 && res.Accepted == n &&
		res.Missing == 0 && res.Duplicates == 0 && res.Unexpected == 0 && res.Misrouted == 0 && res.ClosedConns == 0 &&
		res.ResentAccepted == 0 && res.ResentFailed == 0
	return res, nil
}

// writeWebhooksSummary prints a `loadgen webhooks` result as markdown.
func writeWebhooksSummary(w io.Writer, r *webhooksResult) {
	m := r.Machine
	fmt.Fprintf(w, "#### signed webhooks through the rules: `%s`, %d clients, %s\n\n", r.ServerCmd, r.N, m.Date)
	fmt.Fprintf(w, "%d CPUs (%s), Linux %s, %s RAM; loadgen %s", m.NProc, m.CPU, m.Kernel, m.MemTotal, m.LoadgenGo)
	if r.ServerGo != "" {
		fmt.Fprintf(w, ", server %s", r.ServerGo)
	}
	if r.Store != "" {
		fmt.Fprintf(w, "; store %s", r.Store)
	}
	fmt.Fprintf(w, "; %d HTTP keep-alive connections; client receipt batching %.0f µs", r.HTTPConns, r.BatchUs)
	if r.Idle != nil {
		fmt.Fprintf(w, "; server idle %.3f cores", r.Idle.Cores)
	}
	fmt.Fprint(w, "\n\n| rate/s | accepted/s | skipped | 429 | other | POST p50 / p99 ms | POST→client p50 / p99 / max ms | delivered/s | missing / dup | server µs per webhook (cores) | client cores (start lag p99 ms) | others |\n")
	fmt.Fprint(w, "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range r.Rates {
		fmt.Fprintf(w, "| %g | %.0f | %d | %d | %d | %.1f / %.1f | %.1f / %.1f / %.1f | %.0f | %d / %d | %.1f (%.2f) | %.2f (%.1f) | %.2f |\n",
			s.RateHz, s.AcceptedPerS, s.Skipped, s.TooMany, s.OtherFail, s.PostMs.P50, s.PostMs.P99,
			s.DeliveryMs.P50, s.DeliveryMs.P99, s.DeliveryMs.Max, s.DeliveredPerS, s.Missing, s.Duplicates,
			s.ServerCPUUsPerWh, s.ServerCores, s.ClientCores, s.StartLagMs.P99, s.OtherCores)
	}
	if len(r.URLs) > 1 {
		fmt.Fprintln(w)
		writeWebhookNodes(w, r)
	}
	if r.BestRate > 0 {
		fmt.Fprintf(w, "\nHighest rate with every webhook accepted (202) and delivered once: **%g/s**, POST→client p99 **%.1f ms**.\n\n", r.BestRate, r.BestP99Ms)
	} else {
		fmt.Fprint(w, "\nNo rate had every webhook accepted and delivered once.\n\n")
	}
}

// summaryKind tells a `loadgen webhooks` result from a `loadgen run` one.
func summaryKind(b []byte) string {
	var v struct {
		Kind string `json:"kind"`
	}
	json.Unmarshal(b, &v)
	return strings.TrimSpace(v.Kind)
}
