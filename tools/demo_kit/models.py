"""The kit's architectures, MoE upcycling (MoE-LPR: expert 0 is the dense FFN, new experts
start as copies of it), and writing checkpoints as f16 safetensors in the Hugging Face layout
(legacy Mixtral expert names, which moegraft and every Mixtral loader read)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, MixtralConfig, MixtralForCausalLM

from tools.make_tiny_models import mixtral_to_legacy

# About 1.3 M parameters: trains at several thousand tokens/s on two CPU cores.
DENSE = dict(
    hidden_size=128,
    intermediate_size=384,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    max_position_embeddings=512,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=True,
    hidden_act="silu",
)


def dense(vocab_size: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, bos_token_id=None, eos_token_id=2, pad_token_id=0,
        initializer_range=0.05, **DENSE,
    )
    return LlamaForCausalLM(config)


def upcycle(base: LlamaForCausalLM, experts: int, top_k: int, seed: int) -> MixtralForCausalLM:
    """A Mixtral MoE whose attention, norms and embeddings are the base's and whose every
    expert starts as the base FFN; the router starts near uniform (small random rows)."""
    c = base.config
    config = MixtralConfig(
        vocab_size=c.vocab_size, num_local_experts=experts, num_experts_per_tok=top_k,
        router_aux_loss_coef=0.01, output_router_logits=False, bos_token_id=None,
        eos_token_id=2, pad_token_id=0, sliding_window=None, **DENSE,
    )
    moe = MixtralForCausalLM(config)
    dense_sd = base.state_dict()
    with torch.no_grad():
        moe_sd = moe.state_dict()
        for name, value in dense_sd.items():
            if ".mlp." not in name and name in moe_sd:
                moe_sd[name].copy_(value)
        g = torch.Generator().manual_seed(seed)
        for layer in range(c.num_hidden_layers):
            p = f"model.layers.{layer}.mlp"
            gate = dense_sd[f"{p}.gate_proj.weight"]
            up = dense_sd[f"{p}.up_proj.weight"]
            down = dense_sd[f"{p}.down_proj.weight"]
            for e in range(experts):
                moe_sd[f"{p}.experts.gate_up_proj"][e].copy_(torch.cat([gate, up], 0))
                moe_sd[f"{p}.experts.down_proj"][e].copy_(down)
            moe_sd[f"{p}.gate.weight"].copy_(0.01 * torch.randn(moe_sd[f"{p}.gate.weight"].shape, generator=g))
        moe.load_state_dict(moe_sd)
    return moe


def save(model, out: Path, tokenizer_dir: Path, extra_config: dict | None = None) -> None:
    """f16 safetensors + config.json + generation_config.json + the tokenizer files."""
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    if isinstance(model, MixtralForCausalLM):
        sd = mixtral_to_legacy(sd, model.config)
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config["torch_dtype"] = "float16"
    config["dtype"] = "float16"
    config.pop("output_router_logits", None)
    if extra_config:
        config.update(extra_config)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    generation = {"eos_token_id": [2, 0], "pad_token_id": 0}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (out / name).write_bytes((tokenizer_dir / name).read_bytes())


def count_parameters(model) -> tuple[int, int]:
    """(total, active per token): an MoE's tokens use top-k of its experts."""
    total = sum(p.numel() for p in model.parameters())
    if model.config.tie_word_embeddings:
        total -= 0  # tied: lm_head shares the embedding's storage, parameters() counts it once
    active = total
    if isinstance(model, MixtralForCausalLM):
        c = model.config
        per_expert = 3 * c.hidden_size * c.intermediate_size
        active = total - (c.num_local_experts - c.num_experts_per_tok) * per_expert * c.num_hidden_layers
    return total, active
