#!/usr/bin/env python3
"""GGUF fixtures of the Qwen families, written as llama.cpp's convert_hf_to_gguf.py writes
them, and what transformers' own GGUF loader reads from them, for tests/gguf_qwen.rs.

Dev-only (transformers, gguf-py, numpy; /opt/refvenv here). For qwen3, qwen2moe and qwen3moe
it builds a tiny seeded model with transformers (every layer routed: llama.cpp has no dense
layers in its Qwen MoEs; norms, biases and gates randomised), writes
`tests/fixtures/gguf/tiny-<arch>.gguf` (matrices f16, norms, routers and the shared-expert gate
f32, as the converter does; the shared-expert gate [hidden] as older converters wrote it; experts stacked [experts, rows, cols] in expert order; Qwen's q/k
rows not permuted; the tiny models' byte-level BPE vocabulary), then loads that GGUF with
`AutoModelForCausalLM.from_pretrained(..., gguf_file=...)` in float32 and records, in
`tests/fixtures/gguf/tiny-qwen.json`, every tensor under its Hugging Face per-expert name
(fused experts split) as the sha256 of its f32 bytes, the config keys that decide the
architecture, and the GGUF tokenizer's ids for multilingual texts.

    HF_HUB_OFFLINE=1 /opt/refvenv/bin/python tools/make_tiny_gguf.py
"""

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers
from gguf import GGUFWriter, TokenType
from transformers import (AutoModelForCausalLM, AutoTokenizer, Qwen2MoeConfig, Qwen2MoeForCausalLM,
                          Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM)

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER = ROOT / "tests/fixtures/tiny/tokenizer"
OUT = ROOT / "tests/fixtures/gguf"
TEXTS = ["Hello, world! 123", "Der schnelle braune Fuchs", "Привет, как дела?", "今日はとても良い天気ですね。",
         "<|im_start|>user\nHi<|im_end|>"]
CONFIG_KEYS = ["model_type", "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
               "num_key_value_heads", "head_dim", "num_experts", "num_experts_per_tok", "moe_intermediate_size",
               "shared_expert_intermediate_size", "tie_word_embeddings"]


def common(vocab):
    return dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                head_dim=8, max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=1000000.0,
                tie_word_embeddings=False, bos_token_id=0, eos_token_id=2, initializer_range=0.2)


def build(arch, vocab):
    torch.manual_seed({"qwen3": 31, "qwen2moe": 32, "qwen3moe": 33}[arch])
    c = common(vocab)
    if arch == "qwen3":
        m = Qwen3ForCausalLM(Qwen3Config(intermediate_size=48, **c))
    elif arch == "qwen3moe":
        m = Qwen3MoeForCausalLM(Qwen3MoeConfig(intermediate_size=48, moe_intermediate_size=16, num_experts=4,
                                               num_experts_per_tok=2, norm_topk_prob=True, **c))
    else:
        del c["head_dim"]  # qwen2moe's q and o are hidden × hidden in llama.cpp
        m = Qwen2MoeForCausalLM(Qwen2MoeConfig(intermediate_size=48, moe_intermediate_size=16, num_experts=4,
                                               num_experts_per_tok=2, shared_expert_intermediate_size=24,
                                               norm_topk_prob=False, qkv_bias=True, **c))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return m.eval()


def hf_tensors(m):
    """The model's state dict under the per-expert names checkpoints carry."""
    c = m.config
    out = {}
    for k, v in m.state_dict().items():
        v = v.detach().float()
        if k.endswith("mlp.experts.gate_up_proj"):
            i = c.moe_intermediate_size
            for e in range(v.shape[0]):
                out[k.replace("gate_up_proj", f"{e}.gate_proj.weight")] = v[e, :i]
                out[k.replace("gate_up_proj", f"{e}.up_proj.weight")] = v[e, i:]
        elif k.endswith("mlp.experts.down_proj"):
            for e in range(v.shape[0]):
                out[k.replace("down_proj", f"{e}.down_proj.weight")] = v[e]
        else:
            out[k] = v
    return out


GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
              "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
              "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "mlp.gate": "ffn_gate_inp",
              "mlp.shared_expert.gate_proj": "ffn_gate_shexp", "mlp.shared_expert.up_proj": "ffn_up_shexp",
              "mlp.shared_expert.down_proj": "ffn_down_shexp", "mlp.shared_expert_gate": "ffn_gate_inp_shexp"}
F32_PARTS = {"ffn_gate_inp", "ffn_gate_inp_shexp"}


