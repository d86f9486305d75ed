#!/usr/bin/env bash
# The main job: build moegraft, graft the demo kit's DeltaMoE natively (instruct − base onto
# the MoE that learnt German and Russian) and ask it a German instruction, then build the
# wasm and serve the web page with the kit on 127.0.0.1 (open the printed address in a
# browser with WebGPU: the page grafts and loads the same DeltaMoE by itself). Installs what
# it needs first (see scripts/setup.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"

setup_native
setup_wasm
PORT="${PORT:-8080}"

log "cargo build --release"
cargo build --release --quiet
DELTAMOE="$CACHE/demo-deltamoe"
log "graft: DeltaMoE = cpt-moe + (instruct − base) → $DELTAMOE"
rm -rf "$DELTAMOE" # our own output of the last run; graft refuses to overwrite
./target/release/moegraft graft --base demo/base --instruct demo/instruct --target demo/cpt-moe --out "$DELTAMOE"
log "native generation (Vulkan; lavapipe on machines without a GPU)"
./target/release/moegraft generate --model "$DELTAMOE" --chat --max-tokens 32 \
  --prompt "Wiederhole diesen Satz: Der Hund schläft im Garten."

log "wasm build"
bash scripts/build-wasm.sh
log "serving www/ (and the demo kit at /demo/) at http://127.0.0.1:$PORT/ (Ctrl-C to stop)"
exec node scripts/serve.mjs --root www --kit demo --port "$PORT"
