#!/usr/bin/env python3
"""Dev-only: training speed, moegraft against PyTorch, in one run on one machine.

The model is the one `moegraft teach` trains: the kit's base upcycled with one new expert per
language (`teach --steps 0` writes exactly that). Both sides train MoE-LPR's stage 1 on the
same random tokens, batch and sequence length: the new experts and the routers learn with
LM + 0.01 × the load-balancing loss, then the gradient clip and AdamW.

- moegraft: `moegraft bench-train` (lavapipe natively; the GPU it finds).
- PyTorch: transformers' MixtralForCausalLM in float32 on the CPU (PyTorch's CPU default),
  `torch.set_num_threads(--threads)`, the router and expert tensors trained with expert 0's
  gradient zeroed (transformers holds the experts fused), `output_router_logits` for the
  load-balancing loss. Each step is timed whole: forward, backward, clip, AdamW.

    /opt/refvenv/bin/python tools/bench_train.py [--lang ru,it] [--batch 8] [--seq 128]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def moegraft(binary: Path, *args: str) -> str:
    return subprocess.run([str(binary), *args], check=True, stdout=subprocess.PIPE, text=True).stdout


def pytorch(model_dir: Path, batch: int, seq: int, warmup: int, steps: int, threads: int) -> dict:
    import torch
    from transformers import MixtralForCausalLM

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    m = MixtralForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    m.train()
    m.config.router_aux_loss_coef = 0.01
    for p in m.parameters():
        p.requires_grad_(False)
    trained = []
    for layer in m.model.layers:
        moe = layer.mlp
        for p in (moe.gate.weight, moe.experts.gate_up_proj, moe.experts.down_proj):
            p.requires_grad_(True)
            trained.append(p)
    fused = [p for p in trained if p.dim() == 3]
    opt = torch.optim.AdamW(trained, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    vocab = m.config.vocab_size
    times = []
    for s in range(warmup + steps):
        ids = torch.randint(0, vocab, (batch, seq))
        start = time.perf_counter()
        out = m(input_ids=ids, labels=ids, output_router_logits=True)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        for p in fused:
            p.grad[0].zero_()  # expert 0 is frozen
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        if s >= warmup:
            times.append(time.perf_counter() - start)
    step = statistics.median(times)
    return {
        "peer": f"transformers {__import__('transformers').__version__} / torch {torch.__version__}, float32, {threads} threads",
        "step_ms": step * 1e3,
        "tokens_per_second": batch * seq / step,
        "tokens_per_second_range": [batch * seq / max(times), batch * seq / min(times)],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lang", default="ru,it", help="new experts (one per language)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--binary", type=Path, default=ROOT / "target" / "release" / "moegraft")
    args = ap.parse_args()
    if not args.binary.exists():
        subprocess.run(["cargo", "build", "--release", "--bin", "moegraft"], cwd=ROOT, check=True)
    kit = ROOT / "demo"
    with tempfile.TemporaryDirectory(prefix="moegraft-bench-train-") as tmp:
        moe = Path(tmp) / "moe"
        teach = ["teach", "--model", str(kit / "base"), "--out", str(moe), "--steps", "0", "--review-steps", "0",
                 "--replay", f"en={kit / 'eval' / 'en.txt'}"]
        for lang in args.lang.split(","):
            teach += ["--lang", f"{lang}={kit / 'eval' / f'{lang}.txt'}"]
        moegraft(args.binary, *teach)
        ours = json.loads(moegraft(args.binary, "bench-train", "--model", str(moe), "--batch", str(args.batch),
                                   "--seq", str(args.seq), "--warmup", str(args.warmup), "--steps", str(args.steps),
                                   "--json"))
        peer = pytorch(moe, args.batch, args.seq, args.warmup, args.steps, args.threads)
    result = {
        "command": "python3 tools/bench_train.py " + " ".join(sys.argv[1:]),
        "batch": args.batch,
        "seq": args.seq,
        "experts": ours["experts"],
        "moegraft": {
            "tokens_per_second": ours["tokens_per_second"],
            "step_ms": ours["step_ms"],
            "memory_bytes": ours["memory"]["total_bytes"],
            "profile": [(g["kernel"], round(g["share"], 3)) for g in (ours.get("profile") or {}).get("groups", [])[:6]],
        },
        "pytorch": peer,
        "ratio": ours["tokens_per_second"]["median"] / peer["tokens_per_second"],
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
