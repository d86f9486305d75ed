#!/usr/bin/env bash
# The main job: build moegraft, run a native generation with SmolLM2-135M-Instruct, build
# the wasm and serve the web page on 127.0.0.1 (open the printed address in a browser with
# WebGPU). Installs what it needs first (see scripts/setup.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"

setup_native
setup_wasm
PORT="${PORT:-8080}"

log "cargo build --release"
cargo build --release --quiet
MODEL="$CACHE/smollm2-135m-instruct-f16"
if [ ! -f "$MODEL/config.json" ]; then
  log "import-gguf SmolLM2-135M-Instruct → $MODEL"
  ./target/release/moegraft import-gguf "$(smollm2_gguf)" --out "$MODEL" --dtype f16
fi
log "native generation (Vulkan; lavapipe on machines without a GPU)"
./target/release/moegraft generate --model "$MODEL" --chat --max-tokens 48 \
  --prompt "Write one sentence about the sea."

log "wasm build"
bash scripts/build-wasm.sh
log "serving www/ at http://127.0.0.1:$PORT/ (Ctrl-C to stop)"
echo "Model to pick in the page: $MODEL"
exec node scripts/serve.mjs --root www --port "$PORT"
