#!/usr/bin/env bash
# A queue larger than memory: Gearwork with its default store (pebble,
# --sync always) and payload tiering queues JOBS background jobs of PAYLOAD
# bytes, is restarted with all of them queued (replay), and hands a sample
# back, every payload checked. Reports the server's RSS (VmRSS and the peak
# VmHWM from /proc/PID/status) after submitting, after SETTLE more seconds,
# after the restart and after the sample, the submit rate, the restart time
# and the disk used, as Markdown on stdout; progress goes to stderr. The
# data directory is fresh and removed at the end (10M × 1 KiB is ~11 GB).
#
# Environment (defaults in brackets):
#   JOBS [10000000]        background jobs to queue
#   PAYLOAD [1024]         payload bytes per job (checkable, incompressible)
#   BUDGET [64MiB]         --memory-budget (payload bytes kept in memory)
#   LIMIT [1600MiB]        --memory-limit (soft limit on the Go heap)
#   CONNECTIONS [8]        submitting connections ...
#   INFLIGHT [64]          ... each with this many submits in flight
#   SAMPLE [100000]        jobs taken back after the restart and checked
#   SETTLE [30]            seconds to wait before reading the steady RSS
#   TIMEOUT [40m]          bound on the submitting and on the sample
#   OUT [a new temporary directory, on the same disk as the data]
set -euo pipefail
cd "$(dirname "$0")/.."

JOBS=${JOBS:-10000000}
PAYLOAD=${PAYLOAD:-1024}
BUDGET=${BUDGET:-64MiB}
LIMIT=${LIMIT:-1600MiB}
CONNECTIONS=${CONNECTIONS:-8}
INFLIGHT=${INFLIGHT:-64}
SAMPLE=${SAMPLE:-100000}
SETTLE=${SETTLE:-30}
TIMEOUT=${TIMEOUT:-40m}
QUEUE=bench-memory

# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"
bench_init bench-memory

build_gearwork

DATA="$OUT/data"
SERVER_PID=""
PORT=$(free_port)

# start_server starts the server on DATA; SERVER_PID is its process id and
# STARTED the time (epoch seconds, fractional) it was started.
start_server() {
	STARTED=$(date +%s.%N)
	"$GW" serve --listen "127.0.0.1:$PORT" --http off --store "pebble:$DATA" --sync always \
		--memory-budget "$BUDGET" --memory-limit "$LIMIT" --log-level info >>"$OUT/server.log" 2>&1 &
	SERVER_PID=$!
}

# wait_listening waits (up to 15 minutes: a replay of millions of jobs
# takes a while) until the server accepts connections and prints the
# seconds since STARTED.
wait_listening() {
	local i
	for ((i = 0; i < 18000; i++)); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
			awk -v a="$STARTED" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f\n", b - a }'
			return 0
		fi
		kill -0 "$SERVER_PID" 2>/dev/null || { log "the server exited; see $OUT/server.log"; exit 1; }
		sleep 0.05
	done
	log "the server did not listen within 15 minutes"
	exit 1
}


cleanup() {
	kill_server
	rm -rf "$DATA"
}
trap cleanup EXIT

# mem prints the server's VmRSS and VmHWM in MiB, as "rss hwm".
mem() {
	awk '/^VmRSS:/ { r = $2 } /^VmHWM:/ { h = $2 } END { printf "%.0f %.0f\n", r / 1024, h / 1024 }' "/proc/$SERVER_PID/status"
}

record() {
	echo "$*" >>"$RESULTS"
	log "$*"
}

rm -rf "$DATA"
clock_start
start_server
wait_listening >/dev/null
log "queueing $JOBS jobs of $PAYLOAD bytes ($CONNECTIONS connections × $INFLIGHT in flight)"
line=$("$GW" bench --servers "127.0.0.1:$PORT" --pid "$SERVER_PID" --scenario memory --queue "$QUEUE" \
	--jobs "$JOBS" --payload "$PAYLOAD" --connections "$CONNECTIONS" --inflight "$INFLIGHT" \
	--no-cleanup --timeout "$TIMEOUT" 2>>"$OUT/bench.log")
