#!/usr/bin/env bash
# bench/cluster.sh: measure sidecar nodes joined through Redis (issue 11), and
# the one-node baseline they are compared with, in one run.
#
# The full measurement, one command (about 20 minutes; run it on a quiet machine):
#
#   bench/cluster.sh -n 50000 -o bench/results/issue11-cluster-$(date -u +%Y%m%d)
#
# A smoke run (1,500 connections in all, each step well under a minute):
#
#   bench/cluster.sh -s
#
# Usage:
#   bench/cluster.sh [-n CONNS] [-k NODES] [-b BASE] [-o DIR] [-p PORT] [-m "STEPS"] [-s]
#                    [-B "flags"] [-R "flags"] [-X "flags"] [-W "flags"]
#
#   -n CONNS   clients of the cluster (default 50000)
#   -b BASE    clients of the baseline node (default CONNS/NODES, a node's share; at most 19,000)
#   -k NODES   nodes (default 3), listening on 127.0.0.1:PORT, PORT+1, ... (default PORT 8081)
#   -m STEPS   which steps, in order (default "baseline run xlatency webhooks")
#   -s         smoke: 1,500 clients (unless -n), short phases
#   -B/-R/-X/-W  more flags for `loadgen run` (baseline), `loadgen run` (cluster),
#              `loadgen xlatency` and `loadgen webhooks`; they come after the defaults, so they win
#
# Each step starts fresh servers (new store files, Redis emptied) and stops them:
#   baseline  one node alone, no broker, holding BASE clients: `loadgen run` -> DIR/baseline.json
#   run       NODES nodes, CONNS clients, client i on node i mod NODES, broadcasts POSTed round-robin:
#             `loadgen run` -> DIR/run.json (RSS per connection of each server process, found by its
#             listening socket with ss(8); POST -> last client of all nodes and of each; CPU per message)
#   xlatency  clients on node 1; targeted events (POST /api/events) to node 0 and to node 1, alternating,
#             paced: `loadgen xlatency` -> DIR/xlatency.json (p50/p99/p999 both ways and the difference)
#   webhooks  signed booking.created webhooks POSTed round-robin over the nodes to CONNS clients spread
#             over them, 1% POSTed again to another node; every client must get each of its webhooks
#             exactly once: `loadgen webhooks` -> DIR/webhooks.json
# then DIR/summary.md (also printed): each result, and the cluster run beside the baseline.
# Server logs: DIR/<step>-node<i>.log; Redis's: DIR/redis.log.
#
# Redis: a redis-server of this script's own, on a free port from 6390 up (never 6379), no
# persistence, killed at exit. The nodes run ./cmd/sidecar built into a temporary directory, with
# config.example.yaml (the shipped rules), SIDECAR_LIMITS__MAX_CONNECTIONS=20000,
# SIDECAR_RULES__WATCH=false and the secrets of bench/lib.sh; SIDECAR_BROKER__* from the
# environment is ignored.
#
# On this 2-core machine the nodes, Redis and loadgen share the same two cores: a broadcast to
# CONNS clients over NODES nodes costs the machine CONNS frame writes, against CONNS/NODES for the
# baseline, whatever the nodes do in parallel elsewhere. For the comparison with one node holding
# about as many clients as one process can, run the baseline again on its own:
#   bench/cluster.sh -m baseline -b 18000 -o DIR-18000
#
# Environment: LOADGEN (a loadgen binary), SIDECAR (a sidecar binary), RUN_TIMEOUT (hard limit per
# step, seconds; default 1500, smoke 120), REDIS_SERVER (default redis-server). Needs go, ss,
# timeout, curl, redis-server and redis-cli.
set -euo pipefail

conns=""
nodes=3
first_port=8081
steps="baseline run xlatency webhooks"
smoke=""
out=""
bflags="" rflags="" xflags="" wflags=""
base=""
while getopts "n:k:b:o:p:m:sB:R:X:W:h" opt; do
	case $opt in
	n) conns=$OPTARG ;;
	b) base=$OPTARG ;;
	k) nodes=$OPTARG ;;
	o) out=$OPTARG ;;
	p) first_port=$OPTARG ;;
	m) steps=$OPTARG ;;
	s) smoke=1 ;;
	B) bflags=$OPTARG ;;
	R) rflags=$OPTARG ;;
	X) xflags=$OPTARG ;;
	W) wflags=$OPTARG ;;
	*) sed -n '2,52p' "$0"; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[[ $# -eq 0 ]] || { echo "cluster.sh: unexpected argument $1" >&2; exit 2; }
[[ $nodes =~ ^[0-9]+$ && $nodes -ge 2 ]] || { echo "cluster.sh: -k $nodes: want 2 nodes or more" >&2; exit 2; }
conns=${conns:-$([[ -n $smoke ]] && echo 1500 || echo 50000)}
[[ $conns =~ ^[0-9]+$ && $conns -ge $nodes ]] || { echo "cluster.sh: -n $conns: want at least one client per node" >&2; exit 2; }
for s in $steps; do
	case $s in baseline | run | xlatency | webhooks) ;; *) echo "cluster.sh: unknown step $s" >&2; exit 2 ;; esac
