#!/usr/bin/env bash
# bench/churn.sh: connect + disconnect cycles per second, measured with
# `loadgen churn` against a fresh server.
#
#   bench/churn.sh [-o DIR] [-l "loadgen churn flags"] -- SERVER COMMAND [ARGS...]
#
# It removes the store file (SIDECAR_STORE__PATH, when it is a file), starts
# SERVER COMMAND, waits for it to listen on $SIDECAR_LISTEN, runs `loadgen
# churn` (each cycle: TCP connect, WebSocket upgrade with a token for a new
# user, read the 101, close), waits for the server's presence to settle
# (past presence.grace), stops the server and writes DIR/churn.json,
# DIR/server.log and DIR/summary.md (also printed). The presence
# transitions are read from the server's /metrics; a server without them
# (gorilla) reports none.
#
# The server command must exec the server itself (not a shell that forks it).
#
# Environment, exported to the server and read by loadgen alike:
#   SIDECAR_LISTEN             default 127.0.0.1:8080
#   SIDECAR_AUTH__JWT_SECRET   HS256 secret; loadgen mints a token per cycle
#   SIDECAR_API__KEYS          API key(s) (gorilla wants one)
#   SIDECAR_STORE__PATH        the store; a file is removed first
#   LOADGEN                    a loadgen binary to use (default: built from ./cmd/loadgen)
#   RUN_TIMEOUT                hard limit, seconds (default 600)
# Defaults for the rest: SIDECAR_LIMITS__MAX_CONNECTIONS=20000, SIDECAR_RULES__WATCH=false.
set -euo pipefail

out=""
lflags=""
while getopts "o:l:h" opt; do
	case $opt in
	o) out=$OPTARG ;;
	l) lflags=$OPTARG ;;
	*) sed -n '2,25p' "$0"; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[[ ${1:-} == -- ]] && shift
if [[ $# -eq 0 ]]; then
	sed -n '2,25p' "$0"
	exit 2
fi

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
results_dir churn
bench_defaults
export SIDECAR_API__KEYS=${SIDECAR_API__KEYS:-bench-key-0123456789}
export SIDECAR_LIMITS__MAX_CONNECTIONS=${SIDECAR_LIMITS__MAX_CONNECTIONS:-20000}
export SIDECAR_RULES__WATCH=${SIDECAR_RULES__WATCH:-false}
need_loadgen
server_go=$(go_version_of "$@")
store=${SIDECAR_STORE__PATH:-}
[[ -n $store && $store != :memory: ]] && store="file $(basename "$store"), sync ${SIDECAR_STORE__SYNC:-everysecond}"

spid=""
trap 'stop_server; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

fresh_store
start_server churn.sh "$out/server.log" "$@"
# shellcheck disable=SC2086 # lflags is a list of flags
timeout -k 10 "${RUN_TIMEOUT:-600}" "$LOADGEN" churn \
	--url "ws://$SIDECAR_LISTEN/ws" --server-pid "$pid" \
	--server-cmd "$*" --server-go "$server_go" --store "$store" $lflags >"$out/churn.json"
kill -0 "$pid" 2>/dev/null || { echo "churn.sh: the server is gone; see $out/server.log" >&2; exit 1; }
stop_server
[[ -n ${SIDECAR_STORE__PATH:-} && -f $SIDECAR_STORE__PATH ]] && echo "churn.sh: store file $(du -h "$SIDECAR_STORE__PATH" | cut -f1)" >&2
fresh_store
"$LOADGEN" summarize "$out/churn.json" | tee "$out/summary.md"
echo "churn.sh: results in $out" >&2
