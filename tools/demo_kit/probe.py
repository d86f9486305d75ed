#!/usr/bin/env python3
"""A quick look at a built kit in PyTorch, for trying the build's levers at a reduced
--scale: grafts ParamΔ and DeltaMoE in torch as moegraft does (Δ once on attention, norms and
embeddings, Δ's FFN on every expert, routers kept) and scores instruct, ParamΔ and DeltaMoE
on the first N instructions per set, language and task with moegraft eval's rule (greedy,
chat template, right when exactly the answer and ended by the end token). The kit's table
itself always comes from `moegraft eval --kit`; this only ranks build variants quickly.

    /opt/refvenv/bin/python tools/demo_kit/probe.py /tmp/kit-variant [--per-task 4]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import LlamaForCausalLM, MixtralForCausalLM  # noqa: E402

from tools.demo_kit.tok import chat_prompt  # noqa: E402

STOP = {0, 2}


def graft(target, base_sd, inst_sd):
    """target + (instruct − base); an MoE's experts each get Δ's FFN, its routers nothing."""
    with torch.no_grad():
        # named_parameters, not state_dict: a tied lm_head must not get Δ a second time.
        for name, value in target.named_parameters():
            if ".mlp.gate.weight" in name and isinstance(target, MixtralForCausalLM):
                continue
            if ".mlp.experts.gate_up_proj" in name:
                p = name.replace("experts.gate_up_proj", "")
                d = torch.cat([inst_sd[p + "gate_proj.weight"] - base_sd[p + "gate_proj.weight"],
                               inst_sd[p + "up_proj.weight"] - base_sd[p + "up_proj.weight"]], 0)
                value += d[None]
            elif ".mlp.experts.down_proj" in name:
                p = name.replace("experts.down_proj", "")
                value += (inst_sd[p + "down_proj.weight"] - base_sd[p + "down_proj.weight"])[None]
            elif name in base_sd:
                value += inst_sd[name] - base_sd[name]
    return target


@torch.no_grad()
def answer(model, tok, prompt: str, expected: str) -> tuple[bool, str]:
    ids = tok.encode(chat_prompt(prompt)).ids
    budget = len(tok.encode(expected).ids) + 8
    out = []
    x = torch.tensor([ids])
    past = None
    for _ in range(budget):
        r = model(input_ids=x, past_key_values=past, use_cache=True)
        past = r.past_key_values
        nxt = int(r.logits[0, -1].argmax())
        if nxt in STOP:
            text = tok.decode(out)
            return text.strip() == expected.strip(), text
        out.append(nxt)
        x = torch.tensor([[nxt]])
    return False, tok.decode(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("kit", type=Path)
    ap.add_argument("--per-task", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(2)
    kit = args.kit
    tok = Tokenizer.from_file(str(kit / "base" / "tokenizer.json"))
    load = lambda name, cls=LlamaForCausalLM: cls.from_pretrained(kit / name, dtype=torch.float32).eval()  # noqa: E731
    base, instruct = load("base"), load("instruct")
    base_sd, inst_sd = base.state_dict(), instruct.state_dict()
    models = {
        "instruct": instruct,
        "ParamΔ": graft(load("cpt-dense"), base_sd, inst_sd),
        "DeltaMoE": graft(load("cpt-moe", MixtralForCausalLM), base_sd, inst_sd),
    }
    suite = json.loads((kit / "eval" / "suite.json").read_text())
    if isinstance(suite["instructions"], str):
        suite["instructions"] = {"held-out": suite["instructions"]}
    items = []
    for set_, file in sorted(suite["instructions"].items()):
        seen = defaultdict(int)
        for line in (kit / "eval" / file).read_text().splitlines():
            row = json.loads(line)
            seen[(row["lang"], row["task"])] += 1
            if seen[(row["lang"], row["task"])] <= args.per_task:
                items.append((set_, row))
    report = {}
    for label, model in models.items():
        tally = defaultdict(lambda: [0, 0])
        for set_, row in items:
            ok, _ = answer(model, tok, row["prompt"], row["answer"])
            for key in [(set_, row["lang"]), (set_, row["lang"], row["task"])]:
                tally[key][0] += ok
                tally[key][1] += 1
        report[label] = tally
    langs = list(suite["languages"])
    for set_ in sorted(suite["instructions"]):
        print(f"{set_}: " + " | ".join(
            f"{label} " + " ".join(f"{l} {report[label][(set_, l)][0]}/{report[label][(set_, l)][1]}" for l in langs)
            for label in models))
    news = [l for l, k in suite["languages"].items() if k == "new"]
    tasks = sorted({row["task"] for _, row in items})
    last = sorted(suite["instructions"])[-1]
    for lang in news:
        print(f"{lang} per task ({last}, " + "/".join(models) + "): " + "  ".join(
            f"{t} " + "/".join(str(report[label][(last, lang, t)][0]) for label in models) for t in tasks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
