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
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// churnResult is the output of `loadgen churn`: one JSON object.
type churnResult struct {
	Kind        string  `json:"kind"` // "churn"
	Machine     machine `json:"machine"`
	ServerCmd   string  `json:"server_cmd"`
	ServerGo    string  `json:"server_go,omitempty"`
	ServerPID   int     `json:"server_pid"`
	Store       string  `json:"store,omitempty"` // as the caller describes it
	Concurrency int     `json:"concurrency"`     // cycles in flight at most
	RateCap     float64 `json:"rate_cap,omitempty"`
	Close       string  `json:"close"` // how a cycle ends: frame, wait or tcp
	ForS        float64 `json:"for_s"`
	FirstUser   string  `json:"first_user"` // users are <prefix><first>.. one per cycle
	LastUser    string  `json:"last_user"`
	WriteFloor  float64 `json:"write_floor_us"` // CPU of one 160-byte loopback TCP write here, just before

	Started    int64          `json:"started"`   // cycles begun
	Completed  int64          `json:"completed"` // 101 read and closed
	Failed     int64          `json:"failed"`
	Errors     map[string]int `json:"errors,omitempty"` // failures by kind
	FirstError string         `json:"first_error,omitempty"`
	WallS      float64        `json:"wall_s"` // first cycle begun to last one ended
	PerS       float64        `json:"cycles_per_s"`
	// PerSecond is the cycles completed in each second of the run; the
	// last one may be partial.
	PerSecond []int64 `json:"per_second"`
	// PerSecondMin, Median and Max are over the whole seconds of --for
	// (the last, partial one left out): how steady the rate was.
	PerSecondMin    int64 `json:"per_second_min"`
	PerSecondMedian int64 `json:"per_second_median"`
	PerSecondMax    int64 `json:"per_second_max"`
	CycleMs         quant `json:"cycle_ms"`   // connect to close, completed cycles
	ConnectMs       quant `json:"connect_ms"` // TCP connect
	UpgradeMs       quant `json:"upgrade_ms"` // request written to the 101 read

	ServerCPUS  float64 `json:"server_cpu_s"` // over the run (not the settle)
	ServerCores float64 `json:"server_cores"`
	ClientCores float64 `json:"client_cores"`
	OtherCores  float64 `json:"other_cores"`

	// After the run: waited SettleS for the server's presence to settle
	// (the grace delay of the last users, and their offline events).
	SettleS      float64            `json:"settle_s"`
	RSSBeforeKiB int64              `json:"server_rss_before_kib"`
	RSSAfterKiB  int64              `json:"server_rss_after_kib"` // after the settle
	RSSPeakKiB   int64              `json:"server_rss_peak_kib"`  // VmHWM
	MetricsFrom  string             `json:"metrics_from,omitempty"`
	Before       map[string]float64 `json:"metrics_before,omitempty"`
	After        map[string]float64 `json:"metrics_after,omitempty"` // after the settle
	// Online and Offline are the presence transitions during the run and
	// the settle (metrics after − before); -1: no metrics.
	Online  int64   `json:"presence_online"`
	Offline int64   `json:"presence_offline"`
	TookS   float64 `json:"took_s"`
}

// churnMetrics are the server series a churn run reads before and after.
var churnMetrics = []string{
	`sidecar_presence_transitions_total{state="online"}`,
	`sidecar_presence_transitions_total{state="offline"}`,
	`sidecar_connections_accepted_total`,
	`sidecar_connections_refused_total`,
	`sidecar_auth_failures_total`,
	`sidecar_connections`,
	`sidecar_users`,
	`sidecar_presence_store_errors_total`,
	`sidecar_deliveries_total`,
	`sidecar_slow_consumers_total`,
}

