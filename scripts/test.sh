#!/usr/bin/env bash
# The whole test suite: installs dependencies, checks formatting and vet,
# runs every test with the race detector, and runs each fuzz target briefly.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go') 2>/dev/null || true)
if [ -n "$unformatted" ]; then
	echo "gofmt needed:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...

echo "== go test -race"
go test -race -count=1 -timeout 15m ./...

echo "== fuzz (${FUZZTIME:=20s} each)"
for target in $(go test -list '^Fuzz' ./gearman/ | grep '^Fuzz' || true); do
	go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" ./gearman/
done
echo "== all tests passed"
