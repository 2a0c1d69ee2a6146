# Shared by the bench scripts; source it.

# results_dir NAME: $out is the -o directory, or a new one under
# bench/results/tmp/ named NAME-<time>, made and absolute.
results_dir() {
	out=${out:-$root/bench/results/tmp/$1-$(date -u +%Y%m%dT%H%M%SZ)}
	mkdir -p "$out"
	out=$(cd "$out" && pwd)
}

# bench_defaults: the address and the token secret the server and loadgen
# share (exported), and $port.
bench_defaults() {
	export SIDECAR_LISTEN=${SIDECAR_LISTEN:-127.0.0.1:8080}
	export SIDECAR_AUTH__JWT_SECRET=${SIDECAR_AUTH__JWT_SECRET:-bench-secret-0123456789abcdef0123456789}
	port=${SIDECAR_LISTEN##*:}
}

# need_loadgen: $tmp, a scratch directory, and $LOADGEN, built from
# ./cmd/loadgen into it unless set.
need_loadgen() {
	tmp=$(mktemp -d)
	if [[ -z ${LOADGEN:-} ]]; then
		LOADGEN=$tmp/loadgen
		(cd "$root" && go build -o "$LOADGEN" ./cmd/loadgen)
	fi
}

# start_server NAME LOG CMD...: start CMD in the background with its output
# in LOG, wait (up to 30 s) until something listens on $port, and set
# $spid (the started process) and $pid (the process that owns the listening
# socket: the one to measure). Exits the script if the server dies or never
# listens.
start_server() {
	local name=$1 log=$2
	shift 2
	if ss -Hltn "( sport = :$port )" | grep -q .; then
		echo "$name: something already listens on :$port" >&2
		exit 1
	fi
	echo "$name: starting: $*" >&2
	"$@" >"$log" 2>&1 &
	spid=$!
	local up=""
	for _ in $(seq 150); do
		kill -0 "$spid" 2>/dev/null || { echo "$name: server exited; see $log" >&2; tail -5 "$log" >&2; exit 1; }
		if ss -Hltn "( sport = :$port )" | grep -q .; then up=1; break; fi
		sleep 0.2
	done
	[[ -n $up ]] || { echo "$name: server not listening on :$port after 30 s" >&2; exit 1; }
	pid=$(ss -Hltnp "( sport = :$port )" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
	pid=${pid:-$spid}
	[[ $pid == "$spid" ]] || echo "$name: note: measuring pid $pid, not the started pid $spid" >&2
}

# stop_server: SIGTERM $spid, SIGKILL after 10 s; clears $spid.
stop_server() {
	if [[ -n ${spid:-} ]] && kill -0 "$spid" 2>/dev/null; then
		kill -TERM "$spid" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$spid" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$spid" 2>/dev/null || true
		wait "$spid" 2>/dev/null || true
	fi
	spid=""
}

# go_version_of CMD...: the Go version of the binary CMD runs (after an
# `env K=V` prefix), or nothing.
go_version_of() {
	local bin=$1
	[[ $bin == env ]] && for a in "${@:2}"; do [[ $a == *=* ]] || { bin=$a; break; }; done
	go version "$(command -v "$bin" || echo "$bin")" 2>/dev/null | awk '{print $NF}' || true
}

# fresh_store: remove $SIDECAR_STORE__PATH (and its outbox) when it is a
# file, so a server starts with no sessions, streams or webhook ids of a
# previous run. A store left behind would end the last run's sessions at
# start-up: thousands of presence.offline events in the next measurement.
fresh_store() {
	if [[ -n ${SIDECAR_STORE__PATH:-} && $SIDECAR_STORE__PATH != :memory: ]]; then
		rm -rf "$SIDECAR_STORE__PATH" "$SIDECAR_STORE__PATH.outbox"
	fi
}
