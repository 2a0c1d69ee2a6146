//go:build linux

// Command loadgen opens many authenticated WebSocket connections to a sidecar
// (or to the gorilla baseline in bench/gorilla) and measures the broadcast path.
//
// The client is meant to be cheap so that it is not what gets measured: each
// worker process reads its connections from one epoll loop on raw file
// descriptors (no goroutine per connection), parses server frames by hand and
// records a receipt time per epoll batch, without allocating per frame.
//
// Subcommands:
//
//	hold     open N connections and hold them idle for --duration
//	latency  open N, send K broadcasts --interval apart, report POST -> last receipt
//	sustain  open N, broadcast at --rate for --for, report deliveries/s, missing, late
//	webhooks open N, POST signed booking.created webhooks at each of --rates for
//	         --for each, one user per webhook through the server's rules; report
//	         accepted/s, 202/429/other, POST and POST -> client latency, missing
//	         and duplicate deliveries, server CPU per webhook; prints JSON
//	churn    connect, upgrade, read the 101 and close, each time as a new user,
//	         --concurrency at a time for --for; report cycles/s, failures by
//	         kind, cycle time, and the server's presence transitions (from
//	         /metrics) and RSS after a settle; prints JSON
//	replay   one user misses --events events (POSTed while offline) and
//	         reconnects with ?since=; report the time from the upgrade to
//	         the resumed frame and check every event came, in order; prints JSON
//	poll     open N Socket.IO sessions over Engine.IO long-polling (http://
//	         host/socket.io/), hold them as socket.io-client does (a GET always
//	         outstanding, each ping "2" answered with a POST of "3") for
//	         --hold; report the server's RSS, goroutines and open files per
//	         session and the sessions that failed or were closed; prints JSON.
//	         One process, two connections per session: at most (open-file
//	         limit - 256) / 2 sessions, 9,872 under 20,000
//	run      the whole benchmark against one server pid: RSS per connection,
//	         latency, CPU per delivered message, sustained rates; prints JSON
//	xlatency clients on node B (--to) of a cluster; targeted events POSTed
//	         alternately to node A (--from) and to B itself, paced; report
//	         POST -> client p50/p99/p999 both ways and what crossing adds;
//	         prints JSON
//	floor    measure the CPU cost of one small loopback TCP write on this machine
//	summarize  print `run`, `webhooks`, `xlatency`, `churn`, `replay` or `poll` results (JSON files) as markdown;
//	         --compare ONE.json CLUSTER.json sets a cluster `run` beside a one-node one
//	worker   internal: one child process holding a share of the connections
//
// hold, latency, sustain, run, webhooks and xlatency take several
// comma-separated --url, the nodes of a cluster: connection i goes to the
// (i mod n)th, and the POSTs go where --post-to says.
//
// Above --per-proc connections the parent re-executes itself as workers (the
// per-process open-file limit is 20000); with any N the parent only
// coordinates, and the connections live in `loadgen worker` children that
// report to it as JSON lines on stdout.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

const usage = `usage: loadgen <hold|latency|sustain|run|webhooks|xlatency|churn|replay|poll> [flags]
       loadgen summarize result.json...
       loadgen floor
       loadgen <subcommand> -h    lists the flags`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("no subcommand\n%s", usage)
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "hold":
		return runHold(ctx, args, stdout, stderr)
	case "latency":
		return runLatency(ctx, args, stdout, stderr)
	case "sustain":
		return runSustain(ctx, args, stdout, stderr)
	case "run":
		return runBench(ctx, args, stdout, stderr)
	case "webhooks":
		return runWebhooks(ctx, args, stdout, stderr)
	case "churn":
		return runChurn(ctx, args, stdout, stderr)
	case "replay":
		return runReplay(ctx, args, stdout, stderr)
	case "xlatency":
		return runXLatency(ctx, args, stdout, stderr)
	case "poll":
		return runPoll(ctx, args, stdout, stderr)
	case "floor":
		d, err := writeFloor(1000, 30, 3, 160)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "loopback write floor: %.2f µs CPU per 160-byte TCP write\n", float64(d)/1e3)
		return nil
	case "summarize":
		return runSummarize(args, stdout)
	case "worker":
		return runWorker(ctx, args, os.Stdin, stdout)
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	return fmt.Errorf("unknown subcommand %q\n%s", cmd, usage)
}

// newLogf returns a progress logger: "loadgen HH:MM:SS message" lines on w.
func newLogf(w io.Writer) func(format string, a ...any) {
	return func(format string, a ...any) {
		fmt.Fprintf(w, "loadgen %s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
	}
}
