#!/usr/bin/env bash
# bench/run.sh: measure one WebSocket server with cmd/loadgen.
#
#   bench/run.sh [-n "10000 18000"] [-o DIR] [-l "loadgen run flags"] -- SERVER COMMAND [ARGS...]
#
# For each connection count it starts a fresh server from SERVER COMMAND, waits
# for it to listen on $SIDECAR_LISTEN, runs `loadgen run` against it (warm-up,
# RSS per idle connection, POST -> last client latency with server CPU per
# delivered message, sustained broadcast rates), stops the server, and writes
# DIR/run-<n>.json, DIR/server-<n>.log and DIR/summary.md (also printed).
#
# The server command must exec the server itself (a binary, or `env K=V binary`),
# not a shell that forks it: RSS and CPU are read from the process that owns
# the listening socket, found with ss(8).
#
# Environment, exported to the server and read by loadgen alike:
#   SIDECAR_LISTEN             default 127.0.0.1:8080
#   SIDECAR_AUTH__JWT_SECRET   HS256 secret; loadgen mints tokens for users u0..u<n-1>
#   SIDECAR_API__KEYS          API key(s) for POST /api/socket-test/broadcast; loadgen uses the first
#   SIDECAR_STORE__PATH        when it names a file, it is removed before each server start
#   LOADGEN                    a loadgen binary to use (default: built from ./cmd/loadgen into $TMPDIR)
#   RUN_TIMEOUT                hard limit per connection count, seconds (default 1500)
#   WS_PATH                    the endpoint the clients open (default /ws; /socket.io/ makes
#                              them Socket.IO clients over WebSocket: loadgen sends the CONNECT)
set -euo pipefail

counts="10000 18000"
out=""
lflags=""
while getopts "n:o:l:h" opt; do
	case $opt in
	n) counts=$OPTARG ;;
	o) out=$OPTARG ;;
	l) lflags=$OPTARG ;;
	*) sed -n '2,26p' "$0"; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[[ ${1:-} == -- ]] && shift
if [[ $# -eq 0 ]]; then
	sed -n '2,26p' "$0"
	exit 2
fi

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
bench_defaults
export SIDECAR_API__KEYS=${SIDECAR_API__KEYS:-bench-key-0123456789}
out=${out:-$root/bench/results/tmp/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
need_loadgen

# The server's Go version, when the command names a Go binary.
bin=$1
[[ $bin == env ]] && for a in "${@:2}"; do [[ $a == *=* ]] || { bin=$a; break; }; done
server_go=$(go version "$(command -v "$bin" || echo "$bin")" 2>/dev/null | awk '{print $NF}' || true)

spid=""
cleanup() {
	if [[ -n $spid ]] && kill -0 "$spid" 2>/dev/null; then
		kill -TERM "$spid" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$spid" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$spid" 2>/dev/null || true
		wait "$spid" 2>/dev/null || true
	fi
	spid=""
}
trap 'cleanup; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

for n in $counts; do
	echo "run.sh: N=$n" >&2
	fresh_store # a store file left by the previous count would end its sessions at start-up
	start_server run.sh "$out/server-$n.log" "$@"

	# shellcheck disable=SC2086 # lflags is a list of flags
	timeout -k 10 "${RUN_TIMEOUT:-1500}" "$LOADGEN" run \
		--url "ws://$SIDECAR_LISTEN${WS_PATH:-/ws}" -n "$n" --server-pid "$pid" \
		--server-cmd "$*" --server-go "$server_go" $lflags >"$out/run-$n.json"
	cleanup
	fresh_store
	"$LOADGEN" summarize "$out/run-$n.json" | tee -a "$out/summary.md"
done
echo "run.sh: results in $out" >&2
