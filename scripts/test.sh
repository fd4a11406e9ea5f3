#!/usr/bin/env bash
# The test command: installs what the suite needs (PostgreSQL, D-Bus and gnome-keyring from Debian's
# packages, a Python venv with the official MCP SDK from PyPI), starts a private PostgreSQL and a
# private Secret Service (scripts/with-keyring.sh), builds every binary, and
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
# The benchmark crate has no tests (clippy still checks it): leaving it out spares building criterion.
cargo build --workspace --exclude agentkeys-bench --bins --tests --locked

log "checking the test vectors with an independent implementation"
python_venv
"$VENV_PY" crates/agentkeys-core/tests/verify_vectors.py crates/agentkeys-core/tests/vectors.json
# The official MCP Python SDK in this venv is the suite's third-party MCP client.
export AGENTKEYS_TEST_PYTHON="$VENV_PY"

# A real Secret Service for the keychain tests: a private session bus with gnome-keyring.
KEYRING=()
apt_install dbus gnome-keyring libsecret-tools libglib2.0-bin
if command -v dbus-run-session >/dev/null && command -v gnome-keyring-daemon >/dev/null; then
    KEYRING=(dbus-run-session -- scripts/with-keyring.sh)
else
    is_ci && die "a Secret Service (dbus, gnome-keyring) is required under CI=true"
    log "no dbus-run-session or gnome-keyring: the keychain tests will be skipped"
fi

# The real fprintd with libfprint's virtual device, and python-dbusmock's polkitd template, for
# the presence tests (each starts them on its own private system bus: tests/support/fprint.rs).
apt_install fprintd libfprint-2-2 python3-dbusmock util-linux strace
# Chromium and its chromedriver (Debian's): the presence-key tests drive the server's ceremony
# page in a real browser, with Chromium's WebAuthn virtual authenticator as the key.
apt_install chromium chromium-driver
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    is_ci && die "chromium and chromium-driver are required under CI=true"
    log "no chromium or chromedriver: the browser tests will be skipped"
fi
# curl: the TLS tests use it as a third-party client.
apt_install curl ca-certificates
if [ ! -x /usr/libexec/fprintd ]; then
    is_ci && die "fprintd is required under CI=true"
    log "no fprintd: the fingerprint tests will be skipped"
fi

log "testing"
if cargo nextest --version >/dev/null 2>&1; then
    "${KEYRING[@]}" cargo nextest run --workspace --exclude agentkeys-bench --locked --no-fail-fast "$@"
else
    is_ci && log "cargo-nextest not found: falling back to cargo test"
    "${KEYRING[@]}" cargo test --workspace --exclude agentkeys-bench --locked --no-fail-fast "$@"
fi
