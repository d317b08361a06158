#!/usr/bin/env bash
# Checks the packaging: deploy/gearwork.service with systemd-analyze verify,
# the static binary the Dockerfile builds, and, where a container tool can
# pull the base images and run containers, the image itself (build, run,
# health check). What cannot run on this machine is reported as SKIPPED.
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "-- go install"
# "go install github.com/gearwork/gearwork/cmd/gearwork@version" refuses a
# module with replace directives (README, docs/operations.md).
if go mod edit -json | grep -qF '"Replace": ['; then
	echo "go.mod has replace directives: go install ...@version would fail"; exit 1
fi
echo "no replace directives: ok"

echo "-- static binary (as the Dockerfile builds it)"
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$tmp/gearwork" ./cmd/gearwork
if ! file "$tmp/gearwork" | grep -q 'statically linked'; then
	file "$tmp/gearwork"; echo "the binary is not static"; exit 1
fi
"$tmp/gearwork" --version

echo "-- deploy/gearwork.service"
if command -v systemd-analyze >/dev/null; then
	# verify needs ExecStart's binary to exist: point it at the one built.
	sed "s|/usr/local/bin/gearwork|$tmp/gearwork|" deploy/gearwork.service >"$tmp/gearwork.service"
	out=$(systemd-analyze verify "$tmp/gearwork.service" 2>&1) || { echo "$out"; exit 1; }
	if [ -n "$out" ]; then
		# Unknown keys and similar mistakes are only warnings: fail on them too.
		echo "$out"; exit 1
	fi
	echo "systemd-analyze verify: ok"
else
	echo "systemd-analyze SKIPPED: not installed (Debian package systemd)"
fi

echo "-- Dockerfile"
tool=""
for t in podman docker; do
	if command -v "$t" >/dev/null && timeout 30 "$t" info >/dev/null 2>&1; then tool=$t; break; fi
done
if [ -z "$tool" ]; then
	echo "container build SKIPPED: no working podman or docker"
	exit 0
fi
base=$(sed -n 's/^FROM \([^ ]*\) AS build$/\1/p' Dockerfile)
if ! pull=$(timeout 120 "$tool" pull "$base" 2>&1); then
	echo "container build SKIPPED: $tool cannot pull $base:"; echo "$pull" | tail -1
	exit 0
fi
image=gearwork-check-$$
timeout 900 "$tool" build -t "$image" .
trap 'rm -rf "$tmp"; "$tool" rm -f "$image-run" >/dev/null 2>&1 || true; "$tool" rmi -f "$image" >/dev/null 2>&1 || true' EXIT
if ! "$tool" run -d --name "$image-run" -e GEARWORK_INSECURE=true "$image" >/dev/null 2>"$tmp/run.err"; then
	echo "container run SKIPPED: $tool cannot run containers here:"; tail -1 "$tmp/run.err"
	exit 0
fi
for _ in $(seq 60); do
	if "$tool" exec "$image-run" /usr/local/bin/gearwork health; then echo "container health check: ok"; exit 0; fi
	sleep 1
done
"$tool" logs "$image-run"; echo "the container never became ready"; exit 1
