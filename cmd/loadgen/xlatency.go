//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"
)

// xlatencyResult is the output of `loadgen xlatency`: one JSON object.
type xlatencyResult struct {
	Kind      string   `json:"kind"` // "xlatency"
	Machine   machine  `json:"machine"`
	ServerCmd string   `json:"server_cmd"`
	ServerGo  string   `json:"server_go,omitempty"`
	URLs      []string `json:"urls"`
	From      int      `json:"from"` // the node the cross-node events are POSTed to
	To        int      `json:"to"`   // the node every client is connected to
	Endpoint  string   `json:"endpoint"`
	N         int      `json:"n"`       // clients, users <prefix>0..<prefix>(n-1), all on node To
	Samples   int      `json:"samples"` // events in all, half each way
	RateHz    float64  `json:"rate_hz"`
	BatchUs   float64  `json:"client_batch_us"` // receipt times are late by up to this
	Connect   readyMsg `json:"connect"`
	// WarmupMs: from the first warm-up event (one per client, through node
	// From) to the last one's receipt; they prove that node To has
	// subscribed every client's channel before the measurement.
	WarmupMs float64 `json:"warmup_ms"`
	Cross    xPath   `json:"cross"` // POSTed to node From
	Local    xPath   `json:"local"` // POSTed to node To itself
	// AddedMs is what crossing nodes adds: cross - local, quantile by
	// quantile (not a distribution of differences).
	AddedMs    xquant  `json:"added_ms"`
	OtherCores float64 `json:"other_cores"`
	Clean      bool    `json:"clean"` // every event accepted and delivered exactly once, to its user
	TookS      float64 `json:"took_s"`
}

// xPath is the events of one way: POSTed to one node.
type xPath struct {
	Node       int    `json:"node"`
	Sent       int    `json:"sent"`
	Skipped    int    `json:"skipped"` // due while --inflight POSTs were outstanding: not sent
	Accepted   int    `json:"accepted"`
	PostErrors int    `json:"post_errors"`
	FirstError string `json:"first_error,omitempty"`
	// ServerDelivered is the sum of "delivered" in the 202 answers: the
	// connections on the node POSTed to (1 per event locally, 0 across).
	ServerDelivered int    `json:"server_delivered"`
	Delivered       int    `json:"delivered"` // accepted events that arrived
	Missing         int    `json:"missing"`
	Duplicates      int    `json:"duplicates"`
	LatencyMs       xquant `json:"post_to_client_ms"` // just before the POST to the receipt (its first)
	PostMs          xquant `json:"post_ms"`           // the POST's round trip
}

