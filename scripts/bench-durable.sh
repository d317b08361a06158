#!/usr/bin/env bash
# Durable background jobs: Gearwork's default store (pebble, --sync always)
# and its memory store next to gearmand with its sqlite and redis queues, in
# one run; then the HTTP API's submit rate with wrk. Every measurement gets a
# fresh server process (and a fresh data directory, database or redis).
# Prints the medians and the ratios as Markdown on stdout; progress goes to
# stderr, raw result lines to $OUT/results.txt.
#
# Environment (defaults in brackets):
#   RUNS [3]               measurements per scenario and server
#   JOBS [100000]          jobs per scenario for Gearwork
#   SQLITE_JOBS [5000]     jobs per scenario for gearmand -q libsqlite3 (slow)
#   REDIS_JOBS [20000]     jobs per scenario for gearmand -q redis
#   SCENARIOS [submit steady steady64 steady8x8 drain8]
#                          steady64 is steady with --workers 64: steady lets
#                          at most --workers jobs wait between submit and
#                          start, so with 8 a durable server is bound by the
#                          fsync latency rather than its throughput;
#                          steady8x8 is steady with 8 workers keeping 8 grabs
#                          in flight each (--grabs 8, as drain8 does), so
#                          neither side waits a round trip per job
#   SERVERS [gearwork-durable gearwork-memory gearmand-sqlite gearmand-redis gearmand-redis-always]
#                          gearmand-redis runs redis with appendfsync
#                          everysec, gearmand-redis-always with appendfsync
#                          always (the setting that loses no acknowledged job)
#   HTTP [1]               0 skips the wrk runs
#   GEARMAND [/usr/sbin/gearmand]  REDIS [/usr/bin/redis-server]
#   OUT [a new temporary directory, on the same disk as the data]
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
JOBS=${JOBS:-100000}
SQLITE_JOBS=${SQLITE_JOBS:-5000}
REDIS_JOBS=${REDIS_JOBS:-20000}
SCENARIOS=${SCENARIOS:-submit steady steady64 steady8x8 drain8}
SERVERS=${SERVERS:-gearwork-durable gearwork-memory gearmand-sqlite gearmand-redis gearmand-redis-always}
HTTP=${HTTP:-1}
GEARMAND=${GEARMAND:-/usr/sbin/gearmand}
REDIS=${REDIS:-/usr/bin/redis-server}

# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"
bench_init bench-durable

[ -x "$GEARMAND" ] || { log "$GEARMAND not found (apt-get install gearman-job-server)"; exit 1; }
[ -x "$REDIS" ] || { log "$REDIS not found (apt-get install redis-server)"; exit 1; }
build_gearwork

SERVER_PID="" REDIS_PID=""
DATA="$OUT/data"

# start_redis FSYNC starts a private redis-server with an append-only file
# fsynced as FSYNC (everysec or always) and no snapshots; REDIS_PORT is its
# port.
start_redis() {
	REDIS_PORT=$(free_port)
	"$REDIS" --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly yes \
		--appendfsync "$1" --dir "$DATA" --logfile "$OUT/redis.log" &
	REDIS_PID=$!
	wait_port "$REDIS_PORT" || { log "redis-server did not start"; exit 1; }
}

# start_server NAME PORT starts one server in the background; SERVER_PID
# is its process id.
start_server() {
	local name=$1 port=$2
	rm -rf "$DATA"
	mkdir -p "$DATA"
	case "$name" in
	gearwork-durable)
		"$GW" serve --listen "127.0.0.1:$port" --http off --store "pebble:$DATA/pebble" --sync always \
			--log-level warn >>"$OUT/gearwork.log" 2>&1 &
		;;
	gearwork-memory)
		"$GW" serve --listen "127.0.0.1:$port" --http off --store memory: --log-level warn \
			>>"$OUT/gearwork.log" 2>&1 &
		;;
	gearmand-sqlite)
		"$GEARMAND" -t 1 -L 127.0.0.1 -p "$port" --log-file "$OUT/gearmand.log" \
			-q libsqlite3 --libsqlite3-db "$DATA/q.db" &
		;;
	gearmand-redis | gearmand-redis-always)
		if [ "$name" = gearmand-redis ]; then start_redis everysec; else start_redis always; fi
		"$GEARMAND" -t 1 -L 127.0.0.1 -p "$port" --log-file "$OUT/gearmand.log" \
			-q redis --redis-server 127.0.0.1 --redis-port "$REDIS_PORT" &
		;;
	*) log "unknown server $name"; exit 1 ;;
	esac
	started "$name" "$port" $!
}

stop_server() {
	kill_server
	stop_pid "$REDIS_PID"
	REDIS_PID=""
	rm -rf "$DATA"
}
trap stop_server EXIT

