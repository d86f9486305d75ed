#!/usr/bin/env bash
# The main job: build moegraft, graft the demo kit's DeltaMoE natively (instruct − base onto
# the MoE that learnt Italian and Russian) and ParamΔ (onto the dense model that learnt them),
# ask DeltaMoE the kit's showcase instruction in a new language (demo/manifest.json: a task
# the kit's table shows DeltaMoE answering there) and print instruct's and ParamΔ's answers
# under it; then build the wasm and serve the web page with the kit on 127.0.0.1 (open the
# printed address in a browser with WebGPU: the page grafts the same models by itself and
# opens on the same comparison). Installs what it needs first (see scripts/setup.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"

setup_native
setup_wasm
PORT="${PORT:-8080}"

log "cargo build --release"
cargo build --release --quiet
MOEGRAFT=./target/release/moegraft
showcase() { python3 -c 'import json, sys; print(json.load(open("demo/manifest.json"))["showcase"][sys.argv[1]])' "$1"; }
PROMPT="$(showcase prompt)"
for pair in "DeltaMoE cpt-moe" "ParamΔ cpt-dense"; do
  read -r name target <<<"$pair"
  out="$CACHE/demo-$target-grafted"
  log "graft: $name = $target + (instruct − base) → $out"
  rm -rf "$out" # our own output of the last run; graft refuses to overwrite
  "$MOEGRAFT" graft --base demo/base --instruct demo/instruct --target "demo/$target" --out "$out"
done
log "asking ($(showcase lang), $(showcase task); expected: $(showcase answer)): $PROMPT"
for pair in "DeltaMoE $CACHE/demo-cpt-moe-grafted" "instruct demo/instruct" "ParamΔ $CACHE/demo-cpt-dense-grafted"; do
  read -r name dir <<<"$pair"
  printf '%-9s ' "$name:"
  "$MOEGRAFT" generate --model "$dir" --chat --max-tokens 32 --prompt "$PROMPT"
  echo
done

log "wasm build"
bash scripts/build-wasm.sh
log "serving www/ (and the demo kit at /demo/) at http://127.0.0.1:$PORT/ (Ctrl-C to stop)"
exec node scripts/serve.mjs --root www --kit demo --port "$PORT"