// runChurn is `loadgen churn`: connect, upgrade, read the 101 and close, as
// fast as --concurrency cycles in flight allow, for --for, each cycle as a
// new user.
func runChurn(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var t target
	fs := flag.NewFlagSet("churn", flag.ContinueOnError)
	t.register(fs)
	dur := fs.Duration("for", 30*time.Second, "how long to churn")
	conc := fs.Int("concurrency", 64, "cycles in flight at most (goroutines)")
	rate := fs.Float64("rate", 0, "cycles per second at most, all goroutines together; 0: as fast as they go")
	first := fs.Int64("first", 0, "index of the first user: cycle k is user <prefix><first+k>")
	closeMode := fs.String("close", "frame", "how a cycle ends after the 101: frame (write a close frame, then close the socket), "+
		"wait (write a close frame, wait for the server's close or EOF), tcp (close the socket, no frame)")
	pid := fs.Int("server-pid", 0, "pid of the server, to read its CPU and RSS (optional)")
	label := fs.String("server-cmd", "", "the server's command line, recorded in the result")
	serverGo := fs.String("server-go", "", "the server's Go version, recorded in the result")
	store := fs.String("store", "", "the server's store, recorded in the result")
	metricsURL := fs.String("metrics", "", "Prometheus endpoint to read presence transitions from (default <api>/metrics; \"-\" skips)")
	settle := fs.Duration("settle", 5*time.Second, "after the run, wait at least this long (cover presence.grace) before reading RSS and metrics")
	settleMax := fs.Duration("settle-max", 60*time.Second, "longest settle: until the offline count stops moving")
	quietLimit := fs.Float64("quiet-limit", 0.25, "before the run, wait until other processes use fewer cores than this")
	quietWait := fs.Duration("quiet-wait", 5*time.Minute, "longest wait for a quiet machine")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := t.validate(); err != nil {
		return err
	}
	if err := t.oneNode("churn"); err != nil {
		return err
	}
	if *conc < 1 || *dur <= 0 {
		return errors.New("--concurrency and --for must be positive")
	}
	switch *closeMode {
	case "frame", "wait", "tcp":
	default:
		return fmt.Errorf("--close %q: want frame, wait or tcp", *closeMode)
	}
	if *metricsURL == "" {
		*metricsURL = t.API + "/metrics"
	}
	srcs, _ := parseSrc(t.Src)
	base, _ := url.Parse(t.URL)
	ctx, cancel := context.WithTimeout(ctx, min(t.Timeout, *quietWait+*dur+*settleMax+2*t.DialTimeout+time.Minute))
	defer cancel()
	logf := newLogf(stderr)
	start := time.Now()

	res := churnResult{Kind: "churn", Machine: describeMachine(), ServerCmd: *label, ServerGo: *serverGo, ServerPID: *pid,
		Store: *store, Concurrency: *conc, RateCap: *rate, Close: *closeMode, ForS: dur.Seconds(),
		FirstUser: t.UserPrefix + strconv.FormatInt(*first, 10), Online: -1, Offline: -1}
	hc := &http.Client{Timeout: 5 * time.Second}
	if *metricsURL != "-" {
		if m, err := scrapeMetrics(ctx, hc, *metricsURL, churnMetrics); err == nil {
			res.MetricsFrom, res.Before = *metricsURL, m
		} else {
			logf("no metrics (%v): presence transitions not counted", err)
		}
	}
	ch := &churner{
		base: base, timeout: t.DialTimeout, prefix: t.UserPrefix, first: *first, srcs: srcs,
		close: *closeMode, tokens: &tokens{secret: []byte(t.Secret), static: t.Token, cmd: t.TokenCmd},
		perSecond: make([]atomic.Int64, int(dur.Seconds())+2),
	}
	if *rate > 0 {
		ch.interval = time.Duration(float64(time.Second) / *rate)
	}
	pids := []int{os.Getpid()}
	if *pid > 0 {
		pids = append(pids, *pid)
	}
	if oc, quiet := waitQuiet(ctx, pids, *quietLimit, 5*time.Second, *quietWait); !quiet {
		logf("machine still busy (others use %.2f cores); measuring anyway", oc)
	}
	if fl, err := writeFloor(1000, 30, 3, 160); err == nil {
		res.WriteFloor = round3(float64(fl) / float64(time.Microsecond))
	}
	if *pid > 0 {
		res.RSSBeforeKiB, _ = rssKiB(*pid)
	}
	meter := newCPUMeter(pids)
	s0, self0 := serverCPU(*pid), serverCPU(os.Getpid())
	logf("churn: %d in flight for %v, close %s", *conc, *dur, *closeMode)
	stats := ch.run(ctx, *conc, *dur)
	s1, self1 := serverCPU(*pid), serverCPU(os.Getpid())
	res.OtherCores = round3(meter.otherCores())
	stats.fill(&res)
	res.LastUser = t.UserPrefix + strconv.FormatInt(stats.maxUser, 10)
	if res.WallS > 0 {
		res.ServerCPUS = round3((s1 - s0).Seconds())
		res.ServerCores = round3(res.ServerCPUS / res.WallS)
		res.ClientCores = round3((self1 - self0).Seconds() / res.WallS)
	}
	logf("churn: %d cycles in %.1f s: %.0f/s, failed %d %v; cycle p50 %.2f p99 %.2f ms; server %.2f cores",
		res.Completed, res.WallS, res.PerS, res.Failed, res.Errors, res.CycleMs.P50, res.CycleMs.P99, res.ServerCores)

	// Settle: the last users go offline a grace delay after their close,
	// through the presence writer and the rules.
	settled := time.Now()
	if res.Before != nil {
		last, still := -1.0, 0
		for time.Since(settled) < *settleMax && ctx.Err() == nil {
			sleepCtx(ctx, time.Second)
			m, err := scrapeMetrics(ctx, hc, *metricsURL, churnMetrics)
			if err != nil {
				break
			}
			res.After = m
			off := m[churnMetrics[1]]
			if off == last {
				still++
			} else {
				still = 0
			}
			last = off
			if time.Since(settled) >= *settle && still >= 2 {
				break
			}
		}
		if res.After != nil {
			res.Online = int64(res.After[churnMetrics[0]] - res.Before[churnMetrics[0]])
			res.Offline = int64(res.After[churnMetrics[1]] - res.Before[churnMetrics[1]])
		}
	} else {
		sleepCtx(ctx, *settle)
	}
	res.SettleS = round3(time.Since(settled).Seconds())
	if *pid > 0 {
		res.RSSAfterKiB, _ = rssKiB(*pid)
		res.RSSPeakKiB, _ = statusKiB(*pid, "VmHWM:")
	}
	if res.Online >= 0 {
		logf("presence: %d online, %d offline transitions; server RSS %d KiB (peak %d)", res.Online, res.Offline, res.RSSAfterKiB, res.RSSPeakKiB)
	}
	res.TookS = round3(time.Since(start).Seconds())
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(&res)
}

