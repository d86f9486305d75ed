#!/usr/bin/env python3
"""The training fixture: one tiny Mixtral (f32, the legacy expert names moegraft reads) and
what PyTorch makes of MoE-LPR's steps on one batch, for tests/train_step.rs.

Dev-only (PyTorch + transformers; /opt/refvenv here):

    /opt/refvenv/bin/python tools/make_train_fixture.py tests/fixtures/train_step
    /opt/refvenv/bin/python tools/make_train_fixture.py tests/fixtures/train_step_frozen2 --experts 4 --frozen 2
    /opt/refvenv/bin/python tools/make_train_fixture.py tests/fixtures/train_step_qwen3moe --arch qwen3_moe
    /opt/refvenv/bin/python tools/make_train_fixture.py tests/fixtures/train_step_qwen2moe --arch qwen2_moe --well-conditioned

(the second: an MoE that gains experts — experts 0 and 1 both frozen, as `teach` trains an
earlier lesson's output; the third: a qwen3_moe as `upcycle` writes one from qwen3 —
per-head q/k norms before RoPE, the chosen experts' weights renormalised — saved under
Qwen's per-expert names; the fourth: a qwen2_moe as `upcycle` writes one from qwen2 — q/k/v
biases, and a one-unit shared expert of zeros that adds nothing).

`--well-conditioned` takes the first seed from SEED on whose first step no trained element's
gradient is below 1e-5 of its tensor's largest: AdamW's first step moves such an element by
about lr in the direction of f32 noise, and the second step's gradients then differ from
PyTorch's by more than rounding.

Stage 1 (two steps on the same batch): the new experts (1…) and the routers learn, LM loss +
0.01 × the Switch/Mixtral load-balancing loss per layer (E · Σ_i f_i · P_i, f_i the share of
tokens choosing expert i over the top-k slots, P_i the mean router probability), averaged
over layers. Stage 2 (one step, from the same initial model): the routers alone, LM loss +
0.1 × −log G_0 averaged over the original-language tokens and the layers. Each step:
torch.nn.utils.clip_grad_norm_(…, 1.0) then torch.optim.AdamW, on tensors holding only the
trained parts (the frozen experts, 0 … F − 1, never move). The fixture holds the loss, every trained tensor's
gradient and its values after the step, in moegraft's layout: per layer the router
[E, hidden], the new experts' gate/up rows interleaved ([(E − 1) · 2I, hidden]: gate n at
row 2n, up n at 2n + 1) and their down projections ([(E − 1) · hidden, I]).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import (  # noqa: E402
    MixtralConfig,
    MixtralForCausalLM,
    Qwen2MoeConfig,
    Qwen2MoeForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

from tools.make_tiny_models import mixtral_to_legacy  # noqa: E402

SEED = 20261203
BATCH, SEQ = 2, 9
LR, WEIGHT_DECAY, BETAS, EPS, MAX_NORM = 1e-2, 0.1, (0.9, 0.95), 1e-8, 1.0
LOAD_BALANCE, LANGUAGE_PRIOR = 0.01, 0.1
IGNORE = 0xFFFFFFFF
EXPERTS, FROZEN, ARCH = 3, 1, "mixtral"  # set from the command line


def model() -> MixtralForCausalLM:
    torch.manual_seed(SEED)
    common = dict(
        vocab_size=48, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=4, max_position_embeddings=64,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
        num_experts_per_tok=2, router_aux_loss_coef=LOAD_BALANCE, sliding_window=None,
        bos_token_id=None, eos_token_id=2, pad_token_id=0, initializer_range=0.3,
    )
    if ARCH == "qwen3_moe":
        config = Qwen3MoeConfig(
            num_experts=EXPERTS, moe_intermediate_size=12, norm_topk_prob=True,
            decoder_sparse_step=1, mlp_only_layers=[], attention_bias=False,
            use_sliding_window=False, **common,
        )
        m = Qwen3MoeForCausalLM(config).float()
    elif ARCH == "qwen2_moe":
        config = Qwen2MoeConfig(
            num_experts=EXPERTS, moe_intermediate_size=12, shared_expert_intermediate_size=1,
            norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[], qkv_bias=True,
            use_sliding_window=False, **common,
        )
        m = Qwen2MoeForCausalLM(config).float()
    else:
        m = MixtralForCausalLM(MixtralConfig(num_local_experts=EXPERTS, **common)).float()
    with torch.no_grad():
        # Norms away from 1 and routers with real preferences, so every term matters.
        for name, p in m.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            if ".mlp.gate." in name:
                p.copy_(torch.randn_like(p))
            if name.endswith(".bias"):  # qwen2's q/k/v biases
                p.copy_(0.3 * torch.randn_like(p))
            if ".shared_expert" in name:  # upcycle's shared expert adds exactly 0
                p.zero_()
    return m.eval()  # no dropout; autograd still runs


def intermediate(c) -> int:
    return c.intermediate_size if ARCH == "mixtral" else c.moe_intermediate_size


def per_expert_names(sd: dict, c) -> dict:
    """transformers-5 fused experts -> the per-expert names Qwen's checkpoints carry."""
    i, out = intermediate(c), {}
    for k, v in sd.items():
        if k.endswith(".mlp.experts.gate_up_proj"):
            pre = k[: -len("gate_up_proj")]
            for e in range(v.shape[0]):
                out[f"{pre}{e}.gate_proj.weight"] = v[e, :i].clone().contiguous()
                out[f"{pre}{e}.up_proj.weight"] = v[e, i:].clone().contiguous()
        elif k.endswith(".mlp.experts.down_proj"):
            pre = k[: -len("down_proj")]
            for e in range(v.shape[0]):
                out[f"{pre}{e}.down_proj.weight"] = v[e].clone().contiguous()
        else:
            out[k] = v
    return out


