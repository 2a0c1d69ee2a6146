//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testMachine = `"machine":{"date":"2025-01-02","nproc":2,"cpu":"Test CPU","kernel":"6.1.0","mem_total":"4 GiB","nofile_limit":"20000","loadgen_go":"go1.26.8"}`

const runFull = `{` + testMachine + `,"server_cmd":"./sidecar","server_go":"go1.26.8","n":1000,
"connect":{"open":1000,"failed":2,"retried":3,"errors":{"timeout":2},"took_ms":1500},
"server_reported_conns":1000,"write_floor_us":1.5,"client_events_per_wakeup":12.34,
"server_rss":{"before_kib":10240,"after_kib":20480,"per_conn_kib":10.24,"peak_kib":30720,"after_traffic_kib":25600,"per_conn_after_traffic_kib":15.36},
"kernel_slab":{"per_socket_kib":3.3},"client_rss_kib":5120,
"server_idle":{"window_s":10,"cores":0.0123,"us_per_conn_per_s":12.3,"pings_answered":77},
"latency":{"conns":1000,"broadcasts":20,"post_to_last_ms":{"p50":5.26,"p99":9.5,"max":12},"delivery_ms":{"p50":3,"p99":8,"max":12},
 "post_ms":{"p50":1,"p99":2,"max":3},"server_cpu_us_per_msg":1.234,"server_cpu_us_per_msg_raw":2.5,"server_cpu_s":0.05,"delivered":20000,
 "client_cpu_us_per_msg":0.75,"missing":1,"late":2,"closed_conns":3,"other_cores":0.1,"attempts":2},
"sustain":[{"rate_hz":10,"conns":1000,"wall_s":30,"delivered_per_s":9999.6,"missing":4,"late_ms":100,"late":5,"closed_conns":6,"skipped":7,
 "post_errors":8,"delivery_ms":{"p50":1.5,"p99":2.5,"max":9},"server_cpu_us_per_msg":0.5,"server_cpu_us_per_msg_raw":0.75,"server_cores":0.25,
 "client_cpu_us_per_msg":0.126,"other_cores":0.5}],
"pings_answered":99}`

const runFullWant = "#### `./sidecar`, 1000 connections, 2025-01-02\n\n" +
	"2 CPUs (Test CPU), Linux 6.1.0, 4 GiB RAM, open files 20000; loadgen go1.26.8, server go1.26.8\n\n" +
	"| measure | value |\n|---|---|\n" +
	"| connections open / failed (retries) | 1000 / 2 (3), in 1.5 s (timeout: 2) |\n" +
	"| server says connected | 1000 |\n" +
	"| server RSS before → after | 10.0 → 20.0 MiB |\n" +
	"| **server RSS per idle connection** | **10.2 KiB** |\n" +
	"| server RSS per connection, idle again after the latency broadcasts | 15.4 KiB (RSS 25.0 MiB) |\n" +
	"| server peak RSS over the run (VmHWM) | 30.0 MiB |\n" +
	"| kernel slab per socket (machine-wide, both ends) | 3.3 KiB |\n" +
	"| client RSS (all workers) | 5.0 MiB |\n" +
	"| server CPU while idle (pings, timers) | 0.012 cores = 12.30 µs per connection per second (10 s window, 77 pings answered) |\n" +
	"| **POST → last of 1000 clients**, 20 broadcasts | **median 5.3 ms**, p99 9.5, max 12.0 |\n" +
	"| POST → each client (all deliveries) | p50 3.0 ms, p99 8.0, max 12.0 |\n" +
	"| POST round trip | p50 1.0 ms, max 3.0 |\n" +
	"| **server CPU per delivered message** | **1.23 µs** over the POST→last windows (whole phase: 2.50 µs, 0.05 s for 20000 frames) |\n" +
	"| client CPU per delivered message | 0.75 µs |\n" +
	"| missing / late / closed | 1 / 2 / 3; other processes 0.10 cores (best of 2 tries) |\n" +
	"| **sustained 10 broadcasts/s** to 1000 for 30 s | **10000 delivered/s** (offered 10000); missing 4, late (>100 ms) 5, closed 6; " +
	"POSTs skipped 7, failed 8; delivery p50 1.5 ms, p99 2.5; server 0.50 µs/msg (raw 0.75), 0.25 cores; client 0.13 µs/msg; other processes 0.50 cores |\n" +
	"| pings answered; client events per epoll wake-up | 99; 12.3 |\n" +
	"| loopback write floor (CPU of one 160-byte TCP write here) | 1.50 µs |\n\n"