// churner runs connect/upgrade/close cycles, each as a new user.
type churner struct {
	base     *url.URL
	timeout  time.Duration
	prefix   string
	first    int64
	srcs     []net.IP
	close    string
	tokens   *tokens
	interval time.Duration // 0: no pacing

	next      atomic.Int64 // cycles handed out
	t0        time.Time
	perSecond []atomic.Int64
}

// churnStats is one goroutine's account, merged at the end.
type churnStats struct {
	completed, failed int64
	maxUser           int64 // highest user index tried
	errs              map[string]int
	firstErr          string
	cycle, conn, upg  hist
	lastEnd           time.Time
}

func (s *churnStats) merge(o *churnStats) {
	s.completed += o.completed
	s.failed += o.failed
	s.maxUser = max(s.maxUser, o.maxUser)
	for k, v := range o.errs {
		s.errs[k] += v
	}
	if s.firstErr == "" {
		s.firstErr = o.firstErr
	}
	s.cycle.merge(o.cycle.sparse(), o.cycle.max)
	s.conn.merge(o.conn.sparse(), o.conn.max)
	s.upg.merge(o.upg.sparse(), o.upg.max)
	if o.lastEnd.After(s.lastEnd) {
		s.lastEnd = o.lastEnd
	}
}

type churnTotals struct {
	churnStats
	started   int64
	t0        time.Time
	perSecond []int64
}

