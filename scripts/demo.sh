#!/usr/bin/env bash
# The main job, end to end: build, start agentkeys-server on embedded SQLite in a temp dir; as the
# master init, store, read, run (with masking) and list; pair an agent daemon (its pair code, then its
# OTP, read from its screen, the OTP typed into `approve`), let the agent read in scope, be denied out of
# scope and call an MCP tool; revoke it and watch the next request fail; show usage, check the
# audit chain, and stop the server.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

log "building (release: the binaries a user installs)"
cargo build --release --locked -p agentkeys-server -p agentkeys-cli -p agentkeys-daemon
BIN="$CARGO_TARGET_DIR/release"

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
printf 'ghp-demo-%s' "$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" | ak store github

# An agent machine: its own home, the daemon, silent.
DAEMON_HOME="$(mktemp -d /tmp/agentkeys-demo-agent.XXXXXX)"
trap 'stop_server; rm -rf "$AGENTKEYS_HOME" "$DAEMON_HOME"' EXIT
akd() { printf '\n$ agentkeys-daemon %s\n' "$*" >&2; AGENTKEYS_HOME="$DAEMON_HOME" "$BIN/agentkeys-daemon" "$@"; }
log "pairing an agent: the daemon prints a pair code and an OTP, the master types the OTP to approve"
AGENTKEYS_HOME="$DAEMON_HOME" "$BIN/agentkeys-daemon" pair --label build-bot --scope openai 2>"$DAEMON_HOME/pair.log" &
PAIR_PID=$!
for _ in $(seq 1 100); do grep -q '^Pair code:' "$DAEMON_HOME/pair.log" && break; sleep 0.1; done
grep -q '^Pair code:' "$DAEMON_HOME/pair.log" || { cat "$DAEMON_HOME/pair.log" >&2; die "the daemon printed no pair code"; }
cat "$DAEMON_HOME/pair.log" >&2
CODE="$(awk '/^Pair code:/ {print $3}' "$DAEMON_HOME/pair.log")"
# The daemon shows its OTP once `approve` has looked the code up (the number covers the account
# key it then pins); the human reads it off the agent's screen and types it, as this pipe does.
otp_when_shown() {
  for _ in $(seq 1 300); do grep -q '^OTP:' "$DAEMON_HOME/pair.log" && break; sleep 0.1; done
  awk '/^OTP:/ {print $2; exit}' "$DAEMON_HOME/pair.log"
}
# Critical operations need the human's presence (fingerprint, polkit, or a typed confirmation on a
# terminal); this unattended demo has none of them, so it skips the check, which the audit records.
otp_when_shown | ak approve "$CODE" --no-biometric --yes
wait "$PAIR_PID" || { cat "$DAEMON_HOME/pair.log" >&2; die "pairing failed"; }
tail -n +3 "$DAEMON_HOME/pair.log" >&2
ak agents
akd whoami
akd run --env OPENAI_API_KEY=openai -- sh -c 'echo "the agent child sees OPENAI_API_KEY=$OPENAI_API_KEY (masked)"'
if akd run --env GITHUB_TOKEN=github -- true; then die "github is out of the agent's scope but was served"; fi
log "MCP: an MCP client runs \`agentkeys-daemon mcp\` and calls list_credentials"
printf '%s\n' \
    '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"demo","version":"1"}}}' \
    '{"jsonrpc":"2.0","method":"notifications/initialized"}' \
    '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"list_credentials","arguments":{}}}' \
    | akd mcp
ak revoke build-bot --no-biometric --yes
if akd run --env OPENAI_API_KEY=openai -- true; then die "a revoked agent was served"; fi
ak usage --since 1h
stop_server
"$BIN/agentkeys-server" verify-audit --data-dir "$AGENTKEYS_HOME/server"
log "demo finished"
