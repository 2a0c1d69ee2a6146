//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
)

// runSummarize prints each `loadgen run` result file as a markdown block.
func runSummarize(files []string, stdout io.Writer) error {
	if len(files) > 0 && (files[0] == "--compare" || files[0] == "-compare") {
		if len(files) != 3 {
			return errors.New("summarize --compare: want ONE-NODE.json CLUSTER.json")
		}
		return runCompare(files[1], files[2], stdout)
	}
	if len(files) == 0 {
		return errors.New("summarize: no result files")
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		switch summaryKind(b) {
		case "webhooks":
			var r webhooksResult
			if err := json.Unmarshal(b, &r); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			writeWebhooksSummary(stdout, &r)
			continue
		case "churn":
			var r churnResult
			if err := json.Unmarshal(b, &r); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			writeChurnSummary(stdout, &r)
			continue
		case "poll":
			var r pollResult
			if err := json.Unmarshal(b, &r); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			writePollSummary(stdout, &r)
			continue
		case "xlatency":
			var r xlatencyResult
			if err := json.Unmarshal(b, &r); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			writeXLatencySummary(stdout, &r)
			continue
		case "replay":
			var r replayResult
			if err := json.Unmarshal(b, &r); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			writeReplaySummary(stdout, &r)
			continue
		}
		var r benchResult
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		writeSummary(stdout, &r)
	}
	return nil
}

func writeSummary(w io.Writer, r *benchResult) {
	m := r.Machine
	if len(r.Nodes) > 1 {
		fmt.Fprintf(w, "#### `%s`, %d connections over %d nodes (broadcasts POSTed %s), %s\n\n", r.ServerCmd, r.N, len(r.Nodes), postToWords(r.PostTo), m.Date)
	} else {
		fmt.Fprintf(w, "#### `%s`, %d connections, %s\n\n", r.ServerCmd, r.N, m.Date)
	}
	fmt.Fprintf(w, "%d CPUs (%s), Linux %s, %s RAM, open files %s; loadgen %s", m.NProc, m.CPU, m.Kernel, m.MemTotal, m.NoFile, m.LoadgenGo)
	if r.ServerGo != "" {
		fmt.Fprintf(w, ", server %s", r.ServerGo)
	}
	fmt.Fprint(w, "\n\n| measure | value |\n|---|---|\n")
	row := func(k, f string, a ...any) { fmt.Fprintf(w, "| %s | %s |\n", k, fmt.Sprintf(f, a...)) }
	c := r.Connect
	row("connections open / failed (retries)", "%d / %d (%d), in %.1f s%s", c.Open, c.Failed, c.Retried, float64(c.TookMs)/1000, errList(c.Errors))
	row("server says connected", "%d", r.ServerConns)
	row("server RSS before → after", "%.1f → %.1f MiB", float64(r.RSS.BeforeKiB)/1024, float64(r.RSS.AfterKiB)/1024)
	row("**server RSS per idle connection**", "**%.1f KiB**", r.RSS.PerConnKiB)
	if r.RSS.AfterTrafficKiB > 0 {
		row("server RSS per connection, idle again after the latency broadcasts", "%.1f KiB (RSS %.1f MiB)", r.RSS.PerConnAfterTraffic, float64(r.RSS.AfterTrafficKiB)/1024)
	}
	row("server peak RSS over the run (VmHWM)", "%.1f MiB", float64(r.RSS.PeakKiB)/1024)
	row("kernel slab per socket (machine-wide, both ends)", "%.1f KiB", r.Kernel.PerSocketKiB)
	row("client RSS (all workers)", "%.1f MiB", float64(r.ClientRSS)/1024)
	if i := r.Idle; i != nil {
		row("server CPU while idle (pings, timers)", "%.3f cores = %.2f µs per connection per second (%.0f s window, %d pings answered)", i.Cores, i.UsPerConnPerS, i.WindowS, i.ClientPings)
	}
	writeNodeRows(row, r)
	if l := r.Latency; l != nil && l.PostToLastMs != nil {
		row(fmt.Sprintf("**POST → last of %d clients**, %d broadcasts", l.Conns, l.Broadcasts), "**median %.1f ms**, p99 %.1f, max %.1f", l.PostToLastMs.P50, l.PostToLastMs.P99, l.PostToLastMs.Max)
		writeLatencyNodeRows(row, l)
		row("POST → each client (all deliveries)", "p50 %.1f ms, p99 %.1f, max %.1f", l.DeliveryMs.P50, l.DeliveryMs.P99, l.DeliveryMs.Max)
		row("POST round trip", "p50 %.1f ms, max %.1f", l.PostMs.P50, l.PostMs.Max)
		row("**server CPU per delivered message**", "**%.2f µs** over the POST→last windows (whole phase: %.2f µs, %.2f s for %d frames)", l.ServerCPUUsPerMsg, l.ServerCPUUsPerMsgRaw, l.ServerCPUS, l.Delivered)
		row("client CPU per delivered message", "%.2f µs", l.ClientCPUUsPerMsg)
		row("missing / late / closed", "%d / %d / %d%s", l.Missing, l.Late, l.ClosedConns, disturbed(l))
	}
	for _, s := range r.Sustain {
		row(fmt.Sprintf("**sustained %g broadcasts/s** to %d for %.0f s", s.RateHz, s.Conns, s.WallS),
			"**%.0f delivered/s** (offered %.0f); missing %d, late (>%.0f ms) %d, closed %d; POSTs skipped %d, failed %d; delivery p50 %.1f ms, p99 %.1f; server %.2f µs/msg (raw %.2f), %.2f cores; client %.2f µs/msg%s",
			s.DeliveredPerS, s.RateHz*float64(s.Conns), s.Missing, s.LateMs, s.Late, s.ClosedConns, s.Skipped, s.PostErrors,
			s.DeliveryMs.P50, s.DeliveryMs.P99, s.ServerCPUUsPerMsg, s.ServerCPUUsPerMsgRaw, s.ServerCores, s.ClientCPUUsPerMsg, disturbed(&s))
		writeSustainNodeRow(row, &s)
	}
	row("pings answered; client events per epoll wake-up", "%d; %.1f", r.Pings, r.ClientBatch)
	row("loopback write floor (CPU of one 160-byte TCP write here)", "%.2f µs", r.WriteFloor)
	fmt.Fprintln(w)
}

func disturbed(p *phaseResult) string {
	s := fmt.Sprintf("; other processes %.2f cores", p.OtherCores)
	if p.Attempts > 1 {
		s += fmt.Sprintf(" (best of %d tries)", p.Attempts)
	}
	return s
}

func errList(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) { // stable output
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[k]))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}
