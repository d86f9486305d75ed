#!/usr/bin/env python3
"""Builds the demo model kit under demo/: the paper's family at toy scale.

Dev-only (PyTorch + transformers; /opt/refvenv here). All text comes from the Debian archive
(debian-reference-* and fortunes-*, fetched with apt-get download); every random choice is
seeded. On two CPU cores the build takes about 45 minutes, the scoring about 20 more.

    /opt/refvenv/bin/python tools/build_demo_kit.py --out demo --work /tmp/demo-build \
        --score target/release/moegraft

  base       Llama, ~1.3 M parameters, pretrained on English and Spanish (plus a 4.5 % share each of
             Italian and Russian, as real base models have seen a little of most languages);
             a quarter of its windows are half a window said twice, so that it learns to copy
             as web-scale models do.
  instruct   base fine-tuned on synthetic chat tasks (several phrasings each) in English and
             Spanish only; every 5th step is plain text in the base's own mix of all four
             languages, so that Δ carries the chat skill and not damage to the other
             languages' token rows.
  cpt-dense  base continued-pretrained on Italian and Russian.
  cpt-moe    base upcycled to a 3-expert top-2 Mixtral (expert 0 = the base FFN, frozen);
             stage 1 on Italian and Russian with attention, norms, expert 0 and every
             embedding row but the new languages' own tokens' frozen, plus the load-balancing
             loss; stage 2 the routers alone on a small replay
             of English and Spanish, sent to expert 0 (MoE-LPR).
  eval/      held-out text per language and two held-out instruction sets in all four
             languages: `corpus` (cut from held-out corpus sentences) and `everyday`
             (sentences written for the purpose, tools/demo_kit/everyday.py).

`--score target/release/moegraft` then scores the kit (`moegraft eval --kit OUT --json` into
OUT/eval/results.json) and adds the table's figures and the showcase to OUT/manifest.json;
`--manifest-only` rewrites only the manifest from what OUT holds.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from tools.demo_kit import corpus, everyday, models, tasks, tok, train  # noqa: E402

VOCAB = 4096
SEED = 20261123
# Steps per stage (× --scale); sized so that the whole build stays within 45 minutes on two
# cores. The two continued pretrainings see the same tokens.
BASE_STEPS, INSTRUCT_STEPS, CPT_STEPS, REVIEW_STEPS = 850, 2100, 500, 150
INSTRUCT_LR = 3e-3
# Stage 1's rate; with --stage1-token-rows (the new languages' own embedding rows learn
# too) the higher rate it was tried at (demo/README.md, "What was tried").
STAGE1_LR, STAGE1_ROWS_LR = 2e-3, 8e-3


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_eval(out: Path, c: corpus.Corpus, per_task: int) -> dict:
    """Held-out text per language and two instruction sets: `corpus` (built from held-out
    sentences of the kit's own corpora) and `everyday` (sentences written for the purpose)."""
    out.mkdir(parents=True, exist_ok=True)
    suite = {"languages": {}, "perplexity": {},
             "instructions": {"corpus": "instructions.jsonl", "everyday": "everyday.jsonl"}}
    rows, daily = [], []
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
        for ex in everyday.instructions(lang, SEED + 200 + corpus.LANGUAGES.index(lang)):
            daily.append({"lang": lang, "task": ex.task, "prompt": ex.prompt, "answer": ex.answer})
    (out / "instructions.jsonl").write_text(jsonl(rows))
    (out / "everyday.jsonl").write_text(jsonl(daily))
    (out / "suite.json").write_text(json.dumps(suite, indent=2) + "\n")
    return suite


ABOUT = {
    "base": "Llama pretrained on English and Spanish (a little Italian and Russian).",
    "instruct": "base fine-tuned on chat tasks in English and Spanish only.",
    "cpt-dense": "base continued-pretrained on Italian and Russian.",
    "cpt-moe": "base upcycled to 3 experts (expert 0 = base FFN) and trained on Italian and Russian (MoE-LPR).",
    "ParamΔ": "cpt-dense + (instruct − base), grafted in this tab.",
    "DeltaMoE": "cpt-moe + (instruct − base) on attention, norms, embeddings and every expert, grafted in this tab.",
}


SHOWCASE_MODELS = ["instruct", "ParamΔ", "DeltaMoE"]


def table_and_showcase(results: dict, suite: dict) -> tuple[dict, dict | None]:
    """From eval/results.json (`moegraft eval --kit demo --json`): every model's figures for
    the page, and the showcase, the first view's instruction. The rule, written before the
    kit's full table was read (the fallback after a quick probe showed no clear gain): on the everyday set, the (new language, task) where DeltaMoE's
    accuracy most exceeds the better of instruct's and ParamΔ's; where DeltaMoE gains in no
    new language, what the table does support, the (language, task) where it most exceeds
    ParamΔ's (new languages first, then the original ones; ties: language, then task order);
    in it, the first everyday item, in file order, that DeltaMoE answers right. `gain` says
    which of the two the page shows. None when DeltaMoE is ahead nowhere."""
    by_label = {m["model"]: m for m in results["models"]}
    table = {
        label: {
            "perplexity": {lang: round(p["perplexity"], 1) for lang, p in m["perplexity"].items()},
            "accuracy": {
                set_: {lang: [t["correct"], t["total"]] for lang, t in langs.items()}
                for set_, langs in m["instructions"].items()
            },
        }
        for label, m in by_label.items()
    }

    def acc(label, lang, task):
        t = by_label[label]["tasks"]["everyday"][lang][task]
        return t["correct"] / t["total"]

    def best(langs, rivals):
        top, top_gain = None, 0.0
        for lang in langs:
            for task in tasks.TASKS:
                gain = acc("DeltaMoE", lang, task) - max(acc(r, lang, task) for r in rivals)
                if gain > top_gain:
                    top, top_gain = (lang, task), gain
        return top

    choice, gain = best(corpus.NEW, ["instruct", "ParamΔ"]), "over instruct and ParamΔ in a new language"
    if choice is None:
        choice, gain = best(corpus.NEW + corpus.ORIGINAL, ["ParamΔ"]), "over ParamΔ"
    if choice is None:
        return table, None
    lang, task = choice
    right = next(o for o in by_label["DeltaMoE"]["outcomes"]
                 if o["set"] == "everyday" and o["lang"] == lang and o["task"] == task and o["correct"])
    showcase = {"lang": lang, "task": task, "prompt": right["prompt"], "answer": right["expected"],
                "models": SHOWCASE_MODELS, "gain": gain,
                # Each model's right/asked on this language's everyday items of this task.
                "task_accuracy": {label: [by_label[label]["tasks"]["everyday"][lang][task][k] for k in ("correct", "total")]
                                  for label in SHOWCASE_MODELS}}
    return table, showcase


def write_manifest(out: Path) -> dict:
    """demo/manifest.json: what the page lists and loads (a static host cannot list folders);
    the two grafted models name their inputs; one example instruction per language and task;
    with eval/results.json, the table's figures and the showcase (see table_and_showcase)."""
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
    results = out / "eval" / "results.json"
    if results.exists():
        table, showcase = table_and_showcase(json.loads(results.read_text()), suite)
        manifest["table"] = table
        if showcase:
            manifest["showcase"] = showcase
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("demo"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/demo-build"))
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every step count (0.05 for a smoke run)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--manifest-only", action="store_true", help="rewrite OUT/manifest.json from OUT and stop")
    ap.add_argument("--stage1-token-rows", action="store_true",
                    help="cpt-moe stage 1 also trains the new languages' own embedding rows (a lever tried; "
                         "MoE-LPR freezes every embedding)")
    ap.add_argument("--parallel", action="store_true",
                    help="the base's mix also holds debian-reference's aligned paragraphs, each beside its "
                         "translation (English, Spanish, Italian): a lever tried")
    ap.add_argument("--stage1-steps", type=int, metavar="N",
                    help="cpt-moe's stage 1 takes N steps instead of cpt-dense's count (a lever tried: more "
                         "stage-1 tokens at the same rate)")
    ap.add_argument("--reuse", type=Path, metavar="KIT",
                    help="take base, instruct and cpt-dense as KIT holds them (its BUILD.json for their figures) "
                         "and build only cpt-moe: for trying stage-1 recipes")
    ap.add_argument("--score", type=Path, metavar="MOEGRAFT",
                    help="then score OUT with this moegraft binary (eval --kit) into OUT/eval/results.json "
                         "and rewrite the manifest with the table and the showcase")
    args = ap.parse_args()
    if args.manifest_only:
        write_manifest(args.out)
        return 0
    status = build(args)
    if status == 0 and args.score:
        score(args.score, args.out)
    return status


def score(moegraft: Path, out: Path) -> None:
    """`moegraft eval --kit OUT --json` into OUT/eval/results.json (renamed when complete)."""
    started = time.time()
    results = out / "eval" / "results.json"
    partial = results.with_name("results.json.partial")
    with open(partial, "w") as f:
        subprocess.run([str(moegraft), "eval", "--kit", str(out), "--json"], stdout=f, check=True)
    partial.rename(results)
    write_manifest(out)
    print(f"== scored ({time.time() - started:.0f} s): {results}", flush=True)


def dense_family(args, c, tokenizer, streams, mix, steps, report, stage, losses):
    """base, instruct and cpt-dense, trained here; also Δ on each language's token rows."""
    base = models.dense(VOCAB, SEED)
    train.pretrain(base, streams, steps(BASE_STEPS), 3e-3, SEED + 1, mix=mix, log="base", repeat_share=0.25)
    losses["base"] = report("base", base)
    stage("base")

    chat = []
    for lang in corpus.ORIGINAL:
        chat += tasks.examples(lang, tasks.sentences(c.train[lang]), 20_000, SEED + 2 + len(lang))
    instruct = copy.deepcopy(base)
    # The replay is the base's own mix, new languages' small share included (lever 1 of
    # demo/README.md): Δ then carries the chat skill, not a collapse of their token rows.
    train.finetune_chat(instruct, tokenizer, chat, steps(INSTRUCT_STEPS), INSTRUCT_LR, SEED + 3, replay=streams,
                        replay_every=5, replay_mix=mix)
    losses["instruct"] = report("instruct", instruct)
    delta_rows = train.delta_on_token_rows(base, instruct, {lang: streams[lang] for lang in corpus.LANGUAGES})
    print(f"   instruct − base on each language's own token rows (‖Δ‖/‖θ‖): {delta_rows}", flush=True)
    stage("instruct")

    cpt = copy.deepcopy(base)
    news = {lang: streams[lang] for lang in corpus.NEW}
    train.pretrain(cpt, news, steps(CPT_STEPS), 2e-3, SEED + 4, log="cpt-dense")
    losses["cpt-dense"] = report("cpt-dense", cpt)
    stage("cpt-dense")
    return base, instruct, cpt, delta_rows


def parallel_documents(groups: list[tuple[str, ...]], seed: int, max_chars: int = 200) -> list[str]:
    """The parallel-text lever: each short aligned paragraph in every pair of its languages,
    in a random order, as one document, so that most 128-token windows hold a paragraph
    beside its translation."""
    rng = random.Random(seed)
    docs = []
    for group in groups:
        if max(map(len, group)) > max_chars:
            continue
        for i in range(len(group)):
            for j in range(i + 1, len(group)):
                pair = [group[i], group[j]]
                rng.shuffle(pair)
                docs.append("\n".join(pair))
    rng.shuffle(docs)
    return docs


def reuse(kit: Path, tok_dir: Path):
    """base, instruct and cpt-dense as `kit` holds them (f16, read as f32), and its BUILD.json;
    the tokenizer trained here must be the kit's."""
    from transformers import LlamaForCausalLM

    if (kit / "base" / "tokenizer.json").read_bytes() != (tok_dir / "tokenizer.json").read_bytes():
        raise SystemExit(f"{kit}: its tokenizer is not the one this build trains")
    load = lambda name: LlamaForCausalLM.from_pretrained(kit / name, dtype=torch.float32).eval()  # noqa: E731
    return load("base"), load("instruct"), load("cpt-dense"), json.loads((kit / "BUILD.json").read_text())


def build(args) -> int:
    torch.set_num_threads(args.threads)
    started = time.time()
    steps = lambda n: max(2, int(n * args.scale))  # noqa: E731
    stages = {}

    offset = 0  # a reused kit's seconds up to its cpt-dense, so the figures stay cumulative

    def stage(name):
        stages[name] = round(time.time() - started) + offset
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
    mix = ["en"] * 10 + ["es"] * 10 + list(corpus.NEW)
    if args.parallel:
        streams["par"] = train.encode_stream(tokenizer, parallel_documents(c.parallel, SEED + 8))
        # Five slots in 44 are translation pairs (a third of their tokens Italian): English and
        # Spanish keep their shares, Italian's grows from 4.5 % to 6 %.
        mix = ["en"] * 18 + ["es"] * 18 + ["it"] + ["ru"] * 2 + ["par"] * 5
    if args.reuse:
        base, instruct, cpt, earlier = reuse(args.reuse, tok_dir)
        losses.update({k: earlier["heldout_loss"][k] for k in ("base", "instruct", "cpt-dense")})
        stages.update({k: earlier["seconds"][k] for k in ("base", "instruct", "cpt-dense")})
        offset = earlier["seconds"]["cpt-dense"] - round(time.time() - started)
        delta_rows = earlier["delta_on_token_rows"]
    else:
        base, instruct, cpt, delta_rows = dense_family(args, c, tokenizer, streams, mix, steps, report, stage, losses)
    news = {lang: streams[lang] for lang in corpus.NEW}

    moe = models.upcycle(base, experts=3, top_k=2, seed=SEED + 5)
    new_rows = train.own_token_rows(streams, corpus.NEW, VOCAB) if args.stage1_token_rows else None
    if new_rows is not None:
        print(f"   the new languages' own token rows (trained in stage 1): {int(new_rows.sum())} of {VOCAB}", flush=True)
    trainable = train.freeze_for_new_experts(moe, token_rows=new_rows)
    stage1_steps = args.stage1_steps or steps(CPT_STEPS)
    train.pretrain(moe, news, stage1_steps, STAGE1_ROWS_LR if args.stage1_token_rows else STAGE1_LR,
                   SEED + 6, params=trainable, log="cpt-moe stage 1", aux=True, weight_decay=0.0)
    replay = {lang: streams[lang][: len(streams[lang]) // 20] for lang in corpus.ORIGINAL}
    train.review_router(moe, replay, steps(REVIEW_STEPS), 1e-3, SEED + 7)
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
        "delta_on_token_rows": delta_rows,
        "stage1_token_rows": None if new_rows is None else int(new_rows.sum()),
        "parallel_documents": None if "par" not in streams else {"mix": mix, "tokens": len(streams["par"])},
        "reused": None if args.reuse is None else f"base, instruct and cpt-dense from {args.reuse}",
        "steps": {"base": steps(BASE_STEPS), "instruct": steps(INSTRUCT_STEPS), "cpt": steps(CPT_STEPS), "stage 1": stage1_steps,
                  "review": steps(REVIEW_STEPS)},
        "learning_rates": {"base": 3e-3, "instruct": INSTRUCT_LR, "cpt-dense": 2e-3,
                           "cpt-moe stage 1": STAGE1_ROWS_LR if args.stage1_token_rows else STAGE1_LR,
                           "cpt-moe review": 1e-3},
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
