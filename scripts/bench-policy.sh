#!/usr/bin/env bash
# Server reads/s at 64 clients reading as a linked agent (the path the account's policy is
# evaluated on), with no policy against a 200-rule policy (POLICY_RULES), in pairs whose order alternates, each on a fresh
# SQLite server with one credential and one agent. The rules are the kind a user writes (service
# and agent globs, time windows in named zones, days, an idle rate rule, require_approval on other
# services) and none but the last matches the benchmark's read, so every read walks all 200 and
# the last one (an `allow`) decides it. Usage:
#   scripts/bench-policy.sh        (ROUNDS=4 SECONDS_PER_LOAD=10 POLICY_RULES=200)
# Results and the machine go in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

log "building (release)"
cargo build --release --locked -p agentkeys-server -p agentkeys-cli -p agentkeys-daemon -p agentkeys-bench --bins
BIN="$CARGO_TARGET_DIR/release"
log "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"

POLICY="$(mktemp /tmp/agentkeys-bench-policy.XXXXXX.toml)"
python3 - "$POLICY" <<'PY'
import os, sys
rules = []
for i in range(int(os.environ.get("POLICY_RULES", "200")) - 1):
    kind = i % 4
    if kind == 0:
        rules.append(f'[[rule]]\nname = "no-svc-{i}"\nservices = ["svc-{i}-*"]\nactions = ["read", "run"]\neffect = "deny"\n')
    elif kind == 1:
        rules.append(f'[[rule]]\nname = "team-{i}-nights"\nagents = ["team-{i}-*"]\nservices = ["prod-*"]\n'
                     f'hours = "20:00-07:00"\ntz = "Europe/Berlin"\neffect = "deny"\n')
    elif kind == 2:
        rules.append(f'[[rule]]\nname = "weekend-{i}"\nservices = ["billing-{i}"]\ndays = ["sat", "sun"]\n'
                     f'effect = "require_approval"\n')
    else:
        rules.append(f'[[rule]]\nname = "burst-{i}"\nservices = ["batch-{i}-*"]\nrate = "30/h"\neffect = "deny"\n')
rules.append('[[rule]]\nname = "bench-may-read"\nagents = ["bench-*"]\nservices = ["openai"]\neffect = "allow"\n')
open(sys.argv[1], "w").write("\n".join(rules))
PY

# utime + stime of the server process, in clock ticks.
server_cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"
}

round() {
    local name="$1"
    export AGENTKEYS_HOME; AGENTKEYS_HOME="$(mktemp -d /tmp/agentkeys-bench-policy.XXXXXX)"
    start_server "$BIN" --agent-read-burst 1000000 --agent-read-rate 1000000
    "$BIN/agentkeys" -q init --label bench >/dev/null
    printf 'sk-bench-0123456789abcdef0123456789' | "$BIN/agentkeys" -q store openai
    local agent_home="$AGENTKEYS_HOME/agent" code session
    code="$("$BIN/agentkeys" -q --yes --no-biometric agent create bench-bot --scope openai)"
    AGENTKEYS_LINK_CODE="$code" AGENTKEYS_HOME="$agent_home" "$BIN/agentkeys-daemon" --json link >/dev/null
    session="$(ls "$agent_home" | grep '^daemon-')"
    if [ "$name" = policy ]; then
        "$BIN/agentkeys" -q --yes --no-biometric policy set "$POLICY" >/dev/null
    fi
    local cpu_before out
    cpu_before="$(server_cpu_ticks)"
    out="$(AGENTKEYS_HOME="$agent_home" "$BIN/agentkeys-loadgen" --server "$AGENTKEYS_SERVER" --session-id "$session" \
        --service openai --concurrency 64 --seconds "${SECONDS_PER_LOAD:-10}" --threads 1 2>&1)"
    # The server's own CPU time per read: steadier than reads/s on a shared machine.
    python3 - "$name" "$out" "$cpu_before" "$(server_cpu_ticks)" "$(getconf CLK_TCK)" <<'PY'
import re, sys
name, out, before, after, tck = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
reads = int(re.match(r"(\d+) reads", out).group(1))
print(f"{name}: {out}; server CPU {(after - before) / tck / reads * 1e6:.0f} us/read")
PY
    stop_server
    rm -rf "$AGENTKEYS_HOME"
}

trap 'stop_server; rm -f "$POLICY"' EXIT
# The order flips every round: whichever runs second in a pair meets a warmer (or busier) machine.
for r in $(seq 1 "${ROUNDS:-4}"); do
    if [ $((r % 2)) = 1 ]; then round none; round policy; else round policy; round none; fi
done
rm -f "$POLICY"
