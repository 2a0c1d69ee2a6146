//go:build linux

package main

import (
	"strings"
	"testing"
)

const runCluster = `{` + testMachine + `,"server_cmd":"sidecar (3 nodes)","n":300,
"connect":{"open":300,"open_per_node":[100,100,100],"took_ms":200},"server_reported_conns":300,
"server_rss":{"before_kib":3000,"after_kib":6000,"per_conn_kib":10},
"server_idle":{"node_cores":[0.001,0.002,0.003],"cores":0.006},
"latency":{"conns":300,"broadcasts":3,"post_to_last_ms":{"p50":6,"p99":9,"max":9},"delivery_ms":{"p50":3,"p99":8,"max":9},
 "server_cpu_us_per_msg":20,"redis_cpu_s":0.01,"redis_cpu_us_per_broadcast":3333.3,"post_to":"rr",
 "nodes":[{"conns":100,"posts":1,"delivered":300,"post_to_last_ms":{"p50":5,"p99":7,"max":7},"complete_broadcasts":3,"server_cpu_s":0.01,"server_cpu_us_per_msg":33.3},
          {"conns":100,"posts":1,"delivered":300,"post_to_last_ms":{"p50":5.5,"p99":8,"max":8},"complete_broadcasts":3},
          {"conns":100,"posts":1,"delivered":299,"missing":1,"post_to_last_ms":{"p50":6,"p99":9,"max":9},"complete_broadcasts":2}]},
"sustain":[{"rate_hz":2,"conns":300,"delivered_per_s":600,"nodes":[{"delivered":10},{"delivered":11},{"delivered":12,"missing":1}]}],
"urls":["ws://a/ws","ws://b/ws","ws://c/ws"],"server_pids":[1,2,3],"redis_pids":[9],"post_to":"rr",
"nodes":[{"url":"ws://a/ws","pid":1,"conns":100,"server_reported_conns":100,"rss":{"before_kib":1000,"after_kib":2000,"per_conn_kib":10.24,"peak_kib":2048},"idle_cores":0.001},
         {"url":"ws://b/ws","pid":2,"conns":100,"server_reported_conns":100,"rss":{"before_kib":1000,"after_kib":2000,"per_conn_kib":10}},
         {"url":"ws://c/ws","pid":3,"conns":100,"server_reported_conns":99,"rss":{"before_kib":1000,"after_kib":2000,"per_conn_kib":9.5,"after_traffic_kib":2100,"per_conn_after_traffic_kib":11},"idle_cores":0.003}]}`

const runOne = `{` + testMachine + `,"server_cmd":"sidecar (one node)","n":100,"connect":{"open":100},
"server_rss":{"per_conn_kib":8},
"latency":{"conns":100,"broadcasts":3,"post_to_last_ms":{"p50":3,"p99":4,"max":4},"delivery_ms":{"p50":2,"p99":4},"server_cpu_us_per_msg":10},
"sustain":[{"rate_hz":2,"conns":100,"delivered_per_s":200}]}`

func summarize(t *testing.T, files ...string) string {
	t.Helper()
	var names []string
	for i, c := range files {
		if strings.HasPrefix(c, "--") {
			names = append(names, c)
			continue
		}
		names = append(names, writeTemp(t, "r"+string(rune('0'+i))+".json", c))
	}
	var out strings.Builder
	if err := runSummarize(names, &out); err != nil {
		t.Fatalf("runSummarize: %v", err)
	}
	return out.String()
}

func wantLines(t *testing.T, got string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(got, l) {
			t.Errorf("output lacks %q:\n%s", l, got)
		}
	}
}

func TestSummarizeClusterRun(t *testing.T) {
	got := summarize(t, runCluster)
	wantLines(t, got,
		"#### `sidecar (3 nodes)`, 300 connections over 3 nodes (broadcasts POSTed round-robin), 2025-01-02\n",
		"| node 0 (`ws://a/ws`, pid 1) | 100 open (server says 100); RSS 1.0 → 2.0 MiB, **10.2 KiB per idle connection**; peak 2.0 MiB; idle 0.001 cores |\n",
		"| node 2 (`ws://c/ws`, pid 3) | 100 open (server says 99); RSS 1.0 → 2.0 MiB, **9.5 KiB per idle connection**, 11.0 KiB after the latency broadcasts; peak 0.0 MiB; idle 0.003 cores |\n",
		"| **POST → last of 300 clients**, 3 broadcasts | **median 6.0 ms**, p99 9.0, max 9.0 |\n",
		"| POST → last of node 2's 100 clients | median 6.0 ms, p99 9.0, max 9.0; 1 of the POSTs went to it; complete 2; missing 1; server 0.00 µs per message it delivered (0.00 s) |\n",
		"| broker (redis-server) CPU per broadcast | 3333.3 µs over the POST→last windows (0.010 s) |\n",
		"| sustained 2/s, by node | delivered 10 / 11 / 12; missing 0 / 0 / 1; server CPU 0.00 / 0.00 / 0.00 s |\n",
	)
	// A one-node result has none of it.
	one := summarize(t, runOne)
	for _, s := range []string{"node 0", "over 3 nodes", "by node", "broker"} {
		if strings.Contains(one, s) {
			t.Errorf("one-node summary has %q:\n%s", s, one)
		}
	}
}

