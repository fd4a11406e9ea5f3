#!/usr/bin/env bash
# MCP benchmarks on a release build against a warm local server (SQLite in a temp dir):
#   1. get_credential round trips through a running `agentkeys-daemon serve` (Unix socket);
#   2. the same through `agentkeys-daemon mcp` on stdio, in-process and bridged to `serve`;
#   3. the same tool from a minimal official-Python-SDK server (its floor: no crypto, no server);
#   4. descriptor delivery (the socket's native protocol) against inline MCP, and
#      `agentkeys-daemon run -- true` / `agentkeys run -- true` directly and through `serve`;
#   5. 100 agents, each with its own `serve` daemon, reading for FLEET_SECONDS (default 60) at the
#      server's default per-agent limit: answers by code (only designed 429s besides OK) and each
#      daemon's RSS before and after.
# Results and the machine go in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
python_venv

log "building (release)"
cargo build --release --workspace --bins --locked
BIN="$CARGO_TARGET_DIR/release"
log "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"

export AGENTKEYS_HOME; AGENTKEYS_HOME="$(mktemp -d /tmp/agentkeys-bench-mcp.XXXXXX)"
DAEMONS=()
cleanup() {
    for pid in "${DAEMONS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    stop_server
    rm -rf "$AGENTKEYS_HOME"
}
# Latency runs must not meet the read limit; the fleet run uses the defaults.
start_server "$BIN" --agent-read-burst 1000000 --agent-read-rate 1000000 --anonymous-burst 100000 --anonymous-per-minute 100000
trap cleanup EXIT
"$BIN/agentkeys" -q init --label bench >/dev/null
printf 'sk-bench-0123456789abcdef0123456789' | "$BIN/agentkeys" -q store openai

# link AGENT_LABEL HOME: creates the agent and binds a daemon session for it under HOME.
link() {
    local code; code="$("$BIN/agentkeys" -q --yes --no-biometric agent create "$1" --scope openai)"
    AGENTKEYS_LINK_CODE="$code" AGENTKEYS_HOME="$2" "$BIN/agentkeys-daemon" --json link >/dev/null
}
# serve HOME SESSION SOCKET: starts a daemon and waits for its readiness line.
serve() {
    local log="$3.log"
    AGENTKEYS_HOME="$1" NO_COLOR=1 "$BIN/agentkeys-daemon" --session-id "$2" serve --socket "$3" 2>"$log" &
    DAEMONS+=("$!")
    for _ in $(seq 1 600); do grep -q "agentkeys-daemon serving" "$log" && return 0; sleep 0.05; done
    cat "$log" >&2; die "the daemon did not start"
}

AGENT_HOME="$AGENTKEYS_HOME/agent"
link bench-bot "$AGENT_HOME"
SESSION="$(ls "$AGENT_HOME" | grep '^daemon-')"
SOCKET="$AGENT_HOME/bench.sock"

log "1. get_credential through a running serve daemon (socket)"
serve "$AGENT_HOME" "$SESSION" "$SOCKET"
"$BIN/agentkeys-mcpbench" latency --socket "$SOCKET" --calls "${CALLS:-2000}"
log "1b. the same credential by descriptor (native protocol, memfd_secret), a connection per call"
"$BIN/agentkeys-mcpbench" fd --socket "$SOCKET" --calls "${CALLS:-2000}"
log "1c. run -- true: the command alone, agentkeys-daemon run directly, and through the running serve"
"$BIN/agentkeys-mcpbench" spawn --runs "${RUNS:-200}" -- true
AGENTKEYS_HOME="$AGENT_HOME" AGENTKEYS_DAEMON_SOCKET="$AGENT_HOME/nobody-here.sock" AGENTKEYS_LOG=warn \
    "$BIN/agentkeys-mcpbench" spawn --runs "${RUNS:-200}" -- "$BIN/agentkeys-daemon" --session-id "$SESSION" run --env K=openai -- true
AGENTKEYS_HOME="$AGENT_HOME" AGENTKEYS_DAEMON_SOCKET="$SOCKET" AGENTKEYS_LOG=warn \
    "$BIN/agentkeys-mcpbench" spawn --runs "${RUNS:-200}" -- "$BIN/agentkeys-daemon" --session-id "$SESSION" run --env K=openai -- true
AGENTKEYS_LOG=warn \
    "$BIN/agentkeys-mcpbench" spawn --runs "${RUNS:-200}" -- "$BIN/agentkeys" run --env K=openai -- true
log "2a. get_credential through agentkeys-daemon mcp (stdio), bridged to the running daemon"
AGENTKEYS_HOME="$AGENT_HOME" AGENTKEYS_DAEMON_SOCKET="$SOCKET" AGENTKEYS_LOG=warn \
    "$BIN/agentkeys-mcpbench" latency --calls "${CALLS:-2000}" -- "$BIN/agentkeys-daemon" --session-id "$SESSION" mcp
kill -TERM "${DAEMONS[0]}"; wait "${DAEMONS[0]}" || true; DAEMONS=()
log "2b. get_credential through agentkeys-daemon mcp (stdio), served in-process"
AGENTKEYS_HOME="$AGENT_HOME" AGENTKEYS_DAEMON_SOCKET="$SOCKET" AGENTKEYS_LOG=warn \
    "$BIN/agentkeys-mcpbench" latency --calls "${CALLS:-2000}" -- "$BIN/agentkeys-daemon" --session-id "$SESSION" mcp
log "3. the same tool from the official Python MCP SDK (MCPServer, stdio, constant answer)"
"$BIN/agentkeys-mcpbench" latency --calls "${CALLS:-2000}" -- "$VENV_PY" benches/mcp_python_server.py

log "5. ${FLEET:-100} agents, one serve daemon each, reading for ${FLEET_SECONDS:-60}s at the default read limit"
stop_server
# The fleet's link codes are redeemed from this one address: lift the limit of requests without a
# session (the agents' reads keep their default limit).
start_server "$BIN" --anonymous-burst 100000 --anonymous-per-minute 100000
trap cleanup EXIT
FLEET_HOME="$AGENTKEYS_HOME/fleet"
mkdir -p "$FLEET_HOME/sockets"
: >"$FLEET_HOME/sockets.txt"; : >"$FLEET_HOME/pids.txt"
for i in $(seq 1 "${FLEET:-100}"); do link "fleet-$i" "$FLEET_HOME"; done
for session in $(ls "$FLEET_HOME" | grep '^daemon-'); do
    socket="$FLEET_HOME/sockets/$session.sock"
    serve "$FLEET_HOME" "$session" "$socket"
    echo "$socket" >>"$FLEET_HOME/sockets.txt"
    echo "${DAEMONS[-1]}" >>"$FLEET_HOME/pids.txt"
done
"$BIN/agentkeys-mcpbench" fleet --sockets "$FLEET_HOME/sockets.txt" --pids "$FLEET_HOME/pids.txt" \
    --seconds "${FLEET_SECONDS:-60}"
