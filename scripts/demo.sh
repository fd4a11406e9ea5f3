#!/usr/bin/env bash
# The main job, end to end: build, start agentkeys-server on embedded SQLite in a temp dir, then
# init, store, read, run (with masking), list and usage as the master, check the audit chain, and
# stop the server.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

log "building"
cargo build --workspace --bins --locked
BIN="$CARGO_TARGET_DIR/debug"

export AGENTKEYS_HOME; AGENTKEYS_HOME="$(mktemp -d /tmp/agentkeys-demo.XXXXXX)"
start_server "$BIN"
trap 'stop_server; rm -rf "$AGENTKEYS_HOME"' EXIT
log "agentkeys-server on $AGENTKEYS_SERVER (SQLite in $AGENTKEYS_HOME/server)"

ak() { printf '\n$ agentkeys %s\n' "$*" >&2; "$BIN/agentkeys" "$@"; }

ak init --label demo-laptop
printf 'sk-demo-%s' "$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" | ak store openai
ak read openai; echo
ak run --env OPENAI_API_KEY=openai -- sh -c 'echo "the child sees OPENAI_API_KEY=$OPENAI_API_KEY (masked in its output)"'
ak list
ak usage --since 1h
stop_server
"$BIN/agentkeys-server" verify-audit --data-dir "$AGENTKEYS_HOME/server"
log "demo finished"