def write_gguf(arch, m, path):
    c = m.config
    tok = json.loads((TOKENIZER / "tokenizer.json").read_text())
    tok_config = json.loads((TOKENIZER / "tokenizer_config.json").read_text())
    w = GGUFWriter(str(path), arch)
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    if getattr(c, "head_dim", None) and arch != "qwen2moe":
        w.add_key_length(c.head_dim)
        w.add_value_length(c.head_dim)
    if arch != "qwen3":
        w.add_expert_count(c.num_experts)
        w.add_expert_used_count(c.num_experts_per_tok)
        w.add_expert_feed_forward_length(c.moe_intermediate_size)
    if arch == "qwen2moe":
        w.add_expert_shared_feed_forward_length(c.shared_expert_intermediate_size)
    vocab = tok["model"]["vocab"]
    special = {t["id"]: t["content"] for t in tok["added_tokens"]}
    tokens = [None] * c.vocab_size
    for text, i in vocab.items():
        tokens[i] = text
    for i, text in special.items():
        tokens[i] = text
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([TokenType.CONTROL if i in special else TokenType.NORMAL for i in range(len(tokens))])
    w.add_token_merges([mm if isinstance(mm, str) else " ".join(mm) for mm in tok["model"]["merges"]])
    w.add_eos_token_id(c.eos_token_id)
    w.add_bos_token_id(c.bos_token_id)
    w.add_add_bos_token(False)
    w.add_chat_template(tok_config["chat_template"])

    t = hf_tensors(m)
    f16 = lambda a: a.numpy().astype(np.float16)
    f32 = lambda a: a.numpy().astype(np.float32)
    w.add_tensor("token_embd.weight", f16(t["model.embed_tokens.weight"]))
    w.add_tensor("output_norm.weight", f32(t["model.norm.weight"]))
    w.add_tensor("output.weight", f16(t["lm_head.weight"]))
    for l in range(c.num_hidden_layers):
        p = f"model.layers.{l}."
        for hf, gg in GGUF_NAMES.items():
            for suffix in ("weight", "bias"):
                a = t.get(f"{p}{hf}.{suffix}")
                if a is None:
                    continue
                if gg == "ffn_gate_inp_shexp":
                    # [hidden], as converters before the current one wrote it (the current one
                    # writes [hidden, 1], which transformers' GGUF loader reshapes wrongly).
                    a = a.reshape(-1)
                one_d = a.ndim == 1
                w.add_tensor(f"blk.{l}.{gg}.{suffix}", f32(a) if one_d or gg in F32_PARTS else f16(a))
        if arch != "qwen3":
            for proj, gg in [("gate_proj", "ffn_gate_exps"), ("up_proj", "ffn_up_exps"), ("down_proj", "ffn_down_exps")]:
                stack = torch.stack([t[f"{p}mlp.experts.{e}.{proj}.weight"] for e in range(c.num_experts)], 0)
                w.add_tensor(f"blk.{l}.{gg}.weight", f16(stack))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> int:
    vocab = len(AutoTokenizer.from_pretrained(TOKENIZER))
    record = dict(generator="tools/make_tiny_gguf.py",
                  versions=dict(torch=torch.__version__, transformers=transformers.__version__), models={})
    for arch in ["qwen3", "qwen2moe", "qwen3moe"]:
        path = OUT / f"tiny-{arch}.gguf"
        write_gguf(arch, build(arch, vocab), path)
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(path, Path(tmp) / path.name)
            # transformers' GGUF loader does not map attention.key_length (it keeps Qwen3's
            # default head_dim of 128), so the head size is passed as the file states it.
            # Nor does it map the experts' widths: those are passed as the file states them.
            extra = dict(head_dim=8) if arch != "qwen2moe" else {}
            if arch != "qwen3":
                extra["moe_intermediate_size"] = 16
            if arch == "qwen2moe":
                extra["shared_expert_intermediate_size"] = 24
            loaded = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=path.name, dtype=torch.float32, **extra)
            tok = AutoTokenizer.from_pretrained(tmp, gguf_file=path.name)
        tensors = {k: hashlib.sha256(v.contiguous().numpy().astype("<f4").tobytes()).hexdigest()
                   for k, v in hf_tensors(loaded).items()}
        cfg = loaded.config.to_dict()
        record["models"][arch] = dict(
            file=path.name, bytes=path.stat().st_size,
            config={k: cfg.get(k) for k in CONFIG_KEYS if cfg.get(k) is not None},
            norm_topk_prob=cfg.get("norm_topk_prob"),
            tensors=dict(sorted(tensors.items())),
            tokens={text: tok(text, add_special_tokens=False)["input_ids"] for text in TEXTS})
        print(f"{arch}: {path.stat().st_size} bytes, {len(tensors)} tensors, class {type(loaded).__name__}")
    (OUT / "tiny-qwen.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