func (s *churnTotals) fill(r *churnResult) {
	r.Started, r.Completed, r.Failed = s.started, s.completed, s.failed
	r.Errors, r.FirstError = s.errs, s.firstErr
	if len(r.Errors) == 0 {
		r.Errors = nil
	}
	if !s.lastEnd.IsZero() {
		r.WallS = round3(s.lastEnd.Sub(s.t0).Seconds())
	}
	if r.WallS > 0 {
		r.PerS = float64(int64(float64(r.Completed) / r.WallS))
	}
	r.PerSecond = trimZeros(s.perSecond)
	r.PerSecondMin, r.PerSecondMedian, r.PerSecondMax = spread(r.PerSecond, int(r.ForS))
	q := func(h *hist) quant {
		if h.n == 0 {
			return quant{}
		}
		return quant{P50: round3(h.quantile(0.5)), P99: round3(h.quantile(0.99)), Max: round3(float64(h.max) / 1000)}
	}
	r.CycleMs, r.ConnectMs, r.UpgradeMs = q(&s.cycle), q(&s.conn), q(&s.upg)
}

// spread is the min, median (upper) and max of the first whole seconds of v.
func spread(v []int64, whole int) (lo, med, hi int64) {
	v = v[:min(len(v), whole)]
	if len(v) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[0], s[len(s)/2], s[len(s)-1]
}

// trimZeros drops the trailing seconds in which nothing completed.
func trimZeros(v []int64) []int64 {
	n := len(v)
	for n > 0 && v[n-1] == 0 {
		n--
	}
	return v[:n]
}

func (ch *churner) run(ctx context.Context, conc int, dur time.Duration) churnTotals {
	ch.t0 = time.Now()
	deadline := ch.t0.Add(dur)
	all := make([]*churnStats, conc)
	var wg sync.WaitGroup
	for g := range conc {
		st := &churnStats{errs: map[string]int{}, maxUser: -1}
		all[g] = st
		wg.Add(1)
		// Each goroutine stops at the deadline or when ctx is done; a cycle
		// in flight then ends within the dial timeout.
		go func() {
			defer wg.Done()
			cl := ch.newClient()
			for ctx.Err() == nil {
				k := ch.next.Add(1) - 1
				if ch.interval > 0 {
					if d := time.Until(ch.t0.Add(time.Duration(k) * ch.interval)); d > 0 {
						sleepCtx(ctx, d)
					}
				}
				if time.Now().After(deadline) {
					return
				}
				st.maxUser = max(st.maxUser, ch.first+k)
				cl.cycle(ctx, st, ch.first+k, ch.srcs[int(k%int64(len(ch.srcs)))])
			}
		}()
	}
	wg.Wait()
	tot := churnTotals{churnStats: churnStats{errs: map[string]int{}, maxUser: -1}, t0: ch.t0}
	for _, st := range all {
		tot.merge(st)
	}
	tot.started = tot.completed + tot.failed
	for i := range ch.perSecond {
		tot.perSecond = append(tot.perSecond, ch.perSecond[i].Load())
	}
	return tot
}

// scrapeMetrics reads the series named in want from a Prometheus text
// endpoint; a series that is absent is left out of the map.
func scrapeMetrics(ctx context.Context, hc *http.Client, u string, want []string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", u, resp.Status)
	}
	return parseProm(b, want), nil
}