done

per_node=$((conns / nodes))
base=${base:-$per_node}
# A node holds at most ~19,500 sockets (open-file limit 20000, max_connections 20000 here).
if ((per_node > 19000)); then
	echo "cluster.sh: -n $conns over $nodes nodes is $per_node per node, over 19,000: use more nodes (-k)" >&2
	exit 2
fi
if ! [[ $base =~ ^[0-9]+$ ]] || ((base < 1 || base > 19000)); then
	echo "cluster.sh: -b $base: want 1..19000 clients for the baseline node" >&2
	exit 2
fi

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
# Never join whatever Redis the environment names: this script runs its own.
while read -r v; do unset "$v"; done < <(env | sed -n 's/^\(SIDECAR_BROKER__[A-Z_]*\)=.*/\1/p')
results_dir cluster
bench_defaults
export SIDECAR_API__KEYS=${SIDECAR_API__KEYS:-bench-key-0123456789}
export SIDECAR_WEBHOOKS__SECRETS=${SIDECAR_WEBHOOKS__SECRETS:-whsec_YmVuY2gtd2ViaG9vay1zZWNyZXQtMDEyMzQ1Njc4OWFi}
export SIDECAR_LIMITS__MAX_CONNECTIONS=20000 SIDECAR_RULES__WATCH=false
unset SIDECAR_STORE__PATH
need_loadgen
if [[ -z ${SIDECAR:-} ]]; then
	SIDECAR=$tmp/sidecar
	(cd "$root" && go build -o "$SIDECAR" ./cmd/sidecar)
fi
server_go=$(go_version_of "$SIDECAR")
timeout_s=${RUN_TIMEOUT:-$([[ -n $smoke ]] && echo 120 || echo 1500)}

# Phase lengths: the defaults of loadgen for the full run, short ones for a smoke run.
if [[ -n $smoke ]]; then
	run_defaults="--warm 50 --settle-min 2s --settle-max 6s --idle 4s -k 5 --interval 500ms --rates 2 --for 4s --grace 5s --quiet-wait 5s --attempts 1"
	x_defaults="-n 100 --samples 400 --rate 100 --quiet-wait 5s"
	w_defaults="--rates 300 --for 4s --warm 50 --idle 0 --pause 1s --grace 5s --quiet-wait 5s --resend 0.05"
else
	run_defaults="--rates 1,2"
	x_defaults="-n $((per_node < 1000 ? per_node : 1000)) --samples 2000 --rate 100"
	w_defaults="--rates 1000,2000,4000 --for 20s --resend 0.01"
fi

redis_pid="" redis_port=""
spids=() pids=()
cleanup() {
	local p
	for p in "${spids[@]}"; do
		if kill -0 "$p" 2>/dev/null; then
			kill -TERM "$p" 2>/dev/null || true
		fi
	done
	for p in "${spids[@]}"; do
		for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	spids=() pids=()
	rm -rf "$tmp"/node*.db "$tmp"/node*.db.outbox
}
stop_redis() {
	if [[ -n $redis_pid ]] && kill -0 "$redis_pid" 2>/dev/null; then
		kill -TERM "$redis_pid" 2>/dev/null || true
		for _ in $(seq 25); do kill -0 "$redis_pid" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$redis_pid" 2>/dev/null || true
		wait "$redis_pid" 2>/dev/null || true
	fi
	redis_pid=""
}
trap 'cleanup; stop_redis; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

