#!/usr/bin/env bash
# The whole test suite: formatting and lints, every Rust test (kernels against CPU
# references, tiny checkpoints and SmolLM2 against transformers, the CLI contract, hostile
# inputs), the wasm build, the headless-Chromium tests on WebGPU, and every parser fuzzed
# for FUZZ_SECONDS each (default 20; 0 skips).
# Installs what it needs first (see scripts/setup.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"

setup_native
setup_browser
export MOEGRAFT_SMOLLM2_GGUF="${MOEGRAFT_SMOLLM2_GGUF:-$(smollm2_gguf)}"

log "cargo fmt --check"
cargo fmt --check
log "cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
log "cargo test"
cargo test --no-fail-fast
log "wasm build"
bash scripts/build-wasm.sh
log "browser tests (headless Chromium, WebGPU on SwiftShader)"
node --test --test-concurrency=1 tests/browser/
if [ "${FUZZ_SECONDS:-20}" != 0 ]; then
    setup_fuzz
    log "fuzzing every parser for ${FUZZ_SECONDS:-20} s each"
    FUZZ_SECONDS="${FUZZ_SECONDS:-20}" bash scripts/fuzz.sh
fi
