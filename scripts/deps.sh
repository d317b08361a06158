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
# nodejs (and npm) install tools/openapi (below).
packages=(file nodejs gearman-tools gearman-job-server php-cli php-gearman libgearman-client-perl curl chromium wrk openssl postgresql)
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
