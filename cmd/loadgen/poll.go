//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// pollResult is the output of `loadgen poll`: one JSON object.
type pollResult struct {
	Kind        string  `json:"kind"` // "poll"
	Machine     machine `json:"machine"`
	ServerCmd   string  `json:"server_cmd"`
	ServerGo    string  `json:"server_go,omitempty"`
	ServerPID   int     `json:"server_pid"`
	URL         string  `json:"url"`
	N           int     `json:"n"`
	ConnectRate int     `json:"connect_rate"`
	HoldS       float64 `json:"hold_s"`

	Connected  int64          `json:"connected"` // CONNECT answered
	Failed     int64          `json:"failed"`    // never connected, after the retries
	Retries    int64          `json:"retries"`
	Errors     map[string]int `json:"errors,omitempty"` // failures to connect, by kind
	FirstError string         `json:"first_error,omitempty"`
	ConnectS   float64        `json:"connect_s"`  // first open to the last session connected
	ConnectMs  quant          `json:"connect_ms"` // per session: the open GET to the CONNECT answer

	// During the hold: sessions that ended (a close packet, an error, a
	// failed pong), by kind; alive ones at its end; pings answered.
	Closed       int64          `json:"closed"`
	CloseReasons map[string]int `json:"close_reasons,omitempty"`
	Alive        int64          `json:"alive"`
	Pings        int64          `json:"pings_answered"`

	RSSBeforeKiB    int64   `json:"server_rss_before_kib"`    // the fresh server
	RSSConnectedKiB int64   `json:"server_rss_connected_kib"` // all connected, after --settle
	RSSAfterKiB     int64   `json:"server_rss_after_kib"`     // at the end of the hold
	RSSPeakKiB      int64   `json:"server_rss_peak_kib"`      // VmHWM
	PerSessionKiB   float64 `json:"server_rss_per_session_kib"`
	// PerSessionConnectedKiB is the same right after connecting, when a
	// session has had no ping yet: one HTTP connection, not two.
	PerSessionConnectedKiB float64  `json:"server_rss_per_session_connected_kib"`
	RSSSamplesKiB          []int64  `json:"server_rss_samples_kib,omitempty"` // every 5 s of the hold
	ServerCPUS             float64  `json:"server_cpu_s"`                     // over the hold
	ServerCores            float64  `json:"server_cores"`
	ClientCores            float64  `json:"client_cores"`
	OtherCores             float64  `json:"other_cores"`
	ClientRSSKiB           int64    `json:"client_rss_kib"`
	ClientFDs              int      `json:"client_fds"` // open at the end of the hold
	MetricsFrom            string   `json:"metrics_from,omitempty"`
	Before                 promMap  `json:"metrics_before,omitempty"`
	MetricsConnected       promMap  `json:"metrics_connected,omitempty"`
	After                  promMap  `json:"metrics_after,omitempty"` // at the end of the hold
	GoroutinesPerSession   float64  `json:"server_goroutines_per_session"`
	FDsPerSession          float64  `json:"server_fds_per_session"`
	TookS                  float64  `json:"took_s"`
	Notes                  []string `json:"notes,omitempty"`
}

type promMap = map[string]float64

// pollMetrics are the server series a poll run reads.
var pollMetrics = []string{
	`go_goroutines`,
	`process_open_fds`,
	`go_memstats_heap_inuse_bytes`,
	`go_memstats_stack_inuse_bytes`,
	`go_memstats_heap_alloc_bytes`,
	`go_memstats_heap_objects`,
	`go_memstats_next_gc_bytes`,
	`go_memstats_sys_bytes`,
	`sidecar_connections`,
	`sidecar_users`,
	`sidecar_connections_accepted_total`,
	`sidecar_connections_refused_total`,
	`sidecar_auth_failures_total`,
}

// pollFDsPerSession is what one session costs the client in descriptors:
// the outstanding GET's connection and the POST's.
const pollFDsPerSession = 2

