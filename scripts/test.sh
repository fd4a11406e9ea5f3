#!/usr/bin/env bash
# The test command: installs what the suite needs (PostgreSQL from Debian's packages, a Python
# venv with the official MCP SDK from PyPI), starts a private PostgreSQL, builds every binary, and
# runs the whole suite — unit, storage on SQLite and PostgreSQL, and end to end through the real
# binaries, MCP included. Under CI=true a missing service fails the
# run instead of skipping tests. Extra arguments go to the test runner (e.g. a test-name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if ! start_postgres; then
    is_ci && die "PostgreSQL is required under CI=true"
    log "PostgreSQL unavailable: its tests will be skipped"
fi

log "building"
cargo build --workspace --bins --tests --locked

log "checking the test vectors with an independent implementation"
python_venv
"$VENV_PY" crates/agentkeys-core/tests/verify_vectors.py crates/agentkeys-core/tests/vectors.json
# The official MCP Python SDK in this venv is the suite's third-party MCP client.
export AGENTKEYS_TEST_PYTHON="$VENV_PY"

log "testing"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast "$@"
else
    is_ci && log "cargo-nextest not found: falling back to cargo test"
    cargo test --workspace --locked --no-fail-fast "$@"
fi
