#!/usr/bin/env bash
# Compares Gearwork with gearmand (default and tuned) on this machine, in one
# run: every scenario of "gearwork bench" against each server, RUNS times,
# with a fresh server process for every measurement. Prints the machine, the
# medians and the ratios gearwork/gearmand as Markdown on stdout; progress
# goes to stderr, raw result lines to $OUT/results.txt.
#
# Environment (defaults in brackets):
#   RUNS [5]            measurements per scenario and server
#   JOBS [200000]       jobs per scenario
#   FG1_JOBS [20000]    jobs of fg1 (one round trip at a time is slow)
#   FG64_JOBS [50000]   jobs of fg64
#   STEADY_JOBS [JOBS]  jobs of steady
#   PACED_JOBS [50000]  jobs of steady@5k (10 s at 5,000 jobs/s)
#   IDLE_CONNS [10000]  connections held by idle
#   ROWS [all]          space-separated subset of the rows below
#   SERVERS [gearwork gearmand gearmand-tuned]
#                       any of those and gearwork-default (Gearwork with its
#                       default durable store, a fresh data directory each start)
#   GEARMAND [/usr/sbin/gearmand]
#   GEARWORK_STORE [memory:]   --store of the "gearwork" server
#   OUT [a new temporary directory]
#
# Rows: submit submit@10k submit@1M drain1 drain8 steady steady@5k fg1 fg64
# echo memory idle. submit@10k and submit@1M measure JOBS submits with 10,000
# or 1,000,000 jobs already queued; steady@5k is steady paced to 5,000 jobs/s,
# a moderate load where wake-ups rather than throughput decide the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
JOBS=${JOBS:-200000}
FG1_JOBS=${FG1_JOBS:-20000}
FG64_JOBS=${FG64_JOBS:-50000}
STEADY_JOBS=${STEADY_JOBS:-$JOBS}
PACED_JOBS=${PACED_JOBS:-50000}
IDLE_CONNS=${IDLE_CONNS:-10000}
GEARMAND=${GEARMAND:-/usr/sbin/gearmand}
GEARWORK_STORE=${GEARWORK_STORE:-memory:}
ALL_ROWS="submit submit@10k submit@1M drain1 drain8 steady steady@5k fg1 fg64 echo memory idle"
ALL_SERVERS="gearwork gearmand gearmand-tuned"
ROWS=${ROWS:-$ALL_ROWS}
SERVERS=${SERVERS:-$ALL_SERVERS}

# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"
bench_init bench-compare

[ -x "$GEARMAND" ] || { log "$GEARMAND not found (apt-get install gearman-job-server)"; exit 1; }
build_gearwork

SERVER_PID=""
# start_server NAME PORT starts one server in the background; SERVER_PID
# is its process id.
start_server() {
	local name=$1 port=$2
	case "$name" in
	gearwork)
		# Only the Gearman port is measured; the HTTP API stays off so that
		# its fixed port cannot clash.
		"$GW" serve --listen "127.0.0.1:$port" --http off --store "$GEARWORK_STORE" --log-level warn \
			>>"$OUT/gearwork.log" 2>&1 &
		;;
	gearwork-default)
		rm -rf "$OUT/data"
		"$GW" serve --listen "127.0.0.1:$port" --http off --store "pebble:$OUT/data" --log-level warn \
			>>"$OUT/gearwork.log" 2>&1 &
		;;
	gearmand)
		"$GEARMAND" -t 1 -L 127.0.0.1 -p "$port" --log-file "$OUT/gearmand.log" \
			--pid-file "$OUT/gearmand.pid" &
		;;
	gearmand-tuned)
		"$GEARMAND" -t 1 --hashtable-buckets 1000003 -L 127.0.0.1 -p "$port" \
			--log-file "$OUT/gearmand.log" --pid-file "$OUT/gearmand.pid" &
		;;
	*) log "unknown server $name"; exit 1 ;;
	esac
	started "$name" "$port" $!
}

stop_server() {
	kill_server
	rm -rf "$OUT/data"
}

trap stop_server EXIT

