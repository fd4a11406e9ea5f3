#!/usr/bin/env bash
# Two release builds side by side, alternating, on the same machine: `agentkeys read` (whole
# process, hyperfine median), MCP get_credential through a running `serve` (agentkeys-mcpbench),
# and server reads at 64 clients (agentkeys-loadgen). Each round gets a fresh SQLite server, a
# master with one credential, and a linked agent. Usage:
#   scripts/bench-compare.sh BEFORE_BIN_DIR AFTER_BIN_DIR     (ROUNDS=2 RUNS=200 CALLS=1000 SECONDS_PER_LOAD=8)
# Build the "before" binaries from a worktree of the older commit with its own target dir, so the
# shared one is not confused by file times. Results and the machine go in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
apt_install hyperfine
[ $# -eq 2 ] || die "usage: $0 BEFORE_BIN_DIR AFTER_BIN_DIR"
log "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"

round() {
    local name="$1" bin="$2"
    export AGENTKEYS_HOME; AGENTKEYS_HOME="$(mktemp -d /tmp/agentkeys-compare.XXXXXX)"
    start_server "$bin" --agent-read-burst 1000000 --agent-read-rate 1000000
    "$bin/agentkeys" -q init --label bench >/dev/null
    printf 'sk-bench-0123456789abcdef0123456789' | "$bin/agentkeys" -q store openai
    local agent_home="$AGENTKEYS_HOME/agent" code session socket
    code="$("$bin/agentkeys" -q --yes --no-biometric agent create bench-bot --scope openai)"
    AGENTKEYS_LINK_CODE="$code" AGENTKEYS_HOME="$agent_home" "$bin/agentkeys-daemon" --json link >/dev/null
    session="$(ls "$agent_home" | grep '^daemon-')"
    socket="$agent_home/bench.sock"
    AGENTKEYS_HOME="$agent_home" NO_COLOR=1 "$bin/agentkeys-daemon" --session-id "$session" serve --socket "$socket" \
        2>"$socket.log" &
    local daemon=$!
    for _ in $(seq 1 600); do grep -q "agentkeys-daemon serving" "$socket.log" && break; sleep 0.05; done
    hyperfine -N --warmup 20 --runs "${RUNS:-200}" --export-json "$AGENTKEYS_HOME/read.json" \
        "$bin/agentkeys read openai" >/dev/null
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print("%s read: median %.2f ms" % (sys.argv[2], r["median"]*1000))' \
        "$AGENTKEYS_HOME/read.json" "$name"
    "$bin/agentkeys-mcpbench" latency --socket "$socket" --calls "${CALLS:-1000}" 2>&1 | sed "s/^/$name mcp: /"
    "$bin/agentkeys-loadgen" --server "$AGENTKEYS_SERVER" --service openai --concurrency 64 \
        --seconds "${SECONDS_PER_LOAD:-8}" --threads 1 2>&1 | sed "s/^/$name reads: /"
    kill -TERM "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null || true
    stop_server
    rm -rf "$AGENTKEYS_HOME"
}

for r in $(seq 1 "${ROUNDS:-2}"); do
    round "before#$r" "$1"
    round "after#$r" "$2"
done
