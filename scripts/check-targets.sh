#!/usr/bin/env bash
# Checks that the platform crates compile for macOS and Windows (Touch ID, Windows Hello, the
# native keychains): `cargo clippy --target` for each target installed with `rustup target add`.
# The rest of the workspace needs a C cross-compiler for those targets, so only these two crates.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
for target in aarch64-apple-darwin x86_64-pc-windows-gnu; do
    if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
        log "skipping $target: not installed (rustup target add $target)"
        continue
    fi
    log "checking agentkeys-biometric and agentkeys-keychain for $target"
    cargo clippy --locked --target "$target" -p agentkeys-biometric -p agentkeys-keychain -- -D warnings
done
