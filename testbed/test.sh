#!/usr/bin/env bash
# The test command: install what the tests need, then run every test against real components.
set -euo pipefail
cd "$(dirname "$0")/.."

bash testbed/setup.sh
# Build artefacts live outside the clone so every checkout, and CI, reuses them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/rollback/target}"
cargo build --locked --all-targets
cargo test --locked --no-fail-fast
