#!/usr/bin/env bash
# bench/storm.sh: the seed's "tell everyone" presence under a connect storm.
#
#   bench/storm.sh [-o DIR] [-n 10000] [-t HOLD_SECONDS] [-w WEBHOOK_SECONDS] [-s] [-- SERVER COMMAND [ARGS...]]
#
# -s keeps the shipped rules (presence to watchers only), for comparison.
# It copies rules.yaml to DIR/rules-storm.yaml with the commented-out
# user-online-to-everyone and user-offline-to-everyone rules uncommented
# (`to: except(all(), sender.id)`: each connect and disconnect is a frame to
# every other connection), checks it with `sidecar check`, and starts the
# server on it (default: ./cmd/sidecar built into a temporary directory,
# `serve --config config.example.yaml`) with a fresh store file. Then:
#
#   - a sampler writes DIR/samples.tsv once a second: the server's RSS and
#     VmHWM, /healthz's status, and its connection, delivery, byte, slow
#     consumer, presence and webhook counters from /metrics;
#   - `loadgen webhooks` connects one client (user w0) and POSTs a signed
#     booking.created webhook every 100 ms (10/s) to it through the rules,
#     for WEBHOOK_SECONDS (default: HOLD_SECONDS + 15, the whole run; a
#     shorter one keeps the latencies to the storm): DIR/webhooks.json
#     (statuses, POST and POST -> client latency, missing);
#   - 3 s later, `loadgen hold` connects N users (u0..) as fast as it can
#     (--connect-rate 100000, 128 handshakes in flight per worker), its
#     workers reading every frame, and holds them HOLD_SECONDS:
#     DIR/hold.json (connected, failed, time to connect them all).
#
# After the hold, it waits for the offline events, checks the server is
# still up, stops it and writes DIR/summary.md.
#
# Environment: SIDECAR_LISTEN (127.0.0.1:8080), SIDECAR_AUTH__JWT_SECRET,
# SIDECAR_API__KEYS, SIDECAR_WEBHOOKS__SECRETS (defaults as in webhooks.sh),
# SIDECAR_STORE__PATH (default DIR/storm.db, removed first and after),
# LOADGEN, RUN_TIMEOUT (default 600 s for the whole script).
set -euo pipefail