// xquant is a distribution in milliseconds, with its tail.
type xquant struct {
	N    int     `json:"n"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

// xquantOf is the nearest-rank quantiles of v (a p999 of fewer than 1,000
// values is their maximum).
func xquantOf(v []float64) xquant {
	if len(v) == 0 {
		return xquant{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	at := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(s)))) - 1
		return round3(s[max(0, min(i, len(s)-1))])
	}
	var sum float64
	for _, x := range s {
		sum += x
	}
	return xquant{N: len(s), Mean: round3(sum / float64(len(s))), P50: at(0.5), P90: at(0.9), P99: at(0.99), P999: at(0.999), Max: round3(s[len(s)-1])}
}

// minus is a - b, quantile by quantile.
func (a xquant) minus(b xquant) xquant {
	return xquant{N: min(a.N, b.N), Mean: round3(a.Mean - b.Mean), P50: round3(a.P50 - b.P50), P90: round3(a.P90 - b.P90),
		P99: round3(a.P99 - b.P99), P999: round3(a.P999 - b.P999), Max: round3(a.Max - b.Max)}
}

// runXLatency is `loadgen xlatency`: the latency a targeted event gains by
// crossing nodes. Every client is connected to node --to; event j goes to
// one client, POSTed to node --from (cross) when j is even and to node --to
// itself (local) when it is odd, paced at --rate, so that both ways see the
// same machine at the same moments.
func runXLatency(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var t target
	fs := flag.NewFlagSet("xlatency", flag.ContinueOnError)
	t.register(fs)
	// A receipt time is late by up to --batch; here events come one at a
	// time, and the batching that saves CPU under load only blurs them.
	fs.Lookup("batch").DefValue = "0s"
	fs.Set("batch", "0")
	n := fs.Int("n", 100, "clients, users <prefix>0..<prefix>(n-1), all connected to node --to")
	from := fs.Int("from", 0, "index in --url of the node the cross-node events are POSTed to")
	toNode := fs.Int("to", 1, "index in --url of the node every client is connected to (and the local events are POSTed to)")
	samples := fs.Int("samples", 2000, "events in all, alternating cross and local")
	rate := fs.Float64("rate", 100, "events per second, paced (open loop)")
	inflight := fs.Int("inflight", 8, "POSTs outstanding at most; an event due beyond it is skipped and counted")
	endpoint := fs.String("endpoint", "events", "events (POST /api/events with to.users) or send (POST /api/socket-test/send/{user})")
	grace := fs.Duration("grace", 5*time.Second, "wait for deliveries after the last POST")
	warmWait := fs.Duration("warm-wait", 15*time.Second, "how long the warm-up events (one per client, cross-node) may take to arrive")
	label := fs.String("server-cmd", "", "the servers' command line, recorded in the result")
	serverGo := fs.String("server-go", "", "the servers' Go version, recorded in the result")
	pidList := fs.String("server-pid", "", "pids of the servers (optional), comma-separated: left out of the quiet check")
	redisList := fs.String("redis-pid", "", "pids of the broker (optional), comma-separated: left out of the quiet check")
	quietLimit := fs.Float64("quiet-limit", 0.25, "before measuring, wait until other processes use fewer cores than this")
	quietWait := fs.Duration("quiet-wait", time.Minute, "longest wait for a quiet machine")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := t.validate(); err != nil {
		return err
	}
	nodes := t.nodes()
	switch {
	case nodes < 2:
		return errors.New("xlatency needs two nodes or more: --url ws://A/ws,ws://B/ws")
	case *from < 0 || *from >= nodes || *toNode < 0 || *toNode >= nodes || *from == *toNode:
		return fmt.Errorf("--from %d --to %d: want two different indexes in --url, 0..%d", *from, *toNode, nodes-1)
	case *n < 1 || *samples < 2 || !(*rate > 0) || math.IsInf(*rate, 0) || *inflight < 1:
		return errors.New("-n, --samples (at least 2), --rate and --inflight must be positive")
	case *endpoint != "events" && *endpoint != "send":
		return fmt.Errorf("--endpoint %q: want events or send", *endpoint)
	}
	pids, err := parsePIDs(*pidList)
	if err != nil {
		return fmt.Errorf("--server-pid: %w", err)
	}
	redisPIDs, err := parsePIDs(*redisList)
	if err != nil {
		return fmt.Errorf("--redis-pid: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, t.Timeout)
	defer cancel()
	start := time.Now()
	logf := newLogf(stderr)
	res := xlatencyResult{Kind: "xlatency", Machine: describeMachine(), ServerCmd: *label, ServerGo: *serverGo,
		From: *from, To: *toNode, Endpoint: *endpoint, N: *n, Samples: *samples, RateHz: *rate, BatchUs: float64(t.Batch) / 1e3}
	for _, u := range t.urls {
		res.URLs = append(res.URLs, u.String())
	}
	res.Cross.Node, res.Local.Node = *from, *toNode

	// The clients: all on node --to.
	ct := t
	ct.URL, ct.API = t.urls[*toNode].String(), t.apis[*toNode]
	if err := ct.validate(); err != nil {
		return err
	}
	logf("connecting %d to node %d (%s)", *n, *toNode, ct.URL)
	f, err := startFleet(ctx, &ct, 0, *n, stderr)
	if err != nil {
		return err
	}
	defer f.close()
	res.Connect = f.ready
	logf("connected %d, failed %d, in %d ms", f.ready.Open, f.ready.Failed, f.ready.TookMs)
	if f.ready.Open < *n {
		return fmt.Errorf("%d of %d connections opened: %v", f.ready.Open, *n, f.ready.Errors)
	}
	x := newXPoster(&t, *endpoint, t.UserPrefix, *inflight)

	// Warm-up: one cross-node event to every client, until all arrived.
	base := int64(1)
	if _, err := f.armMode(ctx, base, int64(*n), time.Second, "targeted"); err != nil {
		return err
	}
	w0 := time.Now()
	var wg sync.WaitGroup
	warmErrs := make([]error, *n)
	sem := make(chan struct{}, *inflight)
	for i := range *n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r := x.post(ctx, *from, base+int64(i), i)
			warmErrs[i] = r.err
		}()
	}
	wg.Wait()
	if err := errors.Join(warmErrs...); err != nil {
		return fmt.Errorf("warm-up POSTs to node %d: %w", *from, firstErr(warmErrs))
	}
	if err := f.waitDelivered(ctx, int64(*n), time.Now().Add(*warmWait), 10*time.Millisecond); err != nil {
		return err
	}
	wm, err := f.report(ctx, 1)
	if err != nil {
		return err
	}
	if wm.Frames < int64(*n) || wm.Misrouted > 0 {
		return fmt.Errorf("warm-up: %d of %d cross-node events arrived (%d misrouted) in %v: does node %d reach node %d through the broker?",
			wm.Frames, *n, wm.Misrouted, *warmWait, *from, *toNode)
	}
	res.WarmupMs = round3(float64(wm.LastRecv-w0.UnixNano()) / 1e6)
	logf("warm-up: %d cross-node events arrived in %.1f ms", wm.Frames, res.WarmupMs)
	base += int64(*n)

	if oc, quiet := waitQuiet(ctx, append(f.pids(), append(pids, redisPIDs...)...), *quietLimit, 3*time.Second, *quietWait); !quiet {
		logf("machine still busy (others use %.2f cores); measuring anyway", oc)
	}
	logf("%d events at %g/s, alternating: POSTed to node %d (cross) and to node %d (local)", *samples, *rate, *from, *toNode)
	if _, err := f.armMode(ctx, base, int64(*samples), time.Second, "targeted"); err != nil {
		return err
	}
	meter := newCPUMeter(append(f.pids(), append(pids, redisPIDs...)...))
	posts := make([]xPost, *samples)
	skipped := make([]bool, *samples)
	t0 := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for j := range *samples {
		if wait := time.Until(t0.Add(time.Duration(float64(j) / *rate * float64(time.Second)))); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		node := *from
		if j%2 == 1 {
			node = *toNode
		}
		select {
		case sem <- struct{}{}:
		default:
			skipped[j] = true
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			posts[j] = x.post(ctx, node, base+int64(j), (j/2)%*n)
		}()
	}
	wg.Wait()
	var accepted int64
	for j, p := range posts {
		if !skipped[j] && p.err == nil {
			accepted++
		}
	}
	if err := f.waitDelivered(ctx, accepted, time.Now().Add(*grace), 10*time.Millisecond); err != nil {
		return err
	}
	res.OtherCores = round3(meter.otherCores())
	m, err := f.report(ctx, 0)
	if err != nil {
		return err
	}
	res.Cross, res.Local = xAccount(posts, skipped, m.Seqs, 0), xAccount(posts, skipped, m.Seqs, 1)
	res.Cross.Node, res.Local.Node = *from, *toNode
	res.AddedMs = res.Cross.LatencyMs.minus(res.Local.LatencyMs)
	res.Clean = m.Misrouted == 0 && m.Closed == 0
	for _, p := range []xPath{res.Cross, res.Local} {
		res.Clean = res.Clean && p.Skipped == 0 && p.PostErrors == 0 && p.Missing == 0 && p.Duplicates == 0
	}
	for _, p := range []struct {
		name string
		x    xPath
	}{{"cross", res.Cross}, {"local", res.Local}} {
		logf("%s (POSTed to node %d): %d accepted, %d delivered, missing %d, dup %d; POST->client p50 %.3f p99 %.3f p999 %.3f max %.3f ms",
			p.name, p.x.Node, p.x.Accepted, p.x.Delivered, p.x.Missing, p.x.Duplicates,
			p.x.LatencyMs.P50, p.x.LatencyMs.P99, p.x.LatencyMs.P999, p.x.LatencyMs.Max)
	}
	logf("added by crossing nodes: p50 %.3f, p99 %.3f, p999 %.3f ms; other processes %.2f cores",
		res.AddedMs.P50, res.AddedMs.P99, res.AddedMs.P999, res.OtherCores)
	res.TookS = round3(time.Since(start).Seconds())
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(&res)
}

func firstErr(errs []error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// xAccount sums the events of one way (j mod 2 == parity) against what the
// clients received, seqs[j] being event j's deliveries.
func xAccount(posts []xPost, skipped []bool, seqs []seqStat, parity int) xPath {
	var p xPath
	var lat, took []float64
	for j := parity; j < len(posts); j += 2 {
		if skipped[j] {
			p.Skipped++
			continue
		}
		r := posts[j]
		p.Sent++
		took = append(took, ms(r.took))
		if r.err != nil {
			p.PostErrors++
			if p.FirstError == "" {
				p.FirstError = r.err.Error()
			}
			continue
		}
		p.Accepted++
		p.ServerDelivered += r.delivered
		var s seqStat
		if j < len(seqs) {
			s = seqs[j]
		}
		switch {
		case s.N == 0:
			p.Missing++
			continue
		case s.N > 1:
			p.Duplicates += int(s.N) - 1
		}
		p.Delivered++
		lat = append(lat, float64(s.Min)/1e6)
	}
	p.LatencyMs, p.PostMs = xquantOf(lat), xquantOf(took)
	return p
}

// xPoster POSTs targeted events to a chosen node.
type xPoster struct {
	client   *http.Client
	apis     []string
	endpoint string
	prefix   string
	auth     string
}

func newXPoster(t *target, endpoint, prefix string, conns int) *xPoster {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, IdleConnTimeout: time.Minute}
	return &xPoster{client: &http.Client{Transport: tr, Timeout: 10 * time.Second},
		apis: t.apis, endpoint: endpoint, prefix: prefix, auth: "Bearer " + t.APIKey}
}

// xPost is one targeted event's POST.
type xPost struct {
	took      time.Duration
	delivered int // the answer's "delivered": connections on the node POSTed to
	err       error
}

// xBody is the event's data: the worker reads seq, sentAt and lgUser (the
// recipient's index, to catch misrouting).
func xBody(seq, sentAt int64, user int) []byte {
	b := make([]byte, 0, 128)
	b = append(b, `{"title":"loadgen","message":"cross-node latency","type":"info","seq":`...)
	b = strconv.AppendInt(b, seq, 10)
	b = append(b, `,"sentAt":`...)
	b = strconv.AppendInt(b, sentAt, 10)
	b = append(b, `,"lgUser":`...)
	b = strconv.AppendInt(b, int64(user), 10)
	return append(b, '}')
}

// post sends event seq to user <prefix><user> through node.
func (x *xPoster) post(ctx context.Context, node int, seq int64, user int) xPost {
	uid := x.prefix + strconv.Itoa(user)
	sentAt := time.Now().UnixNano()
	data := xBody(seq, sentAt, user)
	var u string
	var body []byte
	if x.endpoint == "send" {
		u, body = x.apis[node]+"/api/socket-test/send/"+url.PathEscape(uid), data
	} else {
		u = x.apis[node] + "/api/events"
		ub, _ := json.Marshal(uid)
		body = fmt.Appendf(nil, `{"event":"newNotification","to":{"users":[%s]},"data":%s}`, ub, data)
	}
	var r xPost
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		r.err = err
		return r
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", x.auth)
	resp, err := x.client.Do(req)
	r.took = time.Duration(time.Now().UnixNano() - sentAt)
	if err != nil {
		r.err = err
		return r
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		r.err = fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
		return r
	}
	var v struct {
		Delivered int `json:"delivered"`
	}
	json.Unmarshal(b, &v)
	r.delivered = v.Delivered
	return r
}

// writeXLatencySummary prints a `loadgen xlatency` result as markdown.
func writeXLatencySummary(w io.Writer, r *xlatencyResult) {
	m := r.Machine
	fmt.Fprintf(w, "#### cross-node latency of a targeted event: `%s`, %d nodes, %s\n\n", r.ServerCmd, len(r.URLs), m.Date)
	fmt.Fprintf(w, "%d CPUs (%s), Linux %s; loadgen %s", m.NProc, m.CPU, m.Kernel, m.LoadgenGo)
	if r.ServerGo != "" {
		fmt.Fprintf(w, ", server %s", r.ServerGo)
	}
	fmt.Fprintf(w, "; %d clients on node %d; %d events at %g/s through `%s`, alternating; client receipt batching %.0f µs; other processes %.2f cores\n\n",
		r.N, r.To, r.Samples, r.RateHz, r.Endpoint, r.BatchUs, r.OtherCores)
	fmt.Fprint(w, "| POSTed to | accepted | delivered | missing / dup | POST→client p50 / p90 / p99 / p999 / max ms | POST p50 / p99 ms |\n|---|---|---|---|---|---|\n")
	for _, p := range []struct {
		name string
		x    xPath
	}{{fmt.Sprintf("node %d (cross)", r.From), r.Cross}, {fmt.Sprintf("node %d (local)", r.To), r.Local}} {
		l := p.x.LatencyMs
		fmt.Fprintf(w, "| %s | %d | %d | %d / %d | %.3f / %.3f / %.3f / %.3f / %.3f | %.3f / %.3f |\n",
			p.name, p.x.Accepted, p.x.Delivered, p.x.Missing, p.x.Duplicates, l.P50, l.P90, l.P99, l.P999, l.Max, p.x.PostMs.P50, p.x.PostMs.P99)
	}
	a := r.AddedMs
	fmt.Fprintf(w, "\nAdded by crossing nodes (cross − local, quantile by quantile): **p50 %.3f ms, p99 %.3f ms, p999 %.3f ms**", a.P50, a.P99, a.P999)
	if !r.Clean {
		fmt.Fprint(w, "; **not every event was accepted and delivered exactly once**")
	}
	fmt.Fprintf(w, ". Warm-up: one cross-node event to each client, all in %.1f ms.\n\n", r.WarmupMs)
}
