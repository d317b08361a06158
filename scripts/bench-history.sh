#!/bin/bash
# Job records' cost: gearwork bench submit, drain1 and drain8 with the
# history at its default (24h / 10,000 records per function) and off
# (defaults: history: 0), for the memory and Pebble stores, interleaved,
# a fresh server per run. Prints one line per run: the scenario (row), the
# store and mode (target: memory-on, memory-off, pebble-on, pebble-off)
# and gearwork bench's output (rate and the server's cpu_ns_per_job);
# progress goes to stderr.
#   RUNS=3 JOBS=100000 scripts/bench-history.sh
#   SCENARIOS="drain8" TARGETS="pebble-on pebble-off" JOBS=50000 scripts/bench-history.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
JOBS=${JOBS:-100000}
SCENARIOS=${SCENARIOS:-submit drain1 drain8}
TARGETS=${TARGETS:-memory-on memory-off pebble-on pebble-off}

# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"
bench_init bench-history
build_gearwork
printf 'defaults:\n  history: 0\n' >"$OUT/off.yaml"
printf 'defaults:\n  history: 24h\n' >"$OUT/on.yaml"

SERVER_PID=""
DATA="$OUT/data"

# start_server TARGET PORT starts a server for TARGET (STORE-MODE) in the
# background; SERVER_PID is its process id.
start_server() {
	local store=${1%-*} mode=${1#*-} st="memory:"
	rm -rf "$DATA"
	[ "$store" = pebble ] && st="pebble:$DATA"
	"$GW" serve --listen "127.0.0.1:$2" --http off --store "$st" --config "$OUT/$mode.yaml" \
		--log-level warn >>"$OUT/gearwork.log" 2>&1 &
	started "$1" "$2" $!
}

stop_server() {
	kill_server
	rm -rf "$DATA"
}
trap stop_server EXIT

# bench_args SCENARIO prints the gearwork bench arguments.
bench_args() {
	echo "--scenario $1 --jobs $JOBS"
}

run_matrix "$SCENARIOS" "$TARGETS"
cat "$RESULTS"
log "$failures measurements failed; raw results in $RESULTS"