// parseProm picks the samples named in want (a metric name with its labels
// as exposed, e.g. `x_total{state="online"}`) out of Prometheus text format.
func parseProm(b []byte, want []string) map[string]float64 {
	w := make(map[string]bool, len(want))
	for _, s := range want {
		w[s] = true
	}
	out := map[string]float64{}
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte("\n"))
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		// The series ends at the last space outside the labels' braces
		// (label values may hold spaces); a timestamp may follow the value.
		end := bytes.IndexByte(line, '}')
		if end < 0 {
			end = bytes.IndexByte(line, ' ')
		} else {
			end++
		}
		if end <= 0 || end >= len(line) {
			continue
		}
		name := string(line[:end])
		if !w[name] {
			continue
		}
		f := bytes.Fields(line[end:])
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(string(f[0]), 64); err == nil {
			out[name] = v
		}
	}
	return out
}

// writeChurnSummary prints a `loadgen churn` result as markdown.
func writeChurnSummary(w io.Writer, r *churnResult) {
	m := r.Machine
	fmt.Fprintf(w, "#### connect/disconnect churn: `%s`, %s\n\n", r.ServerCmd, m.Date)
	fmt.Fprintf(w, "%d CPUs (%s), Linux %s, %s RAM; loadgen %s", m.NProc, m.CPU, m.Kernel, m.MemTotal, m.LoadgenGo)
	if r.ServerGo != "" {
		fmt.Fprintf(w, ", server %s", r.ServerGo)
	}
	if r.Store != "" {
		fmt.Fprintf(w, "; store %s", r.Store)
	}
	fmt.Fprintf(w, "; %d cycles in flight, close by %s, for %gs; users %s..%s", r.Concurrency, r.Close, r.ForS, r.FirstUser, r.LastUser)
	if r.WriteFloor > 0 {
		fmt.Fprintf(w, "; loopback write floor %.2f µs", r.WriteFloor)
	}
	fmt.Fprint(w, "\n\n")
	fmt.Fprint(w, "| cycles/s | each second min / median / max | completed | failed | cycle p50 / p99 / max ms | connect p50 / p99 ms | upgrade p50 / p99 ms | server cores | client cores | others |\n")
	fmt.Fprint(w, "|---|---|---|---|---|---|---|---|---|---|\n")
	fmt.Fprintf(w, "| **%.0f** | %d / %d / %d | %d | %d%s | %.2f / %.2f / %.1f | %.2f / %.2f | %.2f / %.2f | %.2f | %.2f | %.2f |\n\n",
		r.PerS, r.PerSecondMin, r.PerSecondMedian, r.PerSecondMax, r.Completed, r.Failed, errList(r.Errors), r.CycleMs.P50, r.CycleMs.P99, r.CycleMs.Max,
		r.ConnectMs.P50, r.ConnectMs.P99, r.UpgradeMs.P50, r.UpgradeMs.P99, r.ServerCores, r.ClientCores, r.OtherCores)
	var para []string
	if r.Online >= 0 {
		s := fmt.Sprintf("Presence transitions during the run and a %.0f s settle: **%d online, %d offline**", r.SettleS, r.Online, r.Offline)
		if e := r.After[`sidecar_presence_store_errors_total`] - r.Before[`sidecar_presence_store_errors_total`]; e > 0 {
			s += fmt.Sprintf(" (%.0f presence store errors)", e)
		}
		para = append(para, s+".")
	}
	if r.RSSAfterKiB > 0 {
		para = append(para, fmt.Sprintf("Server RSS %.1f MiB before, %.1f MiB after the settle, peak %.1f MiB.",
			float64(r.RSSBeforeKiB)/1024, float64(r.RSSAfterKiB)/1024, float64(r.RSSPeakKiB)/1024))
	}
	if len(para) > 0 {
		fmt.Fprintf(w, "%s\n\n", strings.Join(para, " "))
	}
}
