#!/usr/bin/env bash
# Builds the release binaries and checks their hardening with checksec (PRODUCT.md §7): PIE, full
# RELRO, NX stack, no symbol table. `.ci/run` runs it; a binary that loses any of these fails CI.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
apt_install checksec python3
# The same build as scripts/demo.sh's, so after the demo this costs nothing.
log "building the release binaries"
cargo build --release --locked -p agentkeys-server -p agentkeys-cli -p agentkeys-daemon
log "checksec"
failed=0
for bin in agentkeys agentkeys-daemon agentkeys-server; do
    path="$CARGO_TARGET_DIR/release/$bin"
    checksec --output=json --file="$path" | python3 -c '
import json, sys
path, report = sys.argv[1], json.load(sys.stdin)
props = next(iter(report.values()))
want = {"pie": "yes", "relro": "full", "nx": "yes", "symbols": "no"}
bad = {k: props.get(k) for k, v in want.items() if props.get(k) != v}
name = path.rsplit("/", 1)[-1]
summary = ", ".join(f"{k}={props.get(k)}" for k in want)
if bad:
    print(f"{name}: {summary}: FAILS {bad}", file=sys.stderr)
    sys.exit(1)
print(f"{name}: {summary}", file=sys.stderr)
' "$path" || failed=1
done
[ "$failed" = 0 ] || die "a release binary lacks PIE, full RELRO, NX or stripping (see above); check [profile.release] in Cargo.toml"