# start_redis: a redis-server of our own on the first free port from 6390.
start_redis() {
	local p
	for p in $(seq 6390 6490); do
		ss -Hltn "( sport = :$p )" | grep -q . || { redis_port=$p; break; }
	done
	[[ -n $redis_port ]] || { echo "cluster.sh: no free port for Redis in 6390-6490" >&2; exit 1; }
	"${REDIS_SERVER:-redis-server}" --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
		--daemonize no --dir "$tmp" >"$out/redis.log" 2>&1 &
	redis_pid=$!
	for _ in $(seq 50); do
		kill -0 "$redis_pid" 2>/dev/null || { echo "cluster.sh: redis-server exited; see $out/redis.log" >&2; exit 1; }
		[[ $(redis-cli -p "$redis_port" ping 2>/dev/null) == PONG ]] && break
		sleep 0.1
	done
	[[ $(redis-cli -p "$redis_port" ping 2>/dev/null) == PONG ]] || { echo "cluster.sh: redis-server not answering on :$redis_port" >&2; exit 1; }
	# The pid that owns the port must be ours: it is the one measured and killed.
	local owner
	owner=$(ss -Hltnp "( sport = :$redis_port )" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
	[[ $owner == "$redis_pid" ]] || { echo "cluster.sh: :$redis_port is owned by pid $owner, not our redis-server $redis_pid" >&2; exit 1; }
	echo "cluster.sh: redis-server $(redis-cli -p "$redis_port" info server | sed -n 's/^redis_version:\([^\r]*\).*/\1/p') on 127.0.0.1:$redis_port, pid $redis_pid" >&2
}

# start_nodes STEP K CLUSTERED: K fresh nodes on first_port.., joined through
# our Redis when CLUSTERED; fills spids, pids (the socket owners), urls, apis.
start_nodes() {
	local step=$1 k=$2 clustered=$3 i
	urls="" apis="" spids=() pids=()
	[[ -n $clustered ]] && redis-cli -p "$redis_port" flushall >/dev/null
	for ((i = 0; i < k; i++)); do
		port=$((first_port + i))
		local envs=(SIDECAR_LISTEN=127.0.0.1:$port SIDECAR_STORE__PATH=$tmp/node$i.db)
		rm -rf "$tmp/node$i.db" "$tmp/node$i.db.outbox"
		if [[ -n $clustered ]]; then
			envs+=(SIDECAR_BROKER__REDIS_URL=redis://127.0.0.1:$redis_port SIDECAR_BROKER__NODE_ID=bench-node$i SIDECAR_BROKER__ON_UNAVAILABLE=refuse)
		fi
		start_server "cluster.sh $step node $i" "$out/$step-node$i.log" env "${envs[@]}" "$SIDECAR" serve --config "$root/config.example.yaml"
		spids+=("$spid") pids+=("$pid")
		urls+=${urls:+,}ws://127.0.0.1:$port/ws
		apis+=${apis:+,}http://127.0.0.1:$port
	done
	# Ready, and (clustered) every node sees the others heartbeat.
	for ((i = 0; i < k; i++)); do
		port=$((first_port + i))
		local ok=""
		for _ in $(seq 100); do
			if curl -fsS "http://127.0.0.1:$port/readyz" 2>/dev/null | grep -q '"status":"ok"'; then
				if [[ -z $clustered ]] || [[ $(curl -fsS "http://127.0.0.1:$port/metrics" 2>/dev/null | sed -n 's/^sidecar_cluster_nodes \([0-9]*\).*/\1/p') == "$k" ]]; then
					ok=1
					break
				fi
			fi
			sleep 0.2
		done
		[[ -n $ok ]] || { echo "cluster.sh: $step node $i not ready (or not seeing $k nodes) after 20 s; see $out/$step-node$i.log" >&2; exit 1; }
	done
}

pid_list() { local IFS=,; echo "${pids[*]}"; }
label="sidecar serve --config config.example.yaml"

[[ " $steps " == *" baseline "* && " $steps " != *" run "* ]] && echo "cluster.sh: note: a baseline without the cluster run" >&2
[[ " $steps " =~ " "(run|xlatency|webhooks)" " ]] && start_redis
redis_ver=""
[[ -n $redis_port ]] && redis_ver=$(redis-cli -p "$redis_port" info server | sed -n 's/^redis_version:\([^\r]*\).*/\1/p')

for step in $steps; do
	echo "cluster.sh: step $step" >&2
	case $step in
	baseline)
		start_nodes baseline 1 ""
		# shellcheck disable=SC2086 # flag lists
		timeout -k 10 "$timeout_s" "$LOADGEN" run --url "$urls" -n "$base" --server-pid "$(pid_list)" \
			--server-cmd "$label (one node, no broker)" --server-go "$server_go" $run_defaults $bflags >"$out/baseline.json"
		;;
	run)
		start_nodes run "$nodes" 1
		# shellcheck disable=SC2086
		timeout -k 10 "$timeout_s" "$LOADGEN" run --url "$urls" -n "$conns" --server-pid "$(pid_list)" --redis-pid "$redis_pid" \
			--post-to rr --server-cmd "$label ($nodes nodes, Redis $redis_ver)" --server-go "$server_go" $run_defaults $rflags >"$out/run.json"
		;;
	xlatency)
		start_nodes xlatency "$nodes" 1
		# shellcheck disable=SC2086
		timeout -k 10 "$timeout_s" "$LOADGEN" xlatency --url "$urls" --from 0 --to 1 --server-pid "$(pid_list)" --redis-pid "$redis_pid" \
			--server-cmd "$label ($nodes nodes, Redis $redis_ver)" --server-go "$server_go" $x_defaults $xflags >"$out/xlatency.json"
		;;
	webhooks)
		start_nodes webhooks "$nodes" 1
		# shellcheck disable=SC2086
		timeout -k 10 "$timeout_s" "$LOADGEN" webhooks --url "$urls" -n "$conns" --server-pid "$(pid_list)" --redis-pid "$redis_pid" \
			--post-to rr --server-cmd "$label ($nodes nodes, Redis $redis_ver)" --server-go "$server_go" \
			--store "file per node, sync $(sed -n 's/^ *sync: *\([a-z]*\).*/\1/p' "$root/config.example.yaml" | head -1)" \
			$w_defaults $wflags >"$out/webhooks.json"
		;;
	esac
	cleanup
done
stop_redis

{
	for f in baseline run xlatency webhooks; do
		if [[ -s $out/$f.json ]]; then "$LOADGEN" summarize "$out/$f.json"; fi
	done
	if [[ -s $out/baseline.json && -s $out/run.json ]]; then
		"$LOADGEN" summarize --compare "$out/baseline.json" "$out/run.json"
	fi
} | tee "$out/summary.md"
echo "cluster.sh: results in $out" >&2
