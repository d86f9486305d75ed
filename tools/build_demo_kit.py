#!/usr/bin/env python3
"""Builds the demo model kit under demo/: the paper's family at toy scale.

Dev-only (PyTorch + transformers; /opt/refvenv here). All text comes from the Debian archive
(debian-reference-* and fortunes-*, fetched with apt-get download); every random choice is
seeded. On two CPU cores the whole build takes about 33 minutes.

    /opt/refvenv/bin/python tools/build_demo_kit.py --out demo --work /tmp/demo-build

  base       Llama, ~1.3 M parameters, pretrained on English and Spanish (plus a 5 % share of
             German and Russian, as real base models have seen a little of most languages);
             a quarter of its windows are half a window said twice, so that it learns to copy
             as web-scale models do.
  instruct   base fine-tuned on synthetic chat tasks in English and Spanish only (every 8th
             step plain text of those two, so that it keeps its language modelling).
  cpt-dense  base continued-pretrained on German and Russian.
  cpt-moe    base upcycled to a 3-expert top-2 Mixtral (expert 0 = the base FFN, frozen);
             stage 1 on German and Russian with attention, norms, embeddings and expert 0
             frozen plus the load-balancing loss; stage 2 the routers alone on a small replay
             of English and Spanish, sent to expert 0 (MoE-LPR).
  eval/      held-out text per language and held-out instructions in all four languages.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from tools.demo_kit import corpus, models, tasks, tok, train  # noqa: E402

VOCAB = 4096
SEED = 20261123


def write_eval(out: Path, c: corpus.Corpus, per_task: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    suite = {"languages": {}, "perplexity": {}, "instructions": "instructions.jsonl"}
    rows = []
    for lang in corpus.LANGUAGES:
        suite["languages"][lang] = "original" if lang in corpus.ORIGINAL else "new"
        text = ""
        for p in c.heldout[lang]:
            if len(text) > 12_000:
                break
            text += p + "\n"
        (out / f"{lang}.txt").write_text(text)
        suite["perplexity"][lang] = f"{lang}.txt"
        pool = tasks.sentences(c.heldout[lang])
        rng = random.Random(SEED + 100 + corpus.LANGUAGES.index(lang))
        for task in tasks.TASKS:
            for k in range(per_task):
                ex = tasks.make(lang, task, rng.choice(pool), rng)
                rows.append({"lang": lang, "task": task, "prompt": ex.prompt, "answer": ex.answer})
    (out / "instructions.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    (out / "suite.json").write_text(json.dumps(suite, indent=2) + "\n")
    return suite


ABOUT = {
    "base": "Llama pretrained on English and Spanish (a little German and Russian).",
    "instruct": "base fine-tuned on chat tasks in English and Spanish only.",
    "cpt-dense": "base continued-pretrained on German and Russian.",
    "cpt-moe": "base upcycled to 3 experts (expert 0 = base FFN) and trained on German and Russian (MoE-LPR).",
    "ParamΔ": "cpt-dense + (instruct − base), grafted in this tab.",
    "DeltaMoE": "cpt-moe + (instruct − base) on attention, norms, embeddings and every expert, grafted in this tab.",
}


def write_manifest(out: Path) -> dict:
    """demo/manifest.json: what the page lists and loads (a static host cannot list folders);
    the two grafted models name their inputs; one example instruction per language and task."""
    models_ = []
    for name in ("base", "instruct", "cpt-dense", "cpt-moe"):
        files = sorted(f.name for f in (out / name).iterdir() if f.is_file())
        models_.append({"name": name, "dir": name, "files": files, "about": ABOUT[name]})
    for name, target in (("ParamΔ", "cpt-dense"), ("DeltaMoE", "cpt-moe")):
        models_.append({"name": name, "graft": {"base": "base", "instruct": "instruct", "target": target}, "about": ABOUT[name]})
    suite = json.loads((out / "eval" / "suite.json").read_text())
    examples, seen = [], set()
    for line in (out / "eval" / "instructions.jsonl").read_text().splitlines():
        row = json.loads(line)
        if (row["lang"], row["task"]) not in seen:
            seen.add((row["lang"], row["task"]))
            examples.append(row)
    examples.sort(key=lambda r: (suite["languages"][r["lang"]] != "new", r["lang"]))
    manifest = {"languages": suite["languages"], "models": models_, "default": "DeltaMoE", "examples": examples}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("demo"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/demo-build"))
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every step count (0.05 for a smoke run)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--manifest-only", action="store_true", help="rewrite OUT/manifest.json from OUT and stop")
    args = ap.parse_args()
    if args.manifest_only:
        write_manifest(args.out)
        return 0
    torch.set_num_threads(args.threads)
    started = time.time()
    steps = lambda n: max(2, int(n * args.scale))  # noqa: E731
    stages = {}

    def stage(name):
        stages[name] = round(time.time() - started)
        print(f"== {name} ({stages[name]} s)", flush=True)

    c = corpus.build(args.work)
    stage("corpus")
    tokenizer = tok.train(c.train, VOCAB, SEED)
    for i, t in enumerate(tok.SPECIAL):
        assert tokenizer.token_to_id(t) == i, t
    tok_dir = args.work / "tokenizer"
    tok.save(tokenizer, tok_dir)
    stage("tokenizer")
    streams = {lang: train.encode_stream(tokenizer, c.train[lang]) for lang in corpus.LANGUAGES}
    held = {lang: train.encode_stream(tokenizer, c.heldout[lang]) for lang in corpus.LANGUAGES}

    def report(name, model):
        losses = {lang: round(train.heldout_loss(model, held[lang]), 3) for lang in corpus.LANGUAGES}
        print(f"   {name} held-out loss: {losses}", flush=True)
        return losses

    losses = {}
    base = models.dense(VOCAB, SEED)
    mix = ["en"] * 10 + ["es"] * 10 + ["de", "ru"]
    train.pretrain(base, streams, steps(900), 3e-3, SEED + 1, mix=mix, log="base", repeat_share=0.25)
    losses["base"] = report("base", base)
    stage("base")

    chat = []
    for lang in corpus.ORIGINAL:
        chat += tasks.examples(lang, tasks.sentences(c.train[lang]), 20_000, SEED + 2 + len(lang))
    instruct = copy.deepcopy(base)
    originals = {lang: streams[lang] for lang in corpus.ORIGINAL}
    train.finetune_chat(instruct, tokenizer, chat, steps(2400), 3e-3, SEED + 3, replay=originals, replay_every=8)
    losses["instruct"] = report("instruct", instruct)
    stage("instruct")

    news = {lang: streams[lang] for lang in corpus.NEW}
    cpt = copy.deepcopy(base)
    train.pretrain(cpt, news, steps(900), 2e-3, SEED + 4, log="cpt-dense")
    losses["cpt-dense"] = report("cpt-dense", cpt)
    stage("cpt-dense")

    moe = models.upcycle(base, experts=3, top_k=2, seed=SEED + 5)
    trainable = train.freeze_for_new_experts(moe)
    train.pretrain(moe, news, steps(900), 2e-3, SEED + 6, params=trainable, log="cpt-moe stage 1",
                   aux=True, weight_decay=0.0)
    replay = {lang: streams[lang][: len(streams[lang]) // 20] for lang in corpus.ORIGINAL}
    train.review_router(moe, replay, steps(150), 1e-3, SEED + 7)
    losses["cpt-moe"] = report("cpt-moe", moe)
    shares = {lang: round(train.expert0_share(moe, held[lang]), 3) for lang in corpus.LANGUAGES}
    print(f"   cpt-moe: share of tokens routed to expert 0 (among top-2): {shares}")
    stage("cpt-moe")

    out = args.out
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    section = {"moegraft": {"expert_languages": [list(corpus.ORIGINAL), list(corpus.NEW), list(corpus.NEW)], "router": "learned"}}
    for name, model, extra in [("base", base, None), ("instruct", instruct, None), ("cpt-dense", cpt, None), ("cpt-moe", moe, section)]:
        models.save(model, staging / name, tok_dir, extra)
    write_eval(staging / "eval", c, per_task=12)
    write_manifest(staging)
    counts = {name: models.count_parameters(m) for name, m in [("dense", base), ("moe", moe)]}
    build = {
        "seed": SEED,
        "vocab_size": VOCAB,
        "dense": models.DENSE,
        "parameters": {"dense": counts["dense"][0], "moe_total": counts["moe"][0], "moe_active_per_token": counts["moe"][1]},
        "scale": args.scale,
        "threads": args.threads,
        "seconds": stages,
        "heldout_loss": losses,
        "expert0_share": shares,
        "sources": c.sources,
        "torch": torch.__version__,
    }
    (staging / "BUILD.json").write_text(json.dumps(build, indent=2, ensure_ascii=False) + "\n")
    if out.exists():
        for name in ["base", "instruct", "cpt-dense", "cpt-moe", "eval", "BUILD.json", "manifest.json"]:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    for item in staging.iterdir():
        item.rename(out / item.name)
    staging.rmdir()
    stage("written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
