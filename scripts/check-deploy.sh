#!/usr/bin/env bash
# Checks the packaging: deploy/gearwork.service with systemd-analyze verify,
# the static binary the Dockerfile builds, and the image itself (build, run,
# health check) with podman or docker. Where docker.io cannot be reached the
# build stage runs on a stand-in Go image made from this machine's Go
# toolchain (see below). A container tool that cannot build or run the image
# fails the script unless GEARWORK_ALLOW_SKIP=1, which reports it as SKIPPED.
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
elif [ "${GEARWORK_ALLOW_SKIP:-}" = 1 ]; then
	echo "systemd-analyze SKIPPED: not installed (Debian package systemd; GEARWORK_ALLOW_SKIP=1)"
else
	echo "systemd-analyze is missing (scripts/deps.sh installs the Debian package systemd; GEARWORK_ALLOW_SKIP=1 to skip it)"; exit 1
fi

echo "-- Dockerfile"
# skip_or_fail explains why the image cannot be checked here and fails,
# unless GEARWORK_ALLOW_SKIP=1 (the suite's rule against silent skips).
skip_or_fail() {
	echo "$1"
	if [ "${GEARWORK_ALLOW_SKIP:-}" = 1 ]; then echo "container image SKIPPED (GEARWORK_ALLOW_SKIP=1)"; exit 0; fi
	echo "the container image cannot be checked (GEARWORK_ALLOW_SKIP=1 to skip it)"; exit 1
}
tool=""
for t in podman docker; do
	if command -v "$t" >/dev/null && timeout 30 "$t" info >/dev/null 2>&1; then tool=$t; break; fi
done
[ -n "$tool" ] || skip_or_fail "no working podman or docker (Debian packages podman and runc)"

# The build stage's base: the official Go image when it can be pulled, else
# a stand-in with the same layout (Go in /usr/local/go, GOPATH /go, root's
# home /root) made from this machine's statically linked Go toolchain and
# busybox for /bin/sh. It is kept, tagged by Go version, for the next run.
base=$(sed -n 's/^ARG GO_IMAGE=//p' Dockerfile)
[ -n "$base" ] || { echo "Dockerfile has no ARG GO_IMAGE=..."; exit 1; }
build_args=()
if ! "$tool" image inspect "$base" >/dev/null 2>&1 && ! pull=$(timeout 120 "$tool" pull -q "$base" 2>&1); then
	echo "$tool cannot pull $base ($(echo "$pull" | tail -1)): using a stand-in made from this machine's Go"
	goroot=$(go env GOROOT)
	gover=$(go env GOVERSION)
	base=localhost/gearwork-go-base:$gover
	if ! "$tool" image inspect "$base" >/dev/null 2>&1; then
		file -L "$goroot/bin/go" | grep -q 'statically linked' || { echo "$goroot/bin/go is not statically linked: cannot make a stand-in"; exit 1; }
		busybox=$(command -v busybox || true)
		if [ -z "$busybox" ] || ! file -L "$busybox" | grep -q 'statically linked'; then
			echo "no static busybox (Debian package busybox-static): cannot make a stand-in"; exit 1
		fi
		root="$tmp/base"
		mkdir -p "$root"/{bin,tmp,root,go/bin,go/pkg/mod,etc/ssl/certs,usr/local}
		chmod 1777 "$root/tmp"
		cp "$busybox" "$root/bin/busybox"
		ln -s busybox "$root/bin/sh"
		echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
		echo 'root:x:0:' >"$root/etc/group"
		# For the module proxy, when go mod download needs it.
		cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
		tar -cf - -C "$root" . -C "$(dirname "$goroot")" --transform "s|^$(basename "$goroot")|usr/local/go|" "$(basename "$goroot")" |
			timeout 300 "$tool" import \
				--change 'ENV PATH=/usr/local/go/bin:/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
				--change 'ENV GOPATH=/go' --change 'ENV GOTOOLCHAIN=local' --change 'ENV HOME=/root' \
				--change 'WORKDIR /go' - "$base" >"$tmp/import.out" 2>&1 ||
			{ cat "$tmp/import.out"; echo "cannot make $base"; exit 1; }
		rm -rf "$root"
		echo "made $base"
	fi
	build_args+=(--build-arg "GO_IMAGE=$base")
