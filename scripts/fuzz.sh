#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ (the parsers of untrusted bytes) for SECONDS each (default 60),
# starting from the committed seeds (valid inputs from the test vectors) and the local corpus
# that earlier runs grew (fuzz/corpus, not committed). libFuzzer's coverage guidance on the
# stable toolchain: no sanitizer (`-s none`), so no nightly. A crash stops the run and leaves
# its input in fuzz/artifacts/TARGET/. Usage: scripts/fuzz.sh [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cd fuzz
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "seeds/$target"
    log "fuzzing $target for ${SECONDS_PER_TARGET:-60} s"
    cargo fuzz run -s none "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="${SECONDS_PER_TARGET:-60}" -print_final_stats=1 2>&1 | grep -E "^Done|stat::number_of_executed_units|ERROR|panicked" || true
    [ -z "$(ls -A "artifacts/$target" 2>/dev/null)" ] || die "$target crashed: see fuzz/artifacts/$target"
done