submit_rate=$(grep -o 'rate=[0-9.]*' <<<"$line" | cut -d= -f2)
submit_secs=$(grep -o 'seconds=[0-9.]*' <<<"$line" | cut -d= -f2)
read -r rss hwm < <(mem)
record "submitted rate=$submit_rate seconds=$submit_secs rss_mib=$rss hwm_mib=$hwm"
sleep "$SETTLE"
read -r rss_settled hwm_settled < <(mem)
record "settled seconds=$SETTLE rss_mib=$rss_settled hwm_mib=$hwm_settled"
disk=$(du -sm "$DATA" | cut -f1)
record "disk mib=$disk"

log "restarting with $JOBS jobs queued"
kill_server
start_server
restart_secs=$(wait_listening)
read -r rss_replayed hwm_replayed < <(mem)
record "restarted seconds=$restart_secs rss_mib=$rss_replayed hwm_mib=$hwm_replayed"
sleep "$SETTLE"
read -r rss_replay_settled hwm_replay_settled < <(mem)
record "restart-settled seconds=$SETTLE rss_mib=$rss_replay_settled hwm_mib=$hwm_replay_settled"

log "taking $SAMPLE jobs back and checking their payloads"
line=$("$GW" bench --servers "127.0.0.1:$PORT" --pid "$SERVER_PID" --scenario verify --queue "$QUEUE" \
	--jobs "$SAMPLE" --payload "$PAYLOAD" --timeout "$TIMEOUT" 2>>"$OUT/bench.log")
verify_rate=$(grep -o 'rate=[0-9.]*' <<<"$line" | cut -d= -f2)
read -r rss_verified hwm_verified < <(mem)
record "verified jobs=$SAMPLE rate=$verify_rate rss_mib=$rss_verified hwm_mib=$hwm_verified"
replayed=$(grep -o 'msg="serve: listening".* jobs=[0-9]*' "$OUT/server.log" | tail -1 | grep -o 'jobs=[0-9]*' | cut -d= -f2)
kill_server
rm -rf "$DATA"
clock_stop

{
	echo "- CPU: $(cpu); memory: $(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo); disk under $OUT: $(df -T "$OUT" | awk 'NR == 2 {print $2}')"
	echo "- $(gearwork_version)"
	load_and_date "${elapsed}s in all"
	echo "- Settings: JOBS=$JOBS PAYLOAD=$PAYLOAD BUDGET=$BUDGET LIMIT=$LIMIT CONNECTIONS=$CONNECTIONS INFLIGHT=$INFLIGHT SAMPLE=$SAMPLE SETTLE=$SETTLE"
	echo
	echo "| phase | figure |"
	echo "|---|--:|"
	echo "| submit $JOBS × $PAYLOAD B (--sync always) | $(printf '%.0f' "$submit_rate") jobs/s (${submit_secs%.*} s) |"
	echo "| RSS after submitting (VmRSS / peak VmHWM) | $rss / $hwm MiB |"
	echo "| RSS ${SETTLE}s later | $rss_settled / $hwm_settled MiB |"
	echo "| disk used (data directory) | $disk MiB |"
	echo "| restart with $replayed jobs queued, until it accepts connections | $restart_secs s |"
	echo "| RSS after the restart (VmRSS / peak VmHWM) | $rss_replayed / $hwm_replayed MiB |"
	echo "| RSS ${SETTLE}s later | $rss_replay_settled / $hwm_replay_settled MiB |"
	echo "| $SAMPLE jobs taken back, payloads checked | $(printf '%.0f' "$verify_rate") jobs/s; RSS $rss_verified / $hwm_verified MiB |"
	echo
	echo "Raw results: $RESULTS"
}
log "done in ${elapsed}s"
