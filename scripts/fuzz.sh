#!/usr/bin/env bash
# Fuzzes every parser target in fuzz/ for a bounded time; fails on any crash, hang or OOM.
#
#   FUZZ_SECONDS=30 scripts/fuzz.sh            # all targets, 30 s each (the default)
#   FUZZ_SECONDS=60 scripts/fuzz.sh gguf       # one target
#
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
# New corpus entries go to fuzz/scratch/ (ignored); fuzz/corpus/ holds the committed seeds.
# A crash leaves its input in fuzz/artifacts/<target>/: add it to tests/fixtures/hostile/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${FUZZ_SECONDS:-30}
target_dir=${FUZZ_TARGET_DIR:-$root/target/fuzz}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

cargo fuzz build --fuzz-dir fuzz --target-dir "$target_dir"
for t in "${targets[@]}"; do
    mkdir -p "fuzz/scratch/$t"
    log="fuzz/scratch/$t.log"
    echo "fuzzing $t for ${seconds}s"
    # -timeout: one input running this long is a hang; -rss_limit_mb: a parser's allocation
    # is bounded by a small multiple of its input, far below this.
    status=0
    cargo fuzz run --fuzz-dir fuzz --target-dir "$target_dir" "$t" \
        "$root/fuzz/scratch/$t" "$root/fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units)' "$log" || true
    if [ "$status" -ne 0 ]; then
        # The failing input's Debug dump can be megabytes on one line: leave it to the file.
        grep -v '^\s*\[[0-9, ]*\]$' "$log" | tail -n 40 >&2
        echo "fuzz target $t failed: the input is in fuzz/artifacts/$t/, the log in $log" >&2
        exit 1
    fi
done
echo "fuzzed ${#targets[@]} targets for ${seconds}s each: no crash"