# bench_args ROW prints the gearwork bench arguments of a row.
bench_args() {
	case "$1" in
	submit) echo "--scenario submit --jobs $JOBS" ;;
	submit@10k) echo "--scenario submit --jobs $JOBS --backlog 10000" ;;
	submit@1M) echo "--scenario submit --jobs $JOBS --backlog 1000000 --timeout 5m" ;;
	drain1 | drain8 | echo | memory) echo "--scenario $1 --jobs $JOBS" ;;
	steady) echo "--scenario steady --jobs $STEADY_JOBS" ;;
	steady@5k) echo "--scenario steady --jobs $PACED_JOBS --rate 5000" ;;
	fg1) echo "--scenario fg1 --jobs $FG1_JOBS" ;;
	fg64) echo "--scenario fg64 --jobs $FG64_JOBS" ;;
	idle) echo "--scenario idle --idle-conns $IDLE_CONNS" ;;
	*) log "unknown row $1"; exit 1 ;;
	esac
}

clock_start
run_matrix "$ROWS" "$SERVERS"
clock_stop

ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f×\n", a / b }'
}

metrics_of() {
	case "$1" in
	fg1 | fg64 | steady | steady@5k) echo "rate p50_us p99_us cpu_ns_per_job" ;;
	memory) echo "rss_bytes_per_job rate" ;;
	idle) echo "rss_bytes rss_bytes_per_job" ;;
	*) echo "rate cpu_ns_per_job" ;;
	esac
}

# metric_name ROW METRIC prints a column heading.
metric_name() {
	case "$2" in
	rate) echo "jobs/s" ;;
	p50_us) echo "p50 µs" ;;
	p99_us) echo "p99 µs" ;;
	cpu_ns_per_job) echo "server CPU ns/job" ;;
	rss_bytes_per_job) if [ "$1" = idle ]; then echo "RSS bytes/connection"; else echo "RSS bytes/job"; fi ;;
	rss_bytes) echo "RSS bytes" ;;
	esac
}

{
	echo "## Machine"
	echo
	echo "- CPU: $(cpu)"
	echo "- Memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
	echo "- Kernel: $(uname -sr)"
	echo "- Go: $(go version | cut -d' ' -f3-)"
	echo "- gearmand: $("$GEARMAND" --version 2>&1 | grep -m1 gearmand | sed "s/ - .*//")"
	echo "- gearwork: $(gearwork_version); \"gearwork\" runs with --store $GEARWORK_STORE, \"gearwork-default\" with its default store"
	load_and_date "$RUNS runs in ${elapsed}s"
	echo "- Settings: RUNS=$RUNS JOBS=$JOBS FG1_JOBS=$FG1_JOBS FG64_JOBS=$FG64_JOBS STEADY_JOBS=$STEADY_JOBS PACED_JOBS=$PACED_JOBS IDLE_CONNS=$IDLE_CONNS"
	echo
	echo "## Medians of $RUNS runs"
	echo
	echo "Ratios are gearwork ÷ gearmand: above 1 is better for jobs/s, below 1 is better"
	echo "for latency, CPU and memory."
	echo
	# Columns: each server, then each Gearwork server ÷ each gearmand.
	pairs=""
	for a in gearwork gearwork-default; do
		for b in gearmand gearmand-tuned; do
			if [[ " $SERVERS " == *" $a "* && " $SERVERS " == *" $b "* ]]; then pairs+=" $a/$b"; fi
		done
	done
	header="| scenario | metric |"
	rule="|---|---|"
	for server in $SERVERS; do header+=" $server |"; rule+="--:|"; done
	for p in $pairs; do header+=" ${p%/*} ÷ ${p#*/} |"; rule+="--:|"; done
	echo "$header"
	echo "$rule"
	for row in $ROWS; do
		for m in $(metrics_of "$row"); do
			line="| $row | $(metric_name "$row" "$m") |"
			for server in $SERVERS; do line+=" $(num "$(median "$row" "$server" "$m")") |"; done
			for p in $pairs; do
				line+=" $(ratio "$(median "$row" "${p%/*}" "$m")" "$(median "$row" "${p#*/}" "$m")") |"
			done
			echo "$line"
		done
	done
	echo
	echo "Submit rate with 1M jobs queued as a share of the rate with 10k queued (medians):"
	echo
	for server in $SERVERS; do
		deep=$(median submit@1M "$server" rate)
		shallow=$(median submit@10k "$server" rate)
		echo "- $server: $(awk -v a="$deep" -v b="$shallow" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.0f%%\n", 100 * a / b }')"
	done
	echo
	echo "Raw results: $RESULTS ($(wc -l <"$RESULTS") measurements, $failures failed)."
}
log "done in ${elapsed}s; raw results in $RESULTS"
