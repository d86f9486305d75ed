#!/usr/bin/env python3
"""transformers loads what `moegraft upcycle` writes, and identical experts give the dense model.

Dev-only. For each dense tiny model (llama → Mixtral, qwen2 with q/k/v biases → qwen2_moe with
its zero shared expert, qwen3 with q/k norms → qwen3_moe) it runs the built `moegraft upcycle`
with two experts that are both copies of the base FFN, top-2, loads the output with
transformers' AutoModelForCausalLM in float32 and compares every position's logits with the
dense model's on the tiny models' reference prompts. It writes, per model, the written
config.json keys transformers reads, every tensor's name, shape and dtype, and the largest
|Δlogit| to `tests/fixtures/upcycle/transformers.json`; tests/upcycle.rs upcycles again and
checks that the layout it writes is still the one checked here.

    cargo build --release
    HF_HUB_OFFLINE=1 /opt/refvenv/bin/python tools/check_upcycle.py
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import transformers
from safetensors import safe_open
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests/fixtures/tiny"
BIN = ROOT / "target/release/moegraft"
MODELS = {"tiny-llama": "mixtral", "tiny-qwen2": "qwen2_moe", "tiny-qwen3": "qwen3_moe"}
# The keys of config.json that decide how transformers builds the MoE.
KEYS = ["architectures", "model_type", "num_experts", "num_local_experts", "num_experts_per_tok",
        "moe_intermediate_size", "shared_expert_intermediate_size", "norm_topk_prob",
        "decoder_sparse_step", "mlp_only_layers", "qkv_bias", "attention_bias", "intermediate_size"]
SAMPLES = {"en": "The quick brown fox jumps over the lazy dog.", "ja": "今日はとても良い天気ですね。",
           "de": "Der schnelle braune Fuchs springt über den faulen Hund."}
TOLERANCE = 1e-4


def layout(d: Path) -> list:
    out = []
    for f in sorted(d.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():
                s = st.get_slice(k)
                out.append([k, list(s.get_shape()), s.get_dtype()])
    return sorted(out)


@torch.no_grad()
def logits(d: Path, ids: list) -> torch.Tensor:
    # Eager experts: torch's grouped_mm wants 16-byte strides, and tiny-qwen2's FFN is 75 wide.
    m = AutoModelForCausalLM.from_pretrained(
        d, dtype=torch.float32, attn_implementation="eager", experts_implementation="eager").eval()
    return m(torch.tensor([ids])).logits[0], type(m).__name__


def main() -> int:
    ref = json.loads((TINY / "reference.json").read_text())
    cases = ref["models"]["tiny-llama"]["cases"]
    ids = cases[1]["input_ids"] + cases[2]["input_ids"]
    result = dict(generator="tools/check_upcycle.py",
                  versions=dict(torch=torch.__version__, transformers=transformers.__version__),
                  tolerance=TOLERANCE, models={})
    ok = True
    for dense, arch in MODELS.items():
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            args = [str(BIN), "upcycle", "--base", str(TINY / dense), "--top-k", "2", "--out", str(tmp / "moe")]
            for lang in ["ja", "de"]:
                args += ["--expert", f"{TINY / dense}={lang}"]
            for lang, text in SAMPLES.items():
                (tmp / f"{lang}.txt").write_text(text)
                args += ["--samples", f"{lang}={tmp / f'{lang}.txt'}"]
            subprocess.run(args, check=True, capture_output=True)
            config = json.loads((tmp / "moe/config.json").read_text())
            want, _ = logits(TINY / dense, ids)
            got, cls = logits(tmp / "moe", ids)
            diff = (got - want).abs().max().item()
            ok &= diff <= TOLERANCE and config["model_type"] == arch
            result["models"][dense] = dict(
                model_type=config["model_type"], transformers_class=cls, max_abs_logit_diff=diff,
                config={k: config[k] for k in KEYS if k in config}, tensors=layout(tmp / "moe"))
            print(f"{dense} -> {arch} ({cls}): max |Δlogit| {diff:.3g} over {len(ids)} positions")
    out = ROOT / "tests/fixtures/upcycle/transformers.json"
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
