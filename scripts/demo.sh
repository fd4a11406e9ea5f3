#!/usr/bin/env bash
# The main job, end to end: build, start agentkeys-server on embedded SQLite in a temp dir, then
# init, store, read, run (with masking), list and usage as the master, and stop the server.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

log "building"
cargo build --workspace --bins --locked
BIN="$CARGO_TARGET_DIR/debug"

export AGENTKEYS_HOME; AGENTKEYS_HOME="$(mktemp -d /tmp/agentkeys-demo.XXXXXX)"
SERVER_LOG="$AGENTKEYS_HOME/server.log"
"$BIN/agentkeys-server" --listen 127.0.0.1:0 2>"$SERVER_LOG" &
SERVER_PID=$!
cleanup() { kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null; rm -rf "$AGENTKEYS_HOME"; }
trap cleanup EXIT

# Readiness: the server logs its address once it is listening.
for _ in $(seq 1 600); do
    grep -q "listening on http://" "$SERVER_LOG" 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$SERVER_LOG" >&2; die "the server exited"; }
    sleep 0.05
done
export AGENTKEYS_SERVER; AGENTKEYS_SERVER="$(grep -o 'listening on http://[0-9.:]*' "$SERVER_LOG" | head -n 1 | cut -d' ' -f3)"
[ -n "$AGENTKEYS_SERVER" ] || { cat "$SERVER_LOG" >&2; die "the server did not start"; }
log "agentkeys-server on $AGENTKEYS_SERVER (SQLite in $AGENTKEYS_HOME/server)"

ak() { printf '\n$ agentkeys %s\n' "$*" >&2; "$BIN/agentkeys" "$@"; }

ak init --label demo-laptop
printf 'sk-demo-%s' "$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" | ak store openai
ak read openai; echo
ak run --env OPENAI_API_KEY=openai -- sh -c 'echo "the child sees OPENAI_API_KEY=$OPENAI_API_KEY (masked in its output)"'
ak list
ak usage --since 1h
"$BIN/agentkeys-server" verify-audit --data-dir "$AGENTKEYS_HOME/server"
log "demo finished"
