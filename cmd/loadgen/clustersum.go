//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
)

// postToWords says where --post-to sent the POSTs, for a heading.
func postToWords(p string) string {
	switch p {
	case "", "rr":
		return "round-robin"
	case "local":
		return "to the recipient's node"
	case "cross":
		return "to the node after the recipient's"
	}
	return "to " + p
}

// joinf formats each of v with format and joins them with " / ".
func joinf[T any](format string, v []T) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(parts, " / ")
}

// writeNodeRows adds a cluster run's per-node rows: connections, RSS and
// idle CPU of each server process.
func writeNodeRows(row func(k, f string, a ...any), r *benchResult) {
	if len(r.Nodes) < 2 {
		return
	}
	for i, nd := range r.Nodes {
		line := fmt.Sprintf("%d open (server says %d); RSS %.1f → %.1f MiB, **%.1f KiB per idle connection**",
			nd.Conns, nd.ServerConns, float64(nd.RSS.BeforeKiB)/1024, float64(nd.RSS.AfterKiB)/1024, nd.RSS.PerConnKiB)
		if nd.RSS.AfterTrafficKiB > 0 {
			line += fmt.Sprintf(", %.1f KiB after the latency broadcasts", nd.RSS.PerConnAfterTraffic)
		}
		line += fmt.Sprintf("; peak %.1f MiB", float64(nd.RSS.PeakKiB)/1024)
		if r.Idle != nil {
			line += fmt.Sprintf("; idle %.3f cores", nd.IdleCores)
		}
		row(fmt.Sprintf("node %d (`%s`, pid %d)", i, nd.URL, nd.PID), "%s", line)
	}
}

// writeLatencyNodeRows adds a cluster latency phase's per-node rows.
func writeLatencyNodeRows(row func(k, f string, a ...any), l *phaseResult) {
	if len(l.Nodes) < 2 {
		return
	}
	for i, nd := range l.Nodes {
		if nd.PostToLastMs == nil {
			continue
		}
		row(fmt.Sprintf("POST → last of node %d's %d clients", i, nd.Conns),
			"median %.1f ms, p99 %.1f, max %.1f; %d of the POSTs went to it; complete %d; missing %d; server %.2f µs per message it delivered (%.2f s)",
			nd.PostToLastMs.P50, nd.PostToLastMs.P99, nd.PostToLastMs.Max, nd.Posts, nd.Complete, nd.Missing, nd.ServerCPUUsPerMsg, nd.ServerCPUS)
	}
	if l.RedisCPUS > 0 || l.RedisUsPerPost > 0 {
		row("broker (redis-server) CPU per broadcast", "%.1f µs over the POST→last windows (%.3f s)", l.RedisUsPerPost, l.RedisCPUS)
	}
}

// writeSustainNodeRow adds a cluster sustained phase's per-node row.
func writeSustainNodeRow(row func(k, f string, a ...any), s *phaseResult) {
	if len(s.Nodes) < 2 {
		return
	}
	var dl, miss []int64
	var cpu []float64
	for _, nd := range s.Nodes {
		dl, miss, cpu = append(dl, nd.Delivered), append(miss, nd.Missing), append(cpu, nd.ServerCPUS)
	}
	line := fmt.Sprintf("delivered %s; missing %s; server CPU %s s", joinf("%d", dl), joinf("%d", miss), joinf("%.2f", cpu))
	if s.RedisCPUS > 0 {
		line += fmt.Sprintf("; broker %.2f s (%.1f µs per broadcast)", s.RedisCPUS, s.RedisUsPerPost)
	}
	row(fmt.Sprintf("sustained %g/s, by node", s.RateHz), "%s", line)
}

// writeWebhookNodes adds a cluster webhooks result's per-node table.
func writeWebhookNodes(w io.Writer, r *webhooksResult) {
	if len(r.URLs) < 2 {
		return
	}
	fmt.Fprintf(w, "%d nodes (%s), webhooks POSTed %s", len(r.URLs), strings.Join(r.URLs, ", "), postToWords(r.PostTo))
	if r.Resend > 0 {
		fmt.Fprintf(w, "; %g of the accepted ones POSTed again to the next node, same webhook-id", r.Resend)
	}
	fmt.Fprint(w, ".\n\n| rate/s | to the recipient's node / another | POSTed by node | accepted by node | delivered by node (clients) | server µs per webhook accepted, by node | resent: duplicate / accepted again / failed | broker µs per webhook | exactly once |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range r.Rates {
		var posted, acc, conns []int
		var dl []int64
		var cpu []float64
		for _, nd := range s.Nodes {
			posted, acc, conns = append(posted, nd.Posted), append(acc, nd.Accepted), append(conns, nd.Conns)
			dl, cpu = append(dl, nd.Delivered), append(cpu, nd.CPUUsPerWh)
		}
		once := "yes"
		if s.Missing > 0 || s.Duplicates > 0 || s.Unexpected > 0 || s.Misrouted > 0 || s.ResentAccepted > 0 {
			once = fmt.Sprintf("**no**: missing %d, dup %d, unexpected %d, misrouted %d", s.Missing, s.Duplicates, s.Unexpected, s.Misrouted)
		}
		fmt.Fprintf(w, "| %g | %d / %d | %s | %s | %s (%s) | %s | %d / %d / %d | %.1f | %s |\n",
			s.RateHz, s.Local, s.Cross, joinf("%d", posted), joinf("%d", acc), joinf("%d", dl), joinf("%d", conns), joinf("%.1f", cpu),
			s.ResentDuplicate, s.ResentAccepted, s.ResentFailed, s.RedisUsPerWh, once)
	}
	fmt.Fprintln(w)
}