def trained_views(m: MixtralForCausalLM, stage: int) -> list[tuple[str, torch.Tensor, callable]]:
    """(name, tensor in moegraft's layout, how to write such a tensor back into the model)."""
    c = m.config
    i = intermediate(c)
    out = []
    for l, layer in enumerate(m.model.layers):
        moe = layer.mlp
        out.append((f"router.{l}", moe.gate.weight, lambda v, moe=moe: moe.gate.weight.copy_(v)))
        if stage != 1:
            continue
        gu = moe.experts.gate_up_proj  # [E, 2I, H], gate rows then up rows

        def interleave(t):
            gate, up = t[:, :i], t[:, i:]
            return torch.stack([gate, up], dim=2).reshape(t.shape[0] * 2 * i, -1)

        def write_gu(v, gu=gu):
            v = v.reshape(gu.shape[0] - FROZEN, i, 2, -1)
            gu[FROZEN:, :i].copy_(v[:, :, 0])
            gu[FROZEN:, i:].copy_(v[:, :, 1])

        out.append((f"gate_up.{l}", interleave(gu[FROZEN:]), write_gu))
        down = moe.experts.down_proj
        out.append((f"down.{l}", down[FROZEN:].reshape(-1, i), lambda v, down=down: down[FROZEN:].copy_(v.reshape(down[FROZEN:].shape))))
    return out


def loss(m, ids, targets, original, stage):
    routers = []
    hooks = [layer.mlp.gate.register_forward_hook(lambda _m, _i, o: routers.append(o[0])) for layer in m.model.layers]
    logits = m(input_ids=ids).logits
    for h in hooks:
        h.remove()
    t = targets.clone().reshape(-1)
    t[t == IGNORE] = -100
    lm = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), t, ignore_index=-100)
    c = m.config
    if stage == 1:
        aux = 0.0
        for z in routers:
            p = torch.softmax(z.float(), -1)
            top = torch.topk(p, c.num_experts_per_tok, -1).indices
            experts = z.shape[-1]
            f = F.one_hot(top, experts).sum(1).float().mean(0)
            aux = aux + experts * (f * p.mean(0)).sum()
        return lm, lm + LOAD_BALANCE * aux / len(routers)
    lpr = 0.0
    for z in routers:
        logp0 = torch.log_softmax(z.float(), -1)[:, 0]
        lpr = lpr - (logp0 * original).sum() / original.sum()
    return lm, lm + LANGUAGE_PRIOR * lpr / len(routers)


