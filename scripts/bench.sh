#!/usr/bin/env bash
# Whole-process benchmarks against a warm local server (release build, SQLite in a temp dir):
#   1. `agentkeys read` as a whole process (hyperfine);
#   2. `agentkeys run -- true` against plain `true`, and with one injected credential (hyperfine);
#   3. server credential reads with signature checks at 64 concurrent clients (agentkeys-loadgen);
#   4. the same at 64 clients over TLS against plain HTTP (keep-alive: one handshake per connection).
# The criterion benchmarks of the hot paths are separate: `cargo bench -p agentkeys-bench`.
# Results and the machine go in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
apt_install hyperfine curl openssl

log "building (release)"
cargo build --release --workspace --bins --locked
BIN="$CARGO_TARGET_DIR/release"

export AGENTKEYS_HOME; AGENTKEYS_HOME="$(mktemp -d /tmp/agentkeys-bench.XXXXXX)"
start_server "$BIN"
trap 'stop_server; rm -rf "$AGENTKEYS_HOME"' EXIT
"$BIN/agentkeys" -q init --label bench >/dev/null
printf 'sk-bench-0123456789abcdef0123456789' | "$BIN/agentkeys" -q store openai
log "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"

# hyperfine prints means; the targets are medians, so print those from its JSON export.
medians() {
    python3 - "$1" <<'PY'
import json, sys
for result in json.load(open(sys.argv[1]))["results"]:
    print("  median %.2f ms  %s" % (result["median"] * 1000, result["command"]))
PY
}

log "1. agentkeys read, whole process"
hyperfine -N --warmup 20 --runs "${RUNS:-300}" --export-json "$AGENTKEYS_HOME/read.json" "$BIN/agentkeys read openai"
medians "$AGENTKEYS_HOME/read.json"

log "2. agentkeys run -- true vs true"
hyperfine -N --warmup 20 --runs "${RUNS:-300}" --export-json "$AGENTKEYS_HOME/run.json" \
    "true" "$BIN/agentkeys run -- true" "$BIN/agentkeys run --env K=openai -- true"
medians "$AGENTKEYS_HOME/run.json"

log "3. server reads with signature checks (SQLite), by concurrency; the target is at 64"
for concurrency in 1 16 64 128; do
    "$BIN/agentkeys-loadgen" --server "$AGENTKEYS_SERVER" --service openai --concurrency "$concurrency" \
        --seconds "${SECONDS_PER_LOAD:-10}" --threads 1
done
curl -s "$AGENTKEYS_SERVER/metrics" | grep -E '^agentkeys_writer_batch_(size|seconds)_(sum|count)'

log "4. reads at 64 clients over TLS vs plain HTTP (the same database, one server at a time)"
TLS_DIR="$AGENTKEYS_HOME/tls"
mkdir -p "$TLS_DIR"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=bench-ca \
    -addext basicConstraints=critical,CA:TRUE -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
    -keyout "$TLS_DIR/server.key" -out "$TLS_DIR/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$TLS_DIR/ext"
openssl x509 -req -in "$TLS_DIR/server.csr" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca.key" -CAcreateserial \
    -days 2 -extfile "$TLS_DIR/ext" -out "$TLS_DIR/server.pem" 2>/dev/null
for run in 1 2; do
    "$BIN/agentkeys-loadgen" --server "$AGENTKEYS_SERVER" --service openai --concurrency 64 \
        --seconds "${SECONDS_PER_LOAD:-10}" --threads 1 2>&1 | sed "s/^/plain run $run: /" >&2
done
stop_server
start_server "$BIN" --tls-cert "$TLS_DIR/server.pem" --tls-key "$TLS_DIR/server.key"
trap 'stop_server; rm -rf "$AGENTKEYS_HOME"' EXIT
for run in 1 2; do
    AGENTKEYS_CA_CERT="$TLS_DIR/ca.pem" "$BIN/agentkeys-loadgen" --server "$AGENTKEYS_SERVER" --service openai \
        --concurrency 64 --seconds "${SECONDS_PER_LOAD:-10}" --threads 1 2>&1 | sed "s/^/TLS run $run:   /" >&2
done
log "5. agentkeys read, whole process, over TLS"
AGENTKEYS_CA_CERT="$TLS_DIR/ca.pem" hyperfine -N --warmup 20 --runs "${RUNS:-300}" \
    --export-json "$AGENTKEYS_HOME/read-tls.json" "$BIN/agentkeys --server $AGENTKEYS_SERVER read openai"
medians "$AGENTKEYS_HOME/read-tls.json"
