#!/usr/bin/env bash
# Installs what the test suite needs, idempotently: Debian packages only when
# missing (after apt-get update). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

# curl and chromium drive the HTTP API and the dashboard in test/http; wrk
# measures HTTP submits for BENCHMARKS.md; openssl (s_client) is a TLS client
# for test/security; file finds tracked binaries in scripts/test.sh; postgresql is started by the PostgreSQL store's and the
# cluster tests (internal/store/postgres/pgtest, in a temporary directory);
# nodejs (and npm) install tools/openapi (below); podman builds and runs
# the Dockerfile's image in scripts/check-deploy.sh, with runc where its
# default runtime (crun) cannot run, and busybox-static's /bin/sh in the
# stand-in Go image it makes when docker.io cannot be reached. gcc, libc6-dev
# and libgearman-dev build test/compat's libgearman client and worker
# (testdata/c/gwlib.c).
packages=(file nodejs gearman-tools gearman-job-server php-cli php-gearman libgearman-client-perl gcc libc6-dev libgearman-dev curl chromium wrk openssl postgresql podman runc busybox-static systemd)
missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
if ((${#missing[@]} > 0)); then
	echo "deps: installing ${missing[*]}"
	$SUDO apt-get update -q
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The OpenAPI tools (a validator and a client generator) that
# internal/httpapi's TestOpenAPIDocument runs, at the versions
# tools/openapi/package-lock.json pins.
if ! command -v npm >/dev/null; then
	# Debian's nodejs comes without npm (NodeSource's includes it).
	$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends npm
fi
if ! (cd tools/openapi && npm ls --silent >/dev/null 2>&1); then
	echo "deps: installing tools/openapi"
	(cd tools/openapi && npm ci --no-audit --no-fund --loglevel=error)
fi

# The Node Gearman libraries that test/compat runs against Gearwork, pinned
# with all their dependencies in test/compat/testdata/node/package.json and
# package-lock.json, go into a cache directory outside the repository
# ($GEARWORK_NODE_CACHE, by default ~/.cache/gearwork/node) with npm ci, so
# that every checkout tests against the same packages; installed again
# only when one of those files changed.
root="$(pwd)"
node_src="$root/test/compat/testdata/node"
node_dir="${GEARWORK_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gearwork/node}"
if ! cmp -s "$node_src/package.json" "$node_dir/package.json" ||
	! cmp -s "$node_src/package-lock.json" "$node_dir/package-lock.json" || [ ! -d "$node_dir/node_modules" ]; then
	echo "deps: installing Node packages into $node_dir"
	command -v npm >/dev/null || { echo "deps: npm is not installed (Node.js and npm are needed by test/compat)"; exit 1; }
	mkdir -p "$node_dir"
	rm -f "$node_dir/package.json" "$node_dir/package-lock.json"
	cp "$node_src/package-lock.json" "$node_dir/package-lock.json"
	cp "$node_src/package.json" "$node_dir/package.json.new"
	# A failed install leaves no package.json: the next run installs again.
	(cd "$node_dir" && mv package.json.new package.json &&
		npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) ||
		{ rm -f "$node_dir/package.json"; exit 1; }
fi

# The Go client libraries that test/compat runs against Gearwork, into the
# module cache: each test/compat/testdata/golib/*/go.mod names the library's
# version on its "// source:" line and lists its dependencies.
for mod in "$root"/test/compat/testdata/golib/*/; do
	src=$(sed -n 's|^// source: ||p' "$mod/go.mod")
	(cd "$mod" && GOFLAGS=-mod=mod GOWORK=off go mod download && GOFLAGS=-mod=mod GOWORK=off go mod download "$src")
done