def steps(stage: int, count: int, ids, targets, original) -> dict:
    """`count` steps from the initial model; the optimiser holds only the trained parts, in
    moegraft's layout, and writes them back into the model before each forward."""
    m = model()
    views = trained_views(m, stage)
    leaves = [v.detach().clone().requires_grad_(True) for _, v, _ in views]
    opt = torch.optim.AdamW(leaves, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    for p in m.parameters():
        p.requires_grad_(False)
    for layer in m.model.layers:
        layer.mlp.gate.weight.requires_grad_(True)
        if stage == 1:
            layer.mlp.experts.gate_up_proj.requires_grad_(True)
            layer.mlp.experts.down_proj.requires_grad_(True)
    out = {"steps": []}
    for _ in range(count):
        with torch.no_grad():
            for (_, _, write), leaf in zip(views, leaves):
                write(leaf)
        m.zero_grad(set_to_none=True)
        lm, total = loss(m, ids, targets, original, stage)
        total.backward()
        grads = {name: g.detach().clone() for name, g, _ in trained_views_grads(m, stage)}
        for (name, _, _), leaf in zip(views, leaves):
            leaf.grad = grads[name].clone()
        torch.nn.utils.clip_grad_norm_(leaves, MAX_NORM)
        opt.step()
        out["steps"].append({
            "loss": lm.item(),
            "grads": {k: g.reshape(-1).tolist() for k, g in grads.items()},
            "updated": {name: leaf.detach().reshape(-1).tolist() for (name, _, _), leaf in zip(views, leaves)},
        })
    return out


def trained_views_grads(m, stage):
    """The trained parts' gradients, in moegraft's layout (as trained_views lays out values)."""
    i = intermediate(m.config)
    out = []
    for l, layer in enumerate(m.model.layers):
        moe = layer.mlp
        out.append((f"router.{l}", moe.gate.weight.grad, None))
        if stage != 1:
            continue
        g = moe.experts.gate_up_proj.grad[FROZEN:]
        out.append((f"gate_up.{l}", torch.stack([g[:, :i], g[:, i:]], dim=2).reshape(g.shape[0] * 2 * i, -1), None))
        out.append((f"down.{l}", moe.experts.down_proj.grad[FROZEN:].reshape(-1, i), None))
    return out


def batch():
    g = torch.Generator().manual_seed(SEED + 1)
    ids = torch.randint(0, 48, (BATCH, SEQ), generator=g)
    targets = torch.cat([ids[:, 1:], torch.full((BATCH, 1), IGNORE)], 1)
    targets[0, :3] = IGNORE  # a prompt: no loss on its tokens
    original = (torch.arange(BATCH * SEQ) % 3 != 0).float()
    return ids, targets, original


def well_conditioned_seed() -> int:
    global SEED
    start = SEED
    for SEED in range(start, start + 200):
        ids, targets, original = batch()
        first = [steps(stage, 1, ids, targets, original)["steps"][0]["grads"] for stage in (1, 2)]
        if all(min(abs(x) for x in g) >= 1e-5 * max(abs(x) for x in g) for grads in first for g in grads.values()):
            print(f"seed {SEED}: no trained element's first gradient at f32 noise")
            return SEED
    raise RuntimeError("no well-conditioned seed")


def main() -> int:
    global EXPERTS, FROZEN, ARCH, SEED
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default="tests/fixtures/train_step")
    ap.add_argument("--experts", type=int, default=3)
    ap.add_argument("--frozen", type=int, default=1)
    ap.add_argument("--arch", choices=["mixtral", "qwen3_moe", "qwen2_moe"], default="mixtral")
    ap.add_argument("--well-conditioned", action="store_true")
    args = ap.parse_args()
    EXPERTS, FROZEN, ARCH = args.experts, args.frozen, args.arch
    if args.well_conditioned:
        SEED = well_conditioned_seed()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    m = model()
    sd = {k: v.detach().contiguous() for k, v in m.state_dict().items() if k != "lm_head.weight"}
    names = mixtral_to_legacy if ARCH == "mixtral" else per_expert_names
    save_file(names(sd, m.config), str(out / "model.safetensors"), metadata={"format": "pt"})
    config = m.config.to_dict()
    config["torch_dtype"] = config["dtype"] = "float32"
    config.pop("output_router_logits", None)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    ids, targets, original = batch()
    fixture = {
        "about": "tools/make_train_fixture.py: PyTorch " + torch.__version__,
        "batch": BATCH, "seq": SEQ, "lr": LR, "weight_decay": WEIGHT_DECAY, "betas": BETAS, "eps": EPS,
        "max_grad_norm": MAX_NORM, "load_balance": LOAD_BALANCE, "language_prior": LANGUAGE_PRIOR,
        "frozen_experts": FROZEN, "seed": SEED,
        "ids": ids.reshape(-1).tolist(), "targets": targets.reshape(-1).tolist(),
        "original": [bool(o) for o in original.tolist()],
        "stage1": steps(1, 2, ids, targets, original),
        "stage2": steps(2, 1, ids, targets, original),
    }
    (out / "steps.json").write_text(json.dumps(fixture) + "\n")
    print(f"wrote {out}: stage 1 losses {[s['loss'] for s in fixture['stage1']['steps']]}, "
          f"stage 2 {[s['loss'] for s in fixture['stage2']['steps']]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