// runBare has no optional part: no server Go version, no idle, latency
// or sustained phases, no RSS after traffic.
const runBare = `{` + testMachine + `,"server_cmd":"gorilla","n":10,"connect":{"open":10,"took_ms":20},"server_reported_conns":-1}`

const runBareWant = "#### `gorilla`, 10 connections, 2025-01-02\n\n" +
	"2 CPUs (Test CPU), Linux 6.1.0, 4 GiB RAM, open files 20000; loadgen go1.26.8\n\n" +
	"| measure | value |\n|---|---|\n" +
	"| connections open / failed (retries) | 10 / 0 (0), in 0.0 s |\n" +
	"| server says connected | -1 |\n" +
	"| server RSS before → after | 0.0 → 0.0 MiB |\n" +
	"| **server RSS per idle connection** | **0.0 KiB** |\n" +
	"| server peak RSS over the run (VmHWM) | 0.0 MiB |\n" +
	"| kernel slab per socket (machine-wide, both ends) | 0.0 KiB |\n" +
	"| client RSS (all workers) | 0.0 MiB |\n" +
	"| pings answered; client events per epoll wake-up | 0; 0.0 |\n" +
	"| loopback write floor (CPU of one 160-byte TCP write here) | 0.00 µs |\n\n"

const webhooksFull = `{"kind":"webhooks",` + testMachine + `,"server_cmd":"./sidecar","server_go":"go1.26.8","store":"/tmp/s.db (everysecond)",
"n":100,"http_conns":64,"client_batch_us":500,"server_idle":{"cores":0.0123},
"rates":[{"rate_hz":1000,"accepted_per_s":999.7,"skipped":1,"status_429":2,"other_failures":3,"post_ms":{"p50":1.26,"p99":4.01},
 "post_to_client_ms":{"p50":2.26,"p99":5.01,"max":7},"delivered_per_s":998.6,"missing":4,"duplicates":5,"server_cpu_us_per_webhook":12.34,
 "server_cores":0.5,"client_cores":0.75,"start_lag_ms":{"p99":0.26},"other_cores":0.1}],
"best_rate":1000,"best_post_to_client_p99_ms":5.01}`

const webhooksTable = "\n\n| rate/s | accepted/s | skipped | 429 | other | POST p50 / p99 ms | POST→client p50 / p99 / max ms | delivered/s | missing / dup | server µs per webhook (cores) | client cores (start lag p99 ms) | others |\n" +
	"|---|---|---|---|---|---|---|---|---|---|---|---|\n"

const webhooksFullWant = "#### signed webhooks through the rules: `./sidecar`, 100 clients, 2025-01-02\n\n" +
	"2 CPUs (Test CPU), Linux 6.1.0, 4 GiB RAM; loadgen go1.26.8, server go1.26.8; store /tmp/s.db (everysecond); " +
	"64 HTTP keep-alive connections; client receipt batching 500 µs; server idle 0.012 cores" + webhooksTable +
	"| 1000 | 1000 | 1 | 2 | 3 | 1.3 / 4.0 | 2.3 / 5.0 / 7.0 | 999 | 4 / 5 | 12.3 (0.50) | 0.75 (0.3) | 0.10 |\n" +
	"\nHighest rate with every webhook accepted (202) and delivered once: **1000/s**, POST→client p99 **5.0 ms**.\n\n"