// runCompare prints a cluster `run` beside a one-node `run` (the baseline
// the cluster is compared with: one node holding a node's share of the
// clients).
func runCompare(oneFile, clusterFile string, w io.Writer) error {
	var one, cl benchResult
	for _, x := range []struct {
		name string
		v    *benchResult
	}{{oneFile, &one}, {clusterFile, &cl}} {
		b, err := os.ReadFile(x.name)
		if err != nil {
			return err
		}
		if k := summaryKind(b); k != "" {
			return fmt.Errorf("%s: a %s result, not a `loadgen run` one", x.name, k)
		}
		if err := json.Unmarshal(b, x.v); err != nil {
			return fmt.Errorf("%s: %w", x.name, err)
		}
	}
	writeCompare(w, &one, &cl)
	return nil
}

func writeCompare(w io.Writer, one, cl *benchResult) {
	k := max(1, len(cl.Nodes))
	fmt.Fprintf(w, "#### %d nodes with %d clients against one node with %d\n\n", k, cl.Connect.Open, one.Connect.Open)
	fmt.Fprintf(w, "Cluster: `%s`, %s; one node: `%s`, %s.\n\n", cl.ServerCmd, cl.Machine.Date, one.ServerCmd, one.Machine.Date)
	fmt.Fprintf(w, "| measure | one node, %d clients | %d nodes, %d clients | cluster / one node |\n|---|---|---|---|\n", one.Connect.Open, k, cl.Connect.Open)
	row := func(name, a, b string, ratio float64) {
		r := "–"
		if ratio > 0 && !math.IsInf(ratio, 0) {
			r = fmt.Sprintf("%.2f×", ratio)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", name, a, b, r)
	}
	var perNode []float64
	for _, nd := range cl.Nodes {
		perNode = append(perNode, nd.RSS.PerConnKiB)
	}
	clRSS := fmt.Sprintf("%.1f KiB (by node %s)", cl.RSS.PerConnKiB, joinf("%.1f", perNode))
	row("server RSS per idle connection", fmt.Sprintf("%.1f KiB", one.RSS.PerConnKiB), clRSS, ratio(cl.RSS.PerConnKiB, one.RSS.PerConnKiB))
	ol, cll := one.Latency, cl.Latency
	if ol != nil && cll != nil && ol.PostToLastMs != nil && cll.PostToLastMs != nil {
		var med []float64
		for _, nd := range cll.Nodes {
			if nd.PostToLastMs != nil {
				med = append(med, nd.PostToLastMs.P50)
			}
		}
		row("**POST → last client, median**", fmt.Sprintf("**%.1f ms**", ol.PostToLastMs.P50),
			fmt.Sprintf("**%.1f ms** (each node's last: %s ms)", cll.PostToLastMs.P50, joinf("%.1f", med)), ratio(cll.PostToLastMs.P50, ol.PostToLastMs.P50))
		row("POST → last client, p99 / max", fmt.Sprintf("%.1f / %.1f ms", ol.PostToLastMs.P99, ol.PostToLastMs.Max),
			fmt.Sprintf("%.1f / %.1f ms", cll.PostToLastMs.P99, cll.PostToLastMs.Max), ratio(cll.PostToLastMs.P99, ol.PostToLastMs.P99))
		row("POST → each client, p50 / p99", fmt.Sprintf("%.1f / %.1f ms", ol.DeliveryMs.P50, ol.DeliveryMs.P99),
			fmt.Sprintf("%.1f / %.1f ms", cll.DeliveryMs.P50, cll.DeliveryMs.P99), ratio(cll.DeliveryMs.P99, ol.DeliveryMs.P99))
		broker := ""
		if cll.RedisCPUS > 0 {
			broker = fmt.Sprintf(", broker %.1f µs per broadcast", cll.RedisUsPerPost)
		} else if len(cl.RedisPIDs) > 0 {
			broker = ", broker under one 10 ms tick in all"
		}
		row("server CPU per delivered message (all nodes)", fmt.Sprintf("%.2f µs", ol.ServerCPUUsPerMsg),
			fmt.Sprintf("%.2f µs%s", cll.ServerCPUUsPerMsg, broker), ratio(cll.ServerCPUUsPerMsg, ol.ServerCPUUsPerMsg))
		row("missing / closed", fmt.Sprintf("%d / %d", ol.Missing, ol.ClosedConns), fmt.Sprintf("%d / %d", cll.Missing, cll.ClosedConns), 0)
		row("other processes during the latency phase", fmt.Sprintf("%.2f cores", ol.OtherCores), fmt.Sprintf("%.2f cores", cll.OtherCores), 0)
	}
	for _, cs := range cl.Sustain {
		for _, os1 := range one.Sustain {
			if os1.RateHz != cs.RateHz {
				continue
			}
			row(fmt.Sprintf("sustained %g broadcasts/s: delivered/s (missing)", cs.RateHz), fmt.Sprintf("%.0f (%d)", os1.DeliveredPerS, os1.Missing),
				fmt.Sprintf("%.0f (%d)", cs.DeliveredPerS, cs.Missing), ratio(cs.DeliveredPerS, os1.DeliveredPerS))
		}
	}
	fmt.Fprintln(w)
	if ol != nil && cll != nil && ol.PostToLastMs != nil && cll.PostToLastMs != nil {
		fmt.Fprintf(w, "Time to the last delivery of a broadcast: **%.1f ms** over %d nodes holding %d clients against **%.1f ms** on one node holding %d (median of %d and %d broadcasts).\n\n",
			cll.PostToLastMs.P50, k, cll.Conns, ol.PostToLastMs.P50, ol.Conns, cll.Broadcasts, ol.Broadcasts)
	}
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
