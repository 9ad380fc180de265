#!/usr/bin/env bash
# The quick start: install what is needed, build rollback, start the local sandbox platform
# and run a procedure against it. Leaves the sandbox running for rehearsals.
set -euo pipefail
cd "$(dirname "$0")/.."

bash testbed/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/rollback/target}"
cargo build --locked --release
rollback="$CARGO_TARGET_DIR/release/rollback"

"$rollback" sandbox up
"$rollback" sandbox status
# Validate the live (green) slot of every service: health, error rate, p95 latency.
"$rollback" run validate --env sandbox --slot green

cat <<TEXT

The sandbox is running. Next:
  $rollback sandbox inject --service analysis-service --error-rate 12
  sleep 20; $rollback run validate --env sandbox --slot green --window 1m   # fails: analysis-service above 5% errors
  $rollback repl --env sandbox                           # poke around with the same functions
  $rollback sandbox down                                 # stop everything
TEXT
