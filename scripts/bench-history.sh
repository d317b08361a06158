#!/bin/bash
# Job records' cost: gearwork bench submit, drain1 and drain8 with the
# history at its default (24h / 10,000 records per function) and off
# (defaults: history: 0), for the memory and Pebble stores, interleaved.
# Each line is one run: the store, the mode and gearwork bench's output
# (rate and the server's cpu_ns_per_job).
#   RUNS=3 JOBS=100000 scripts/bench-history.sh
set -u
RUNS=${RUNS:-3}
JOBS=${JOBS:-100000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/gearwork" ./cmd/gearwork || exit 1
printf 'defaults:\n  history: 0\n' > "$tmp/off.yaml"
printf 'defaults:\n  history: 24h\n' > "$tmp/on.yaml"
for run in $(seq 1 "$RUNS"); do
  for store in memory pebble; do
    for mode in on off; do
      for sc in submit drain1 drain8; do
        port=$((20000 + RANDOM % 20000))
        dir=$(mktemp -d "$tmp/data.XXXX")
        st="memory:"; [ "$store" = pebble ] && st="pebble:$dir"
        "$tmp/gearwork" serve --listen 127.0.0.1:$port --http off --store "$st" --config "$tmp/$mode.yaml" --log-level warn >/dev/null 2>&1 &
        pid=$!
        for _ in $(seq 1 100); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
        out=$(timeout 300 "$tmp/gearwork" bench --servers 127.0.0.1:$port --pid $pid --no-cleanup --scenario $sc --jobs "$JOBS" 2>/dev/null)
        kill $pid; wait $pid 2>/dev/null
        rm -rf "$dir"
        echo "run=$run store=$store history=$mode $out"
      done
    done
  done
done