fi

# Runtime: the tool's default, or, where that fails (crun cannot set
# RLIMIT_NOFILE or use hybrid cgroups on some hosts), runc with explicit
# limits.
run_opts=()
if ! out=$(timeout 60 "$tool" run --rm --network none "$base" /bin/sh -c true 2>&1); then
	echo "$tool run with the default runtime fails: $(echo "$out" | tail -1)"
	runc=$(command -v runc || echo /usr/sbin/runc)
	run_opts=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
	[ "$tool" = podman ] && [ -x "$runc" ] && run_opts=(--runtime "$runc" "${run_opts[@]}")
	if ! out=$(timeout 60 "$tool" run --rm --network none "${run_opts[@]}" "$base" /bin/sh -c true 2>&1); then
		skip_or_fail "$tool cannot run containers here: $(echo "$out" | tail -1)"
	fi
	echo "using ${run_opts[*]}"
fi

# With podman the build uses the host's module and build caches (mounted
# where the Go image keeps them) and its network, so that it is quick and
# needs the module proxy only for what is not cached (docker build cannot
# mount volumes: it downloads and compiles everything).
image=gearwork-check-$$
trap 'rm -rf "$tmp"; "$tool" rm -f "$image-run" >/dev/null 2>&1 || true; "$tool" rmi -f "$image" >/dev/null 2>&1 || true' EXIT
mounts=()
if [ "$tool" = podman ]; then
	mounts=(--volume "$(go env GOMODCACHE):/go/pkg/mod" --volume "$(go env GOCACHE):/root/.cache/go-build")
	build_args+=(--format docker --layers=false)
fi
start=$SECONDS
if ! timeout 900 "$tool" build -q "${run_opts[@]}" "${build_args[@]}" "${mounts[@]}" --network host -t "$image" . >"$tmp/build.out" 2>&1; then
	cat "$tmp/build.out"; echo "the image does not build"; exit 1
fi
echo "image built in $((SECONDS - start))s"
# podman logs that it cannot reach systemd to time the HEALTHCHECK: stderr
# is shown only when a run fails.
"$tool" run --rm --network none "${run_opts[@]}" --entrypoint /usr/local/bin/gearwork "$image" --version 2>"$tmp/run.err" ||
	{ cat "$tmp/run.err"; exit 1; }
user=$("$tool" image inspect -f '{{.Config.User}}' "$image")
[ "$user" = 65532:65532 ] || { echo "the image runs as \"$user\", not 65532:65532"; exit 1; }
# No network but loopback (nothing published): the health check runs inside
# the container, and GEARWORK_INSECURE=true is what a loopback-only
# deployment would give.
# podman runs the image's own HEALTHCHECK (its timer needs systemd, so it is
# run here on demand); docker has no such command: the same check by exec.
health=(exec "$image-run" /usr/local/bin/gearwork health --url http://127.0.0.1:4780/readyz)
health_opts=()
if [ "$tool" = podman ]; then
	"$tool" image inspect -f '{{.Config.Healthcheck.Test}}' "$image" | grep -q 'gearwork health' ||
		{ echo "the image has no HEALTHCHECK running gearwork health"; exit 1; }
	health=(healthcheck run "$image-run")
	health_opts=(--health-interval disable)
fi
"$tool" run -d --network none "${run_opts[@]}" "${health_opts[@]}" --name "$image-run" -e GEARWORK_INSECURE=true "$image" >/dev/null 2>"$tmp/run.err" ||
	{ cat "$tmp/run.err"; exit 1; }
for _ in $(seq 60); do
	if "$tool" "${health[@]}"; then echo "container health check: ok"; exit 0; fi
	if [ "$("$tool" inspect -f '{{.State.Running}}' "$image-run")" != true ]; then break; fi
	sleep 1
done
"$tool" logs "$image-run"; echo "the container never became ready"; exit 1