// maxPollSessions is how many sessions one process may hold under an
// open-file limit of nofile, with room for the rest.
func maxPollSessions(nofile uint64) int {
	if nofile <= 256 {
		return 0
	}
	return int((nofile - 256) / pollFDsPerSession)
}

// runPoll is `loadgen poll`: open N Socket.IO long-polling sessions, hold
// them as socket.io-client does for --hold, and report the server's RSS per
// session and the sessions lost.
func runPoll(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("poll", flag.ContinueOnError)
	rawURL := fs.String("url", "http://127.0.0.1:8080/socket.io/", "Socket.IO endpoint; ?EIO=4&transport=polling is appended")
	n := fs.Int("n", 2000, "sessions to open and hold")
	secret := fs.String("secret", firstEnv("LOADGEN_SECRET", "SIDECAR_AUTH__JWT_SECRET"), "HS256 secret for minting tokens (env LOADGEN_SECRET, SIDECAR_AUTH__JWT_SECRET)")
	static := fs.String("token", "", "use this token for every session instead of minting")
	prefix := fs.String("user-prefix", "u", "user id prefix: session i is user <prefix><i>")
	src := fs.String("src", "127.0.0.2-127.0.0.254", "source addresses, a range a.b.c.x-a.b.c.y or a comma list; session i uses the (i mod count)th")
	rate := fs.Int("connect-rate", 500, "sessions opened per second at most")
	inflight := fs.Int("open-workers", 128, "sessions connecting at once at most")
	retries := fs.Int("retries", 2, "extra attempts for a session that fails to connect")
	timeout := fs.Duration("dial-timeout", 10*time.Second, "per connect attempt, and per POST")
	hold := fs.Duration("hold", 60*time.Second, "how long to hold the sessions once connected (more than a ping interval: each session's second connection opens at its first pong)")
	settle := fs.Duration("settle", 5*time.Second, "after connecting, wait this long before reading the server's RSS")
	readyWait := fs.Duration("ready-wait", 3*time.Minute, "how long connecting may take in all")
	pid := fs.Int("server-pid", 0, "pid of the server, to read its CPU and RSS (optional)")
	label := fs.String("server-cmd", "", "the server's command line, recorded in the result")
	serverGo := fs.String("server-go", "", "the server's Go version, recorded in the result")
	metricsURL := fs.String("metrics", "", "Prometheus endpoint (default http://<host>/metrics; \"-\" skips)")
	quietLimit := fs.Float64("quiet-limit", 0.25, "before the run, wait until other processes use fewer cores than this")
	quietWait := fs.Duration("quiet-wait", 5*time.Minute, "longest wait for a quiet machine")
	total := fs.Duration("timeout", 20*time.Minute, "hard limit on the whole command")
	if err := fs.Parse(args); err != nil {
		return err
	}
	base, err := url.Parse(*rawURL)
	if err != nil || base.Scheme != "http" || base.Host == "" {
		return fmt.Errorf("--url %q: want http://host:port/socket.io/ (https is not supported)", *rawURL)
	}
	if *secret == "" && *static == "" {
		return errors.New("no way to get tokens: set --secret (or SIDECAR_AUTH__JWT_SECRET) or --token")
	}
	srcs, err := parseSrc(*src)
	if err != nil {
		return err
	}
	if *n < 1 || *rate < 1 || *inflight < 1 || *hold <= 0 {
		return errors.New("-n, --connect-rate, --open-workers and --hold must be positive")
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
		if m := maxPollSessions(lim.Cur); *n > m {
			return fmt.Errorf("-n %d: at most %d sessions in one process under an open-file limit of %d (%d connections each)", *n, m, lim.Cur, pollFDsPerSession)
		}
	}
	if *metricsURL == "" {
		*metricsURL = "http://" + base.Host + "/metrics"
	}
	ctx, cancel := context.WithTimeout(ctx, *total)
	defer cancel()
	logf := newLogf(stderr)
	start := time.Now()
	res := pollResult{Kind: "poll", Machine: describeMachine(), ServerCmd: *label, ServerGo: *serverGo, ServerPID: *pid,
		URL: *rawURL, N: *n, ConnectRate: *rate, HoldS: hold.Seconds(), Errors: map[string]int{}, CloseReasons: map[string]int{}}
	hc := &http.Client{Timeout: 5 * time.Second}
	scrape := func() promMap {
		if *metricsURL == "-" {
			return nil
		}
		m, err := scrapeMetrics(ctx, hc, *metricsURL, pollMetrics)
		if err != nil {
			logf("metrics: %v", err)
			return nil
		}
		res.MetricsFrom = *metricsURL
		return m
	}
	pids := []int{os.Getpid()}
	if *pid > 0 {
		pids = append(pids, *pid)
	}
	if oc, quiet := waitQuiet(ctx, pids, *quietLimit, 5*time.Second, *quietWait); !quiet {
		logf("machine still busy (others use %.2f cores); measuring anyway", oc)
	}
	res.Before = scrape()
	if *pid > 0 {
		res.RSSBeforeKiB, _ = rssKiB(*pid)
	}
	hc.CloseIdleConnections() // the scrape's connection is not a session's

	tk := &tokens{secret: []byte(*secret), static: *static}
	var mint *minter
	var mintMu sync.Mutex
	if *static == "" {
		mint = newMinter([]byte(*secret))
	}
	token := func(user string) (string, error) {
		if mint == nil {
			return tk.get(ctx, user)
		}
		mintMu.Lock()
		defer mintMu.Unlock()
		return mint.token(user, time.Now()), nil
	}

	// Each session: connect (with retries), report, then keep alive until
	// stop; a session that ends before stop is counted closed.
	stop, stopAll := context.WithCancel(ctx)
	defer stopAll()
	var (
		stopping               atomic.Bool
		mu                     sync.Mutex
		connectMs              []float64
		lastConnected          time.Time
		connected, failed, tri atomic.Int64
		closed                 atomic.Int64
		pings                  atomic.Int64
		wg                     sync.WaitGroup
		ready                  = make(chan struct{}, *n)
	)
	slots := make(chan struct{}, *inflight)
	interval := time.Second / time.Duration(*rate)
	t0 := time.Now()
	logf("poll: opening %d sessions at %d/s, %d at once, against %s", *n, *rate, *inflight, pollURL(base, "", ""))
	go func() {
		for i := range *n {
			if d := time.Until(t0.Add(time.Duration(i) * interval)); d > 0 {
				sleepCtx(stop, d)
			}
			select {
			case slots <- struct{}{}:
			case <-stop.Done():
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				user := fmt.Sprintf("%s%d", *prefix, i)
				ip := srcs[i%len(srcs)]
				var s *pollSession
				var err error
				for try := 0; try <= *retries; try++ {
					if try > 0 {
						tri.Add(1)
						sleepCtx(stop, time.Duration(try)*200*time.Millisecond)
					}
					if s != nil {
						s.close()
					}
					s = newPollSession(base, ip, *timeout)
					c0 := time.Now()
					var tok string
					if tok, err = token(user); err == nil {
						err = s.connect(stop, tok)
					}
					if err == nil {
						mu.Lock()
						connectMs = append(connectMs, ms(time.Since(c0)))
						lastConnected = time.Now()
						mu.Unlock()
						break
					}
					if stop.Err() != nil {
						break
					}
				}
				<-slots
				if err != nil {
					s.close()
					if !stopping.Load() {
						failed.Add(1)
						mu.Lock()
						res.Errors[pollKind(err)]++
						if res.FirstError == "" {
							res.FirstError = err.Error()
						}
						mu.Unlock()
					}
					ready <- struct{}{}
					return
				}
				connected.Add(1)
				ready <- struct{}{}
				err = s.keepAlive(stop, &pings)
				s.close()
				if !stopping.Load() {
					closed.Add(1)
					k := "ended"
					if err != nil {
						k = pollKind(err)
					}
					mu.Lock()
					res.CloseReasons[k]++
					mu.Unlock()
				}
			}()
		}
	}()

	// Wait for every session to connect or fail.
	deadline := time.NewTimer(*readyWait)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	got := 0
wait:
	for got < *n {
		select {
		case <-ready:
			got++
		case <-tick.C:
			logf("poll: %d connected, %d failed", connected.Load(), failed.Load())
		case <-deadline.C:
			res.Notes = append(res.Notes, fmt.Sprintf("ready-wait %v passed with %d of %d settled", *readyWait, got, *n))
			break wait
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	mu.Lock()
	if !lastConnected.IsZero() {
		res.ConnectS = round3(lastConnected.Sub(t0).Seconds())
	}
	res.ConnectMs = quantOf(connectMs)
	mu.Unlock()
	logf("poll: %d connected, %d failed %v in %.1f s; connect p50 %.1f p99 %.1f ms",
		connected.Load(), failed.Load(), res.Errors, res.ConnectS, res.ConnectMs.P50, res.ConnectMs.P99)

	sleepCtx(ctx, *settle)
	res.MetricsConnected = scrape()
	hc.CloseIdleConnections()
	if *pid > 0 {
		res.RSSConnectedKiB, _ = rssKiB(*pid)
	}
	// The hold: sample RSS; each session answers its pings.
	logf("poll: holding for %v", *hold)
	meter := newCPUMeter(pids)
	s0, self0 := serverCPU(*pid), serverCPU(os.Getpid())
	h0 := time.Now()
	for time.Since(h0) < *hold && ctx.Err() == nil {
		sleepCtx(ctx, min(5*time.Second, *hold-time.Since(h0)))
		if *pid > 0 {
			if r, err := rssKiB(*pid); err == nil {
				res.RSSSamplesKiB = append(res.RSSSamplesKiB, r)
			}
		}
	}
	held := time.Since(h0).Seconds()
	res.ServerCPUS = round3((serverCPU(*pid) - s0).Seconds())
	res.ServerCores = round3(res.ServerCPUS / held)
	res.ClientCores = round3((serverCPU(os.Getpid()) - self0).Seconds() / held)
	res.OtherCores = round3(meter.otherCores())
	res.After = scrape()
	hc.CloseIdleConnections()
	if *pid > 0 {
		res.RSSAfterKiB, _ = rssKiB(*pid)
		res.RSSPeakKiB, _ = statusKiB(*pid, "VmHWM:")
	}
	res.ClientRSSKiB, _ = rssKiB(os.Getpid())
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		res.ClientFDs = len(ents)
	}
	stopping.Store(true) // from here on, sessions that end are not counted
	mu.Lock()
	res.Closed = closed.Load()
	res.Alive = connected.Load() - res.Closed
	mu.Unlock()

	res.Connected, res.Failed, res.Retries = connected.Load(), failed.Load(), tri.Load()
	if res.Alive > 0 && res.RSSAfterKiB > 0 {
		res.PerSessionKiB = round3(float64(res.RSSAfterKiB-res.RSSBeforeKiB) / float64(res.Alive))
	}
	if res.Connected > 0 && res.RSSConnectedKiB > 0 {
		res.PerSessionConnectedKiB = round3(float64(res.RSSConnectedKiB-res.RSSBeforeKiB) / float64(res.Connected))
	}
	if res.Before != nil && res.After != nil && res.Alive > 0 {
		res.GoroutinesPerSession = round3((res.After["go_goroutines"] - res.Before["go_goroutines"]) / float64(res.Alive))
		res.FDsPerSession = round3((res.After["process_open_fds"] - res.Before["process_open_fds"]) / float64(res.Alive))
	}
	logf("poll: held %.0f s: %d alive, %d closed %v, %d pings answered; server RSS %d -> %d -> %d KiB: %.2f KiB per session (%.2f right after connecting)",
		held, res.Alive, res.Closed, res.CloseReasons, pings.Load(), res.RSSBeforeKiB, res.RSSConnectedKiB, res.RSSAfterKiB,
		res.PerSessionKiB, res.PerSessionConnectedKiB)

	// Stop: the outstanding GETs are abandoned, their connections closed.
	stopAll()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		res.Notes = append(res.Notes, "some sessions had not stopped 30 s after the hold")
	}
	res.Pings = pings.Load()
	res.TookS = round3(time.Since(start).Seconds())
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(&res)
}