func TestSummarizeCompare(t *testing.T) {
	got := summarize(t, "--compare", runOne, runCluster)
	wantLines(t, got,
		"#### 3 nodes with 300 clients against one node with 100\n",
		"| server RSS per idle connection | 8.0 KiB | 10.0 KiB (by node 10.2 / 10.0 / 9.5) | 1.25× |\n",
		"| **POST → last client, median** | **3.0 ms** | **6.0 ms** (each node's last: 5.0 / 5.5 / 6.0 ms) | 2.00× |\n",
		"| server CPU per delivered message (all nodes) | 10.00 µs | 20.00 µs, broker 3333.3 µs per broadcast | 2.00× |\n",
		"| sustained 2 broadcasts/s: delivered/s (missing) | 200 (0) | 600 (0) | 3.00× |\n",
		"Time to the last delivery of a broadcast: **6.0 ms** over 3 nodes holding 300 clients against **3.0 ms** on one node holding 100",
	)
	noBroker := strings.Replace(runCluster, `"redis_cpu_s":0.01,`, ``, 1)
	wantLines(t, summarize(t, "--compare", runOne, noBroker), "| 20.00 µs, broker under one 10 ms tick in all | 2.00× |")
	var out strings.Builder
	if err := runSummarize([]string{"--compare", "x.json"}, &out); err == nil {
		t.Error("--compare with one file: no error")
	}
	wh := writeTemp(t, "w.json", webhooksBare)
	if err := runSummarize([]string{"--compare", wh, wh}, &out); err == nil || !strings.Contains(err.Error(), "not a `loadgen run` one") {
		t.Errorf("--compare of webhooks results: %v", err)
	}
}

const xlatencyFull = `{"kind":"xlatency",` + testMachine + `,"server_cmd":"sidecar","urls":["ws://a/ws","ws://b/ws"],"from":0,"to":1,
"endpoint":"events","n":100,"samples":400,"rate_hz":100,"warmup_ms":34.5,"other_cores":0.1,"clean":true,
"cross":{"node":0,"accepted":200,"delivered":200,"post_to_client_ms":{"p50":1.038,"p90":1.2,"p99":1.855,"p999":3.303,"max":3.303},"post_ms":{"p50":0.77,"p99":1.5}},
"local":{"node":1,"accepted":200,"delivered":200,"post_to_client_ms":{"p50":0.658,"p90":0.8,"p99":1.915,"p999":2.829,"max":2.829},"post_ms":{"p50":0.8,"p99":1.45}},
"added_ms":{"p50":0.38,"p99":-0.06,"p999":0.474}}`

func TestSummarizeXLatency(t *testing.T) {
	got := summarize(t, xlatencyFull)
	wantLines(t, got,
		"#### cross-node latency of a targeted event: `sidecar`, 2 nodes, 2025-01-02\n",
		"100 clients on node 1; 400 events at 100/s through `events`, alternating",
		"| node 0 (cross) | 200 | 200 | 0 / 0 | 1.038 / 1.200 / 1.855 / 3.303 / 3.303 | 0.770 / 1.500 |\n",
		"| node 1 (local) | 200 | 200 | 0 / 0 | 0.658 / 0.800 / 1.915 / 2.829 / 2.829 | 0.800 / 1.450 |\n",
		"**p50 0.380 ms, p99 -0.060 ms, p999 0.474 ms**. Warm-up",
	)
	if strings.Contains(got, "not every event") {
		t.Error("a clean run is said not to be")
	}
	unclean := strings.Replace(xlatencyFull, `"clean":true`, `"clean":false`, 1)
	wantLines(t, summarize(t, unclean), "**not every event was accepted and delivered exactly once**")
}

const webhooksCluster = `{"kind":"webhooks",` + testMachine + `,"server_cmd":"sidecar","n":300,"http_conns":64,
"urls":["ws://a/ws","ws://b/ws","ws://c/ws"],"post_to":"rr","resend":0.05,
"rates":[{"rate_hz":300,"accepted_per_s":297,"local":400,"cross":800,"resent":60,"resent_duplicate":60,"redis_cpu_us_per_webhook":166.7,
 "nodes":[{"posted":400,"accepted":400,"conns":100,"delivered":400,"server_cpu_us_per_accepted_webhook":950},
          {"posted":400,"accepted":400,"conns":100,"delivered":400,"server_cpu_us_per_accepted_webhook":1150},
          {"posted":400,"accepted":400,"conns":100,"delivered":399,"server_cpu_us_per_accepted_webhook":1100}]},
 {"rate_hz":600,"missing":1,"duplicates":2,"resent":10,"resent_duplicate":8,"resent_accepted":1,"resent_failed":1,"nodes":[{},{},{}]}],
"best_rate":300,"best_post_to_client_p99_ms":6.9}`

func TestSummarizeWebhooksCluster(t *testing.T) {
	got := summarize(t, webhooksCluster)
	wantLines(t, got,
		"3 nodes (ws://a/ws, ws://b/ws, ws://c/ws), webhooks POSTed round-robin; 0.05 of the accepted ones POSTed again to the next node, same webhook-id.\n",
		"| 300 | 400 / 800 | 400 / 400 / 400 | 400 / 400 / 400 | 400 / 400 / 399 (100 / 100 / 100) | 950.0 / 1150.0 / 1100.0 | 60 / 0 / 0 | 166.7 | yes |\n",
		"| 600 | 0 / 0 | 0 / 0 / 0 | 0 / 0 / 0 | 0 / 0 / 0 (0 / 0 / 0) | 0.0 / 0.0 / 0.0 | 8 / 1 / 1 | 0.0 | **no**: missing 1, dup 2, unexpected 0, misrouted 0 |\n",
	)
	if strings.Contains(summarize(t, webhooksFull), "nodes (") {
		t.Error("a one-node webhooks summary has the node table")
	}
}

func TestPostToWords(t *testing.T) {
	for in, want := range map[string]string{"": "round-robin", "rr": "round-robin", "local": "to the recipient's node",
		"cross": "to the node after the recipient's", "node 1": "to node 1"} {
		if got := postToWords(in); got != want {
			t.Errorf("postToWords(%q) = %q, want %q", in, got, want)
		}
	}
}
