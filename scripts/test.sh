#!/usr/bin/env bash
# The whole test suite: installs dependencies, checks formatting and vet,
# runs every test with the race detector, and runs each fuzz target briefly.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh

echo "== no build outputs in git"
# A tracked executable binary (a built server, a test binary) is a build
# output that slipped into the repository: fail instead of shipping it.
binaries=$(git ls-files -z | xargs -0 -r file --no-pad -N | grep -E ': .*(ELF|Mach-O|PE32)' || true)
if [ -n "$binaries" ]; then
	echo "tracked executable binaries (untrack them, .gitignore lists build outputs):"; echo "$binaries"; exit 1
fi

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go') 2>/dev/null || true)
if [ -n "$unformatted" ]; then
	echo "gofmt needed:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...

echo "== packaging (systemd unit, static binary, container image)"
scripts/check-deploy.sh

echo "== go test -race"
# The JSON stream goes through scripts/testsummary, which prints what plain
# go test would (package lines, failed tests' output) and then lists every
# skipped test; a skip fails the run unless GEARWORK_ALLOW_SKIP=1.
summary="${TMPDIR:-/tmp}/gearwork-skipped.$$"
go build -o "${TMPDIR:-/tmp}/gearwork-testsummary.$$" ./scripts/testsummary
trap 'rm -f "${TMPDIR:-/tmp}/gearwork-testsummary.$$" "$summary"' EXIT
go test -race -count=1 -timeout 15m -json ./... | "${TMPDIR:-/tmp}/gearwork-testsummary.$$" -summary "$summary"

echo "== go test (without the race detector): the Gearman port's raw socket calls"
# With -race, sockets are read and written through package syscall
# (internal/gearmanapi/rawio_other.go), which the detector sees; the raw
# system calls a server makes otherwise (rawio_linux.go) are tested here.
go test -count=1 ./internal/gearmanapi/

echo "== fuzz (${FUZZTIME:=20s} each)"
# Every Fuzz target of every package, briefly. A longer run of one target:
#   go test -run '^$' -fuzz '^FuzzPolicy$' -fuzztime 30m ./internal/auth/
#
# fuzz_one PKG TARGET runs one target. Go 1.26's fuzzing engine can fail a
# run with a bare "context deadline exceeded" when -fuzztime ends while a
# worker is busy (golang/go#75804, fixed in Go 1.27): such a run found
# nothing and wrote no failing input, so it runs once more. Any other
# failure, or the same twice, fails.
fuzz_one() {
	local out attempt
	for attempt in 1 2; do
		if out=$(go test -run '^$' -fuzz "^$2\$" -fuzztime "$FUZZTIME" "$1" 2>&1); then
			echo "$out"
			return 0
		fi
		echo "$out"
		if ! grep -q 'context deadline exceeded' <<<"$out" || grep -q 'Failing input written' <<<"$out"; then
			return 1
		fi
		echo "-- $2: the fuzzing engine's deadline race (golang/go#75804), no failing input; attempt $attempt of 2"
	done
	return 1
}
for pkg in $(go list ./...); do
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		echo "-- $pkg $target"
		fuzz_one "$pkg" "$target"
	done
done

echo "== govulncheck"
# Installed from the module proxy at a pinned version. It needs the Go
# vulnerability database (vuln.go.dev); when that cannot be reached the
# check is reported as skipped rather than failing the run. Any other
# failure, including a vulnerability found, fails the run.
GOVULNCHECK=golang.org/x/vuln/cmd/govulncheck@v1.9.0
if ! vulnout=$(go run "$GOVULNCHECK" ./... 2>&1); then
	if grep -q 'fetching vulnerabilities' <<<"$vulnout"; then
		echo "govulncheck SKIPPED: the vulnerability database cannot be reached:"
		grep 'fetching vulnerabilities' <<<"$vulnout"
	else
		echo "$vulnout"
		exit 1
	fi
else
	echo "$vulnout"
fi
cat "$summary"
echo "== all tests passed"