// writePollSummary prints a `loadgen poll` result as markdown.
func writePollSummary(w io.Writer, r *pollResult) {
	m := r.Machine
	fmt.Fprintf(w, "#### Socket.IO long-polling sessions: `%s`, %d sessions, %s\n\n", r.ServerCmd, r.N, m.Date)
	fmt.Fprintf(w, "%d CPUs (%s), Linux %s, %s RAM, open files %s; loadgen %s", m.NProc, m.CPU, m.Kernel, m.MemTotal, m.NoFile, m.LoadgenGo)
	if r.ServerGo != "" {
		fmt.Fprintf(w, ", server %s", r.ServerGo)
	}
	fmt.Fprintf(w, "; opened at %d/s, held %gs\n\n", r.ConnectRate, r.HoldS)
	fmt.Fprint(w, "| measure | value |\n|---|---|\n")
	fmt.Fprintf(w, "| sessions connected / failed (retries) | %d / %d%s (%d), in %.1f s; connect p50 %.1f, p99 %.1f, max %.1f ms |\n",
		r.Connected, r.Failed, errList(r.Errors), r.Retries, r.ConnectS, r.ConnectMs.P50, r.ConnectMs.P99, r.ConnectMs.Max)
	fmt.Fprintf(w, "| closed during the hold / alive at its end | %d%s / %d |\n", r.Closed, errList(r.CloseReasons), r.Alive)
	fmt.Fprintf(w, "| pings answered | %d |\n", r.Pings)
	fmt.Fprintf(w, "| server RSS before → connected → end of hold | %.1f → %.1f → %.1f MiB (peak %.1f) |\n",
		float64(r.RSSBeforeKiB)/1024, float64(r.RSSConnectedKiB)/1024, float64(r.RSSAfterKiB)/1024, float64(r.RSSPeakKiB)/1024)
	fmt.Fprintf(w, "| **server RSS per session**, end of hold (two HTTP connections each) | **%.2f KiB** |\n", r.PerSessionKiB)
	fmt.Fprintf(w, "| the same right after connecting (no pong yet: one connection) | %.2f KiB |\n", r.PerSessionConnectedKiB)
	if r.After != nil && r.Before != nil {
		fmt.Fprintf(w, "| server goroutines before → end of hold | %.0f → %.0f (%.2f per session) |\n",
			r.Before["go_goroutines"], r.After["go_goroutines"], r.GoroutinesPerSession)
		fmt.Fprintf(w, "| server open files before → end of hold | %.0f → %.0f (%.2f per session) |\n",
			r.Before["process_open_fds"], r.After["process_open_fds"], r.FDsPerSession)
		fmt.Fprintf(w, "| server heap in use / stacks in use, end of hold | %.1f / %.1f MiB (before: %.1f / %.1f) |\n",
			r.After["go_memstats_heap_inuse_bytes"]/(1<<20), r.After["go_memstats_stack_inuse_bytes"]/(1<<20),
			r.Before["go_memstats_heap_inuse_bytes"]/(1<<20), r.Before["go_memstats_stack_inuse_bytes"]/(1<<20))
		fmt.Fprintf(w, "| server says connected | %.0f |\n", r.After["sidecar_connections"])
	}
	fmt.Fprintf(w, "| server CPU over the hold | %.3f cores; client %.3f, others %.2f |\n", r.ServerCores, r.ClientCores, r.OtherCores)
	fmt.Fprintf(w, "| client RSS / open files | %.1f MiB / %d |\n\n", float64(r.ClientRSSKiB)/1024, r.ClientFDs)
	if len(r.Notes) > 0 {
		fmt.Fprintf(w, "Notes: %s.\n\n", strings.Join(r.Notes, "; "))
	}
}
