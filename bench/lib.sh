# Shared by bench/run.sh and bench/webhooks.sh; source it.

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
