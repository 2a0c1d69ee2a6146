#!/usr/bin/env bash
# bench/poll.sh: how many Socket.IO long-polling sessions one server holds,
# and its RSS per session, measured with `loadgen poll` against a fresh
# server for each count.
#
#   bench/poll.sh [-n "2000 5000 9000"] [-o DIR] [-l "loadgen poll flags"] -- SERVER COMMAND [ARGS...]
#
# For each count it removes the store file (SIDECAR_STORE__PATH, when it is a
# file), starts SERVER COMMAND, waits for it to listen on $SIDECAR_LISTEN,
# runs `loadgen poll` (each session: the open GET, the CONNECT POSTed with
# ?token=, its answer GET, then a GET always outstanding and each ping
# answered with a POST of "3", held for --hold, default 60 s), stops the
# server, and writes DIR/poll-<n>.json, DIR/server-<n>.log and DIR/summary.md
# (also printed). The server's goroutines and open files come from its
# /metrics.
#
# One loadgen process holds every session, two HTTP connections each (the
# outstanding GET's and the POST's): at most (open-file limit - 256) / 2
# sessions, 9,872 under 20,000. The server holds two per session too.
#
# The server command must exec the server itself (not a shell that forks it).
#
# Environment, exported to the server and read by loadgen alike:
#   SIDECAR_LISTEN             default 127.0.0.1:8080
#   SIDECAR_AUTH__JWT_SECRET   HS256 secret; loadgen mints a token per session
#   SIDECAR_API__KEYS          API key(s)
#   SIDECAR_STORE__PATH        the store; a file is removed before and after each count
#   LOADGEN                    a loadgen binary to use (default: built from ./cmd/loadgen)
#   RUN_TIMEOUT                hard limit per count, seconds (default 900)
# Defaults for the rest: SIDECAR_LIMITS__MAX_CONNECTIONS=20000, SIDECAR_RULES__WATCH=false.
set -euo pipefail

counts="2000 5000 9000"
out=""
lflags=""
while getopts "n:o:l:h" opt; do
	case $opt in
	n) counts=$OPTARG ;;
	o) out=$OPTARG ;;
	l) lflags=$OPTARG ;;
	*) sed -n '2,30p' "$0"; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[[ ${1:-} == -- ]] && shift
if [[ $# -eq 0 ]]; then
	sed -n '2,30p' "$0"
	exit 2
fi

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
results_dir poll
bench_defaults
export SIDECAR_API__KEYS=${SIDECAR_API__KEYS:-bench-key-0123456789}
export SIDECAR_LIMITS__MAX_CONNECTIONS=${SIDECAR_LIMITS__MAX_CONNECTIONS:-20000}
export SIDECAR_RULES__WATCH=${SIDECAR_RULES__WATCH:-false}
need_loadgen
server_go=$(go_version_of "$@")

spid=""
trap 'stop_server; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

for n in $counts; do
	echo "poll.sh: N=$n" >&2
	fresh_store
	start_server poll.sh "$out/server-$n.log" "$@"
	# shellcheck disable=SC2086 # lflags is a list of flags
	timeout -k 10 "${RUN_TIMEOUT:-900}" "$LOADGEN" poll \
		--url "http://$SIDECAR_LISTEN/socket.io/" -n "$n" --server-pid "$pid" \
		--server-cmd "$*" --server-go "$server_go" $lflags >"$out/poll-$n.json"
	kill -0 "$pid" 2>/dev/null || { echo "poll.sh: the server is gone; see $out/server-$n.log" >&2; exit 1; }
	stop_server
	fresh_store
	"$LOADGEN" summarize "$out/poll-$n.json" | tee -a "$out/summary.md"
done
echo "poll.sh: results in $out" >&2