out=""
n=10000
hold=60
wh_for=""
shipped=""
while getopts "o:n:t:w:sh" opt; do
	case $opt in
	o) out=$OPTARG ;;
	n) n=$OPTARG ;;
	t) hold=$OPTARG ;;
	w) wh_for=$OPTARG ;;
	s) shipped=1 ;;
	*) sed -n '2,35p' "$0"; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[[ ${1:-} == -- ]] && shift

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
results_dir storm
bench_defaults
export SIDECAR_API__KEYS=${SIDECAR_API__KEYS:-bench-key-0123456789}
export SIDECAR_WEBHOOKS__SECRETS=${SIDECAR_WEBHOOKS__SECRETS:-whsec_YmVuY2gtd2ViaG9vay1zZWNyZXQtMDEyMzQ1Njc4OWFi}
export SIDECAR_LIMITS__MAX_CONNECTIONS=${SIDECAR_LIMITS__MAX_CONNECTIONS:-20000}
export SIDECAR_RULES__WATCH=false
own_store=""
[[ -z ${SIDECAR_STORE__PATH:-} ]] && own_store=1
export SIDECAR_STORE__PATH=${SIDECAR_STORE__PATH:-$out/storm.db}
export SIDECAR_RULES__FILE=$out/rules-storm.yaml
api=http://$SIDECAR_LISTEN
need_loadgen
if [[ $# -eq 0 ]]; then
	(cd "$root" && go build -o "$tmp/sidecar" ./cmd/sidecar)
	set -- "$tmp/sidecar" serve --config "$root/config.example.yaml"
fi
server_go=$(go_version_of "$@")

# The rules: the shipped file with the two tell-everyone rules uncommented
# (the watcher rules stay; their rooms are empty here). As shipped, their
# `to: except(all(), sender.id)` sits unquoted in a YAML flow mapping,
# whose comma ends the value there: `sidecar check` refuses them
# (emit: unknown key "sender.id)"). The copy quotes the expression.
rules_label=rules-storm.yaml
if [[ -n $shipped ]]; then
	cp "$root/rules.yaml" "$SIDECAR_RULES__FILE"
	rules_label="the shipped rules.yaml (watchers only)"
else
	sed -E -e '/^  # - name: user-(online|offline)-to-everyone$/,+2 s/^  # /  /' \
		-e "s/^(    emit: \{event: user(On|Off)line, )to: except\(all\(\), sender\.id\),/\1to: 'except(all(), sender.id)',/" \
		"$root/rules.yaml" >"$SIDECAR_RULES__FILE"
	grep -q '^  - name: user-online-to-everyone$' "$SIDECAR_RULES__FILE" && grep -q '^  - name: user-offline-to-everyone$' "$SIDECAR_RULES__FILE" ||
		{ echo "storm.sh: the tell-everyone rules were not found in rules.yaml" >&2; exit 1; }
fi
"$1" check --config "$root/config.example.yaml" >"$out/check.txt" 2>&1 || { cat "$out/check.txt" >&2; exit 1; }
diff "$root/rules.yaml" "$SIDECAR_RULES__FILE" >"$out/rules.diff" || true

spid=""
sampler=""
whpid=""
cleanup() {
	[[ -n $sampler ]] && kill "$sampler" 2>/dev/null || true
	[[ -n $whpid ]] && kill "$whpid" 2>/dev/null || true
	stop_server
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
deadline=$((SECONDS + ${RUN_TIMEOUT:-600}))

fresh_store
start_server storm.sh "$out/server.log" "$@"

series='sidecar_connections |sidecar_deliveries_total |sidecar_bytes_written_total |sidecar_slow_consumers_total |sidecar_presence_transitions_total|sidecar_webhooks_total|sidecar_connections_accepted_total |sidecar_connections_closed_total'
sample() {
	local t0=$EPOCHREALTIME
	while ((SECONDS < deadline)); do
		local now=$EPOCHREALTIME rss hwm hz m
		rss=$(awk '/^VmRSS:/{print $2}' "/proc/$pid/status" 2>/dev/null || echo gone)
		hwm=$(awk '/^VmHWM:/{print $2}' "/proc/$pid/status" 2>/dev/null || echo gone)
		hz=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$api/healthz" || true)
		m=$(curl -s -m 2 "$api/metrics" | grep -E "^($series)" | tr '\n' ' ' || true)
		printf '%.1f\t%s\t%s\t%s\t%s\n' "$(echo "$now - $t0" | bc)" "$rss" "$hwm" "$hz" "$m"
		sleep 1
	done
}
printf 't_s\trss_kib\thwm_kib\thealthz\tmetrics\n' >"$out/samples.tsv"
sample >>"$out/samples.tsv" &
sampler=$!

wh_for=${wh_for:-$((hold + 15))}
timeout -k 10 $((wh_for + 120)) "$LOADGEN" webhooks --url "ws://$SIDECAR_LISTEN/ws" -n 1 --user-prefix w \
	--rates 10 --for "${wh_for}s" --warm 0 --idle 0 --quiet-wait 0s --quiet-limit 100 --grace 30s --server-pid "$pid" \
	--server-cmd "$* ($rules_label)" --server-go "$server_go" >"$out/webhooks.json" 2>"$out/webhooks.log" &
whpid=$!
sleep 3

echo "storm.sh: storm of $n connections, held ${hold}s" >&2
t_storm=$EPOCHREALTIME
timeout -k 10 $((hold + 240)) "$LOADGEN" hold --url "ws://$SIDECAR_LISTEN/ws" -n "$n" --connect-rate 100000 --dial-workers 128 \
	--ready-wait 200s --duration "${hold}s" >"$out/hold.json" 2>"$out/hold.log" || echo "storm.sh: loadgen hold failed: $?" >&2
echo "storm.sh: hold ended after $(echo "$EPOCHREALTIME - $t_storm" | bc) s" >&2
wait "$whpid" || echo "storm.sh: loadgen webhooks failed: $?" >&2
whpid=""
sleep 8 # the offline events, past presence.grace
if kill -0 "$pid" 2>/dev/null && [[ $(curl -s -o /dev/null -m 5 -w '%{http_code}' "$api/healthz") == 200 ]]; then
	up="the server stayed up (healthz 200 after the storm)"
else
	up="THE SERVER IS DOWN after the storm; see $out/server.log"
fi
hwm=$(awk '/^VmHWM:/{print $2}' "/proc/$pid/status" 2>/dev/null || echo "?")
curl -s -m 5 "$api/metrics" | grep -E "^($series)" >"$out/metrics-after.txt" || true
kill "$sampler" 2>/dev/null || true
sampler=""
stop_server
[[ -n $own_store ]] && fresh_store

{
	echo "#### connect storm of $n: \`$*\` with $rules_label, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo
	echo "- $up; peak RSS (VmHWM) ${hwm} KiB"
	echo "- connects: $(head -1 "$out/hold.json" | jq -r '"\(.open) of \(.want) open in \(.took_ms / 1000) s = \(.open / (.took_ms / 1000) | floor)/s; \(.failed) failed, \(.retried) retried \(.errors // {})"' 2>/dev/null || echo "?")"
	echo "- storm: $(head -1 "$out/hold.json")"
	echo "- held: $(sed -n 2p "$out/hold.json")"
	echo "- metrics after: $(tr '\n' ' ' <"$out/metrics-after.txt")"
	echo
	"$LOADGEN" summarize "$out/webhooks.json" 2>/dev/null || echo "(no webhooks result)"
} | tee "$out/summary.md"
echo "storm.sh: results in $out" >&2