const webhooksBare = `{"kind":" webhooks ",` + testMachine + `,"server_cmd":"gorilla","n":1,"http_conns":1,"rates":[]}`

const webhooksBareWant = "#### signed webhooks through the rules: `gorilla`, 1 clients, 2025-01-02\n\n" +
	"2 CPUs (Test CPU), Linux 6.1.0, 4 GiB RAM; loadgen go1.26.8; 1 HTTP keep-alive connections; client receipt batching 0 µs" + webhooksTable +
	"\nNo rate had every webhook accepted and delivered once.\n\n"

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRunSummarize(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files []string
		want  string
	}{
		{"run, every part", []string{runFull}, runFullWant},
		{"run, bare", []string{runBare}, runBareWant},
		{"webhooks, every part", []string{webhooksFull}, webhooksFullWant},
		{"webhooks, nothing clean", []string{webhooksBare}, webhooksBareWant},
		{"one block per file, in order", []string{runBare, webhooksBare, runFull}, runBareWant + webhooksBareWant + runFullWant},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var names []string
			for i, c := range tc.files {
				names = append(names, writeTemp(t, "r"+string(rune('0'+i))+".json", c))
			}
			var out strings.Builder
			if err := runSummarize(names, &out); err != nil {
				t.Fatalf("runSummarize: %v", err)
			}
			if got := out.String(); got != tc.want {
				t.Errorf("runSummarize output:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func TestRunSummarizeErrors(t *testing.T) {
	var out strings.Builder
	if err := runSummarize(nil, &out); err == nil {
		t.Error("runSummarize(no files) = nil, want an error")
	}
	missing := filepath.Join(t.TempDir(), "missing.json")
	if err := runSummarize([]string{missing}, &out); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("runSummarize(missing file) = %v, want fs.ErrNotExist", err)
	}
	for _, content := range []string{`{"n":`, `{"kind":"webhooks","n":"ten"}`, `[1]`} {
		bad := writeTemp(t, "bad.json", content)
		err := runSummarize([]string{bad}, &out)
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		if !errors.As(err, &se) && !errors.As(err, &te) || !strings.Contains(err.Error(), bad) {
			t.Errorf("runSummarize(%s) = %v, want a JSON error naming the file", content, err)
		}
	}
	if out.Len() != 0 {
		t.Errorf("failed runs wrote %q", out.String())
	}
}

func TestSummaryKind(t *testing.T) {
	for in, want := range map[string]string{
		`{"kind":"webhooks"}`:      "webhooks",
		`{"kind":" webhooks\n"}`:   "webhooks",
		`{"kind":"latency"}`:       "latency",
		`{"n":1}`:                  "",
		`{"kind":1}`:               "",
		`not json`:                 "",
		`{"kind":"webhooks","n":}`: "", // invalid JSON: a `run` decode reports it
	} {
		if got := summaryKind([]byte(in)); got != want {
			t.Errorf("summaryKind(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestErrListDisturbed(t *testing.T) {
	// errList ranges over a map: with two or more kinds their order varies
	// from run to run, so only zero and one are pinned here.
	if got := errList(nil); got != "" {
		t.Errorf("errList(nil) = %q, want empty", got)
	}
	if got, want := errList(map[string]int{"http 401": 3}), " (http 401: 3)"; got != want {
		t.Errorf("errList = %q, want %q", got, want)
	}
	for _, tc := range []struct {
		p    phaseResult
		want string
	}{
		{phaseResult{}, "; other processes 0.00 cores"},
		{phaseResult{OtherCores: 0.456, Attempts: 1}, "; other processes 0.46 cores"},
		{phaseResult{OtherCores: 1, Attempts: 3}, "; other processes 1.00 cores (best of 3 tries)"},
	} {
		if got := disturbed(&tc.p); got != tc.want {
			t.Errorf("disturbed(%+v) = %q, want %q", tc.p, got, tc.want)
		}
	}
}
