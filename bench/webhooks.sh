#!/usr/bin/env bash
# bench/webhooks.sh: signed webhooks per second end to end, through the rules,
# to connected clients, measured with `loadgen webhooks`.
#
#   bench/webhooks.sh [-o DIR] [-l "loadgen webhooks flags"] [-- SERVER COMMAND [ARGS...]]
#
# It starts a fresh server (default: ./cmd/sidecar built into a temporary
# directory, `serve --config config.example.yaml`, so the shipped rules.yaml)
# with a fresh store FILE, waits for it to listen on $SIDECAR_LISTEN, runs
# `loadgen webhooks` against it (N clients u0..u<N-1>, then booking.created
# webhooks signed with the first of $SIDECAR_WEBHOOKS__SECRETS at each rate,
# each to one client), stops the server and writes DIR/webhooks.json,
# DIR/server.log and DIR/summary.md (also printed).
#
# The server command must exec the server itself (not a shell that forks it):
# its CPU is read from the process that owns the listening socket.
#
# Environment, exported to the server and read by loadgen alike:
#   SIDECAR_LISTEN             default 127.0.0.1:8080
#   SIDECAR_AUTH__JWT_SECRET   HS256 secret; loadgen mints tokens for u0..u<N-1>
#   SIDECAR_WEBHOOKS__SECRETS  whsec_ secret(s); loadgen signs with the first
#   SIDECAR_STORE__PATH        store file, removed first (default: DIR/bench.db, removed after)
#   SIDECAR_STORE__SYNC        fsync policy (default: the config's, everysecond)
#   LOADGEN                    a loadgen binary to use (default: built from ./cmd/loadgen)
#   RUN_TIMEOUT                hard limit, seconds (default 900)
# Defaults for the rest: SIDECAR_LIMITS__MAX_CONNECTIONS=20000, SIDECAR_RULES__WATCH=false.
set -euo pipefail

out=""
lflags=""
while getopts "o:l:h" opt; do
	case $opt in
	o) out=$OPTARG ;;
	l) lflags=$OPTARG ;;
	*) sed -n '2,27p' "$0"; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[[ ${1:-} == -- ]] && shift

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
results_dir webhooks
bench_defaults
export SIDECAR_WEBHOOKS__SECRETS=${SIDECAR_WEBHOOKS__SECRETS:-whsec_YmVuY2gtd2ViaG9vay1zZWNyZXQtMDEyMzQ1Njc4OWFi}
own_store=""
[[ -z ${SIDECAR_STORE__PATH:-} ]] && own_store=1
export SIDECAR_STORE__PATH=${SIDECAR_STORE__PATH:-$out/bench.db}
export SIDECAR_LIMITS__MAX_CONNECTIONS=${SIDECAR_LIMITS__MAX_CONNECTIONS:-20000}
export SIDECAR_RULES__WATCH=${SIDECAR_RULES__WATCH:-false}
need_loadgen
if [[ $# -eq 0 ]]; then
	(cd "$root" && go build -o "$tmp/sidecar" ./cmd/sidecar)
	set -- "$tmp/sidecar" serve --config "$root/config.example.yaml"
fi

bin=$1
[[ $bin == env ]] && for a in "${@:2}"; do [[ $a == *=* ]] || { bin=$a; break; }; done
server_go=$(go version "$(command -v "$bin" || echo "$bin")" 2>/dev/null | awk '{print $NF}' || true)
sync=${SIDECAR_STORE__SYNC:-$(sed -n 's/^ *sync: *\([a-z]*\).*/\1/p' "$root/config.example.yaml" | head -1)}

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

rm -f "$SIDECAR_STORE__PATH"
start_server webhooks.sh "$out/server.log" "$@"

# shellcheck disable=SC2086 # lflags is a list of flags
timeout -k 10 "${RUN_TIMEOUT:-900}" "$LOADGEN" webhooks \
	--url "ws://$SIDECAR_LISTEN/ws" --server-pid "$pid" \
	--server-cmd "$*" --server-go "$server_go" \
	--store "file $(basename "$SIDECAR_STORE__PATH"), sync $sync" $lflags >"$out/webhooks.json"
cleanup
[[ -f $SIDECAR_STORE__PATH ]] && echo "webhooks.sh: store file $(du -h "$SIDECAR_STORE__PATH" | cut -f1)" >&2
[[ -n $own_store ]] && rm -f "$SIDECAR_STORE__PATH"
"$LOADGEN" summarize "$out/webhooks.json" | tee "$out/summary.md"
echo "webhooks.sh: results in $out" >&2