jobs_of() {
	case "$1" in
	gearmand-sqlite) echo "$SQLITE_JOBS" ;;
	gearmand-redis*) echo "$REDIS_JOBS" ;;
	*) echo "$JOBS" ;;
	esac
}

# bench_args SCENARIO SERVER prints the gearwork bench arguments.
bench_args() {
	local n
	n=$(jobs_of "$2")
	case "$1" in
	steady64) echo "--timeout 5m --scenario steady --workers 64 --jobs $n" ;;
	steady8x8) echo "--timeout 5m --scenario steady --workers 8 --grabs 8 --jobs $n" ;;
	*) echo "--timeout 5m --scenario $1 --jobs $n" ;;
	esac
}

clock_start
run_matrix "$SCENARIOS" "$SERVERS"

# HTTP: POST /v1/functions/f/jobs with a 64-byte body, memory and durable
# store, RUNS times each.
HTTP_SERVERS=""
if [ "$HTTP" = 1 ]; then
	command -v wrk >/dev/null || { log "wrk not found (apt-get install wrk)"; exit 1; }
	HTTP_SERVERS="http-memory http-durable"
	for ((run = 1; run <= RUNS; run++)); do
		for server in $HTTP_SERVERS; do
			port=$(free_port) hport=$(free_port)
			rm -rf "$DATA"
			mkdir -p "$DATA"
			store="memory:"
			[ "$server" = http-durable ] && store="pebble:$DATA/pebble"
			"$GW" serve --listen "127.0.0.1:$port" --http "127.0.0.1:$hport" --store "$store" \
				--log-level warn >>"$OUT/gearwork.log" 2>&1 &
			started "$server" "$hport" $!
			out=$(wrk -t2 -c16 -d10s -s scripts/wrk-post.lua "http://127.0.0.1:$hport/v1/functions/f/jobs")
			echo "$out" >>"$OUT/wrk.log"
			rate=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
			non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
			echo "row=http target=$server run=$run rate=$rate non2xx=${non2xx:-0}" >>"$RESULTS"
			log "run $run/$RUNS http $server: rate=$rate non-2xx=${non2xx:-0}"
			stop_server
		done
	done
fi
clock_stop

# ratio A B prints A/B, as a percentage with PCT=1.
ratio() {
	awk -v a="$1" -v b="$2" -v pct="${3:-0}" 'BEGIN {
		if (a == "-" || b == "-" || b + 0 == 0) print "-"
		else if (pct) printf "%.0f%%\n", 100 * a / b
		else printf "%.1f×\n", a / b }'
}

{
	echo "- CPU: $(cpu); disk under $OUT: $(df -T "$OUT" | awk 'NR == 2 {print $2}')"
	echo "- gearwork $(gearwork_version); $("$GEARMAND" --version 2>&1 | grep -m1 gearmand | sed "s/ - .*//"); $("$REDIS" --version | cut -d' ' -f1-3)"
	load_and_date "$RUNS runs in ${elapsed}s"
	echo "- Settings: RUNS=$RUNS JOBS=$JOBS SQLITE_JOBS=$SQLITE_JOBS REDIS_JOBS=$REDIS_JOBS; $failures measurements failed"
	echo
	header="| scenario | metric |" rule="|---|---|"
	for server in $SERVERS; do header+=" $server |"; rule+="--:|"; done
	echo "$header"
	echo "$rule"
	for sc in $SCENARIOS; do
		for m in rate p50_us p99_us; do
			case "$sc:$m" in submit:p50_us | submit:p99_us | drain8:p50_us | drain8:p99_us) continue ;; esac
			line="| $sc | $m |"
			for server in $SERVERS; do line+=" $(num "$(median "$sc" "$server" "$m")") |"; done
			echo "$line"
		done
	done
	echo
	for sc in $SCENARIOS; do
		d=$(median "$sc" gearwork-durable rate)
		echo "- $sc: durable ÷ gearmand-sqlite $(ratio "$d" "$(median "$sc" gearmand-sqlite rate)"), ÷ gearmand-redis $(ratio "$d" "$(median "$sc" gearmand-redis rate)"), ÷ gearmand-redis-always $(ratio "$d" "$(median "$sc" gearmand-redis-always rate)"), share of gearwork-memory $(ratio "$d" "$(median "$sc" gearwork-memory rate)" 1)"
	done
	for server in $HTTP_SERVERS; do
		echo "- HTTP $server: $(num "$(median http "$server" rate)") req/s (median; non-2xx: $(awk -v s="$server" '$1 == "row=http" && $2 == "target=" s {split($5, a, "="); t += a[2]} END {print t + 0}' "$RESULTS"))"
	done
	echo
	echo "Raw results: $RESULTS"
}
log "done in ${elapsed}s; raw results in $RESULTS"
