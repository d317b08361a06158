# Shell helpers shared by scripts/bench-compare.sh, scripts/bench-durable.sh,
# scripts/bench-history.sh and scripts/bench-memory.sh (sourced, not run). A script sources them
# first and calls bench_init with its name.

# bench_init NAME sets up the bench script NAME: OUT (a new temporary
# directory unless it is set) with an empty results file RESULTS in it, and
# log, which prefixes its messages with NAME.
bench_init() {
	BENCH_NAME=$1
	OUT=${OUT:-$(mktemp -d "/tmp/$1.XXXXXX")}
	mkdir -p "$OUT"
	RESULTS="$OUT/results.txt"
	: >"$RESULTS"
}

# log MESSAGE... writes a progress message to stderr.
log() { echo "$BENCH_NAME: $*" >&2; }

# build_gearwork builds gearwork into OUT; GW is its path.
build_gearwork() {
	log "building gearwork into $OUT"
	go build -o "$OUT/gearwork" ./cmd/gearwork
	GW="$OUT/gearwork"
}

# free_port prints a loopback port nothing listens on.
free_port() {
	local port i
	for ((i = 0; i < 100; i++)); do
		port=$((20000 + RANDOM % 12000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "$port"
			return
		fi
	done
	log "no free port found"
	exit 1
}

# wait_port waits up to 10 s until 127.0.0.1:$1 accepts connections.
wait_port() {
	local i
	for ((i = 0; i < 200; i++)); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.05
	done
	return 1
}

# median ROW SERVER KEY prints the median of KEY over the runs, or "-".
median() {
	awk -v row="$1" -v srv="$2" -v key="$3" '
		$1 == "row=" row && $2 == "target=" srv {
			for (i = 3; i <= NF; i++) if (index($i, key "=") == 1) print substr($i, length(key) + 2)
		}' "$RESULTS" | sort -g | awk '
		{ v[NR] = $1 }
		END {
			if (NR == 0) { print "-"; exit }
			if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2
		}'
}

# num VALUE prints a number readably (thousands separators, 3 significant
# digits below 100).
num() {
	awk -v v="$1" 'BEGIN {
		if (v == "-") { print "-"; exit }
		if (v + 0 >= 100) { s = sprintf("%.0f", v); out = ""
			while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
			print s out } else printf "%.3g\n", v }'
}

# clock_start records when the measurements start (start_time) and the
# load average then (load_before).
clock_start() {
	start_time=$(date +%s)
	load_before=$(cut -d' ' -f1-3 /proc/loadavg)
}

# clock_stop sets elapsed, the seconds since clock_start, and load_after.
clock_stop() {
	elapsed=$(($(date +%s) - start_time))
	load_after=$(cut -d' ' -f1-3 /proc/loadavg)
}

# cpu prints the CPU model and the number of cores.
cpu() {
	echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores (nproc)"
}

# gearwork_version prints the version of $GW and the commit checked out.
gearwork_version() {
	echo "$("$GW" version) at $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
}

# load_and_date WHAT prints the report lines of the load average around the
# measurements (see clock_start and clock_stop) and of the date, followed
# by WHAT (for example "3 runs in 120s").
load_and_date() {
	echo "- Load average (1/5/15 min) before: $load_before, after: $load_after"
	echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); $1"
}

# stop_pid PID stops a process this script started in the background, if
# PID is set, and waits for it.
stop_pid() {
	if [ -n "$1" ]; then
		kill "$1" 2>/dev/null || true
		wait "$1" 2>/dev/null || true
	fi
}

# kill_server stops the server started as SERVER_PID, if any, and waits for
# it.
kill_server() {
	stop_pid "$SERVER_PID"
	SERVER_PID=""
}

# started NAME PORT PID records PID, a server just started in the
# background, as SERVER_PID and waits until it listens on PORT; when it
# does not, it stops it (stop_server, from the sourcing script) and exits.
started() {
	SERVER_PID=$3
	if ! wait_port "$2"; then
		log "$1 did not start on port $2"
		stop_server
		exit 1
	fi
}

# run_matrix ROWS SERVERS runs every row against every server, RUNS times.
# Runs are interleaved (every server for one row, then the next row) so
# that a change in the machine's load hits all servers alike, and every
# other round takes the servers in reverse order, so that none always runs
# first or right after the same other one (whose exit may still cost the
# machine: a Pebble server's files going, say). For each it
# starts the server (start_server NAME PORT, from the sourcing script), runs
# "$GW bench" with the arguments "bench_args ROW SERVER" prints, appends the
# result line to RESULTS, logs its rate and stops the server (stop_server).
# It sets failures to the number of measurements that failed.
run_matrix() {
	local rows=$1 servers=$2 run row server port line order
	failures=0
	for ((run = 1; run <= RUNS; run++)); do
		order=$servers
		if ((run % 2 == 0)); then
			order=$(tr ' ' '\n' <<<"$servers" | tac | tr '\n' ' ')
		fi
		for row in $rows; do
			for server in $order; do
				port=$(free_port)
				start_server "$server" "$port"
				# shellcheck disable=SC2046 # word splitting of the arguments is wanted
				if line=$("$GW" bench --servers "127.0.0.1:$port" --pid "$SERVER_PID" --no-cleanup \
					$(bench_args "$row" "$server") 2>>"$OUT/bench.log"); then
					echo "row=$row target=$server run=$run $line" >>"$RESULTS"
					log "run $run/$RUNS $row $server: $(grep -o 'rate=[0-9.]*' <<<"$line")"
				else
					log "run $run/$RUNS $row $server: FAILED (see $OUT/bench.log)"
					failures=$((failures + 1))
				fi
				stop_server
			done
		done
	done
}
