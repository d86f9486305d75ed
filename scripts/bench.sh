#!/usr/bin/env bash
# Runs `moegraft bench` and its CPU peers on one model, one after another on the same machine,
# and prints each peer's speed next to moegraft's (ratio = moegraft ÷ peer). Dev-only.
#
#   scripts/bench.sh                      # SmolLM2-135M-Instruct f16 (see the defaults below)
#   MODEL=dir GGUF=file.gguf OUT=dir scripts/bench.sh
#
# Needs: a release build (built here), a GGUF of MODEL at the same precision for llama.cpp
# (tools/bench_peer.py's docstring says how to make one), Python with llama-cpp-python
# (LLAMA_PY) and with torch + transformers (TORCH_PY). A peer whose Python or file is missing
# is skipped with a note. THREADS (default 2) is given to both CPU peers; TORCH_DTYPES
# (default float32) lists the PyTorch dtypes to run, LLAMA_THREADS (default THREADS) the
# llama.cpp thread counts (on a loaded machine its spinning threads suffer: try "2 1"); WARMUP, REPEATS, DECODE_TOKENS and
# CONTEXTS apply to every program alike; MERGE_REPEATS (default 3) to moegraft's merge figure
# and its PyTorch peer (the same ParamΔ of MODEL onto itself).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODEL="${MODEL:-$HOME/.cache/moegraft/smollm2-135m-instruct-f16}"
GGUF="${GGUF:-/tmp/smollm-gguf/smollm2-135m-instruct-f16.gguf}"
LLAMA_PY="${LLAMA_PY:-/opt/benchvenv/bin/python}"
TORCH_PY="${TORCH_PY:-/opt/refvenv/bin/python}"
THREADS="${THREADS:-2}"
CONTEXTS="${CONTEXTS:-128,1024}"
TORCH_DTYPES="${TORCH_DTYPES:-float32}"
# Shared by moegraft and the peers (lower them on a CPU adapter, where a prefill takes minutes).
COMMON=(--contexts "$CONTEXTS" --warmup "${WARMUP:-2}" --repeats "${REPEATS:-5}"
  --decode-tokens "${DECODE_TOKENS:-32}")
OUT="${OUT:-$ROOT/target/bench}"
mkdir -p "$OUT"

log() { echo "bench: $*" >&2; }

cargo build --release --quiet
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/moegraft"

log "moegraft bench --model $MODEL"
"$BIN" bench --model "$MODEL" "${COMMON[@]}" --merge-repeats "${MERGE_REPEATS:-3}" \
  --json >"$OUT/moegraft.json"

peers=()
if [ -x "$LLAMA_PY" ] && [ -f "$GGUF" ]; then
  for t in ${LLAMA_THREADS:-$THREADS}; do
    log "llama.cpp on $GGUF, $t threads"
    "$LLAMA_PY" tools/bench_peer.py llama.cpp --gguf "$GGUF" --threads "$t" \
      "${COMMON[@]}" >"$OUT/llama_cpp_t$t.json"
    peers+=("$OUT/llama_cpp_t$t.json")
  done
else
  log "skipping llama.cpp: need $LLAMA_PY with llama-cpp-python and $GGUF"
fi
if [ -x "$TORCH_PY" ]; then
  for dtype in $TORCH_DTYPES; do
    log "transformers on $MODEL ($dtype), $THREADS threads"
    "$TORCH_PY" tools/bench_peer.py transformers --model "$MODEL" --dtype "$dtype" \
      --threads "$THREADS" "${COMMON[@]}" >"$OUT/transformers_$dtype.json"
    peers+=("$OUT/transformers_$dtype.json")
  done
  log "PyTorch + safetensors merge (ParamΔ of $MODEL onto itself), $THREADS threads"
  "$TORCH_PY" tools/bench_peer.py merge --model "$MODEL" --threads "$THREADS" \
    --warmup 1 --repeats "${MERGE_REPEATS:-3}" >"$OUT/merge_torch.json"
else
  log "skipping transformers and the merge peer: need $TORCH_PY with torch and transformers"
fi

python3 - "$OUT/moegraft.json" "${peers[@]}" <<'PY'
import json, sys
me = json.load(open(sys.argv[1]))
print(f"moegraft on {me['adapter']['name']}: {me['model']['source']} ({me['model']['dtype']})")
rows = [("prefill " + str(me["prefill"]["tokens"]), me["prefill"]["tokens_per_s"]["median"])]
rows += [(f"decode @{d['context']}", d["tokens_per_s"]["median"]) for d in me["decode"]]
peers = [json.load(open(p)) for p in sys.argv[2:]]
for p in peers:
    print(f"peer: {p['peer']} ({p['threads']} threads)")
header = f"{'':14} {'moegraft':>10}" + "".join(f" {'peer' + str(i + 1):>10} {'ratio':>6}" for i in range(len(peers)))
print(header)
for n, (name, mine) in enumerate(rows):
    line = f"{name:14} {mine:10.1f}"
    for p in peers:
        theirs = p["prefill"] if n == 0 else p["decode"][n - 1]
        v = theirs["tokens_per_s"]["median"]
        line += f" {v:10.1f} {mine / v:6.2f}"
    print(line + "   tok/s")
PY

# The merge beside its PyTorch peer (same graft, same disk; the peer hashes nothing).
if [ -f "$OUT/merge_torch.json" ]; then
  python3 - "$OUT/moegraft.json" "$OUT/merge_torch.json" <<'PY'
import json, sys
me, peer = (json.load(open(p)) for p in sys.argv[1:])
m, p = me.get("merge"), peer["merge"]
print(f"merge peer: {peer['peer']}")
if m is None:
    print(f"merge: moegraft did not run it ({me.get('merge_note')})")
    sys.exit()
e2e, streamed, theirs = m["end_to_end_gbps"]["median"], m["merge_gbps"]["median"], p["gbps"]["median"]
print(f"merge {m['input_bytes'] / 1e6:.1f} MB of inputs: moegraft {e2e:.2f} GB/s end to end "
      f"(incl. sha256), {streamed:.2f} streamed; PyTorch {theirs:.2f} GB/s; "
      f"ratio {e2e / theirs:.2f} end to end, {streamed / theirs:.2f} streamed")
PY
fi
