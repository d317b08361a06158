# Shell helpers shared by scripts/bench-compare.sh, scripts/bench-durable.sh
# and scripts/bench-memory.sh (sourced, not run). They expect RESULTS (the results file) and a log
# function from the script that sources them.

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

# kill_server stops the server started as SERVER_PID, if any, and waits for
# it.
kill_server() {
	if [ -n "$SERVER_PID" ]; then
		kill "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
	fi
	SERVER_PID=""
}
