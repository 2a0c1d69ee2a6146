#!/usr/bin/env bash
# bench/replay.sh: the time to replay missed events to one reconnecting
# client, measured with `loadgen replay` against a fresh sidecar.
#
#   bench/replay.sh [-o DIR] [-l "loadgen replay flags"] -- SERVER COMMAND [ARGS...]
#
# It removes the store file (SIDECAR_STORE__PATH, when it is a file), starts
# SERVER COMMAND, waits for it to listen on $SIDECAR_LISTEN, and runs
# `loadgen replay`: user u1 connects and gets one live event (its id is the
# first ?since=), disconnects; then, per repetition, 1,000 events are POSTed
# to u1 through /api/socket-test/send/u1 while it is offline, and u1
# reconnects with ?since=<the last id it saw>; the time from the dial to the
# resumed frame is measured, and the events are checked: exactly the posted
# ids, in order, then {"event":"resumed","data":{"recovered":true}}. It stops
# the server and writes DIR/replay.json, DIR/server.log and DIR/summary.md.
#
# Environment, exported to the server and read by loadgen alike:
#   SIDECAR_LISTEN               default 127.0.0.1:8080
#   SIDECAR_AUTH__JWT_SECRET     HS256 secret; loadgen mints u1's token
#   SIDECAR_API__KEYS            API key(s); loadgen POSTs with the first
#   SIDECAR_REPLAY__MAX_EVENTS   default 1000 here (the config's is 100)
#   SIDECAR_STORE__PATH          the store; a file is removed first
#   LOADGEN                      a loadgen binary to use (default: built from ./cmd/loadgen)
#   RUN_TIMEOUT                  hard limit, seconds (default 300)
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
results_dir replay
bench_defaults
export SIDECAR_API__KEYS=${SIDECAR_API__KEYS:-bench-key-0123456789}
export SIDECAR_REPLAY__MAX_EVENTS=${SIDECAR_REPLAY__MAX_EVENTS:-1000}
export SIDECAR_RULES__WATCH=${SIDECAR_RULES__WATCH:-false}
need_loadgen
server_go=$(go_version_of "$@")
store=${SIDECAR_STORE__PATH:-}
[[ -n $store && $store != :memory: ]] && store="file $(basename "$store"), sync ${SIDECAR_STORE__SYNC:-everysecond}"
[[ -n $store ]] || store="the config's store"
store="$store; replay.max_events $SIDECAR_REPLAY__MAX_EVENTS"

spid=""
trap 'stop_server; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

fresh_store
start_server replay.sh "$out/server.log" "$@"
# shellcheck disable=SC2086 # lflags is a list of flags
timeout -k 10 "${RUN_TIMEOUT:-300}" "$LOADGEN" replay \
	--url "ws://$SIDECAR_LISTEN/ws" --server-pid "$pid" \
	--server-cmd "$*" --server-go "$server_go" --store "$store" $lflags >"$out/replay.json"
stop_server
fresh_store
"$LOADGEN" summarize "$out/replay.json" | tee "$out/summary.md"
echo "replay.sh: results in $out" >&2
