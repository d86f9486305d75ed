"""Dev-only: the teach issue's done-criterion run on the demo kit, measured end to end.

1. Text: the kit's own corpus (Debian's debian-reference and fortunes, `demo_kit.corpus`),
   train split only, about 400 kB per language, shuffled by a fixed seed. The held-out
   paragraphs the kit's eval scores (`demo/eval/*.txt`) are never in it.
2. `moegraft teach` on the kit's dense base: one new expert per new language, MoE-LPR
   stage 1 and the router review on the original languages' text.
3. `moegraft graft`: the kit's instruct − base onto the taught MoE (DeltaMoE).
4. `moegraft eval` on the kit's suite: base, instruct, the taught MoE and its graft, with
   the kit's PyTorch-built cpt-moe and DeltaMoE beside them, the same suite and rule.

Writes demo/teach/results.json (the settings, the teach report, every model's perplexity
and instruction scores) and prints the table. Takes about half an hour on 2 cores.
`--samples` writes only the page's teaching samples instead: demo/teach/{lang}.txt, the first
24 kB of each language's shuffled training text (held-out paragraphs never among them).

    python3 tools/teach_kit.py [--new it,ru] [--steps 200] [--review-steps 50] [--samples]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from demo_kit.corpus import build  # noqa: E402

TEXT_BYTES = 400_000
SAMPLE_BYTES = 24_000


def write_text(paragraphs: list[str], path: Path, seed: int, limit: int = TEXT_BYTES) -> int:
    paras = list(paragraphs)
    random.Random(seed).shuffle(paras)
    chosen, size = [], 0
    for p in paras:
        if size >= limit:
            break
        chosen.append(p)
        size += len(p.encode())
    path.write_text("\n\n".join(chosen) + "\n")
    return size


def moegraft(binary: Path, *args: str) -> str:
    done = subprocess.run([str(binary), *args], check=True, stdout=subprocess.PIPE, text=True)
    return done.stdout


def summary(model: dict) -> dict:
    return {
        "perplexity": {lang: round(v["perplexity"], 1) for lang, v in model["perplexity"].items()},
        "instructions": {
            split: {lang: f"{v['correct']}/{v['total']}" for lang, v in langs.items()}
            for split, langs in model["instructions"].items()
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new", default="it,ru", help="languages to teach (the kit's new ones)")
    ap.add_argument("--replay", default="en,es", help="languages to review the routers on")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--review-steps", type=int, default=50)
    ap.add_argument("--work", type=Path, default=Path("/tmp/demo-build"), help="where the Debian packages are unpacked")
    ap.add_argument("--out", type=Path, default=ROOT / "demo" / "teach" / "results.json")
    ap.add_argument("--binary", type=Path, default=ROOT / "target" / "release" / "moegraft")
    ap.add_argument("--samples", action="store_true", help="write only the page's samples")
    args = ap.parse_args()
    if args.samples:
        corpus = build(args.work)
        for i, lang in enumerate(args.new.split(",") + args.replay.split(",")):
            write_text(corpus.train[lang], ROOT / "demo" / "teach" / f"{lang}.txt", seed=i, limit=SAMPLE_BYTES)
        return
    if not args.binary.exists():
        subprocess.run(["cargo", "build", "--release", "--bin", "moegraft"], cwd=ROOT, check=True)

    corpus = build(args.work)
    kit = ROOT / "demo"
    with tempfile.TemporaryDirectory(prefix="moegraft-teach-kit-") as tmp:
        tmp = Path(tmp)
        text = {}
        for i, lang in enumerate(args.new.split(",") + args.replay.split(",")):
            text[lang] = tmp / f"{lang}.txt"
            write_text(corpus.train[lang], text[lang], seed=i)
        taught, grafted = tmp / "taught", tmp / "taught-DeltaMoE"
        teach_args = ["teach", "--model", str(kit / "base"), "--out", str(taught), "--json"]
        teach_args += [a for lang in args.new.split(",") for a in ("--lang", f"{lang}={text[lang]}")]
        teach_args += [a for lang in args.replay.split(",") for a in ("--replay", f"{lang}={text[lang]}")]
        teach_args += ["--steps", str(args.steps), "--review-steps", str(args.review_steps)]
        report = json.loads(moegraft(args.binary, *teach_args))
        moegraft(args.binary, "graft", "--base", str(kit / "base"), "--instruct", str(kit / "instruct"),
                 "--target", str(taught), "--out", str(grafted))
        scored = json.loads(moegraft(
            args.binary, "eval", "--suite", str(kit / "eval"), "--json",
            "--model", str(kit / "base"), "--model", str(kit / "instruct"),
            "--model", str(taught), "--model", str(grafted)))
        settings = json.loads((taught / "moegraft.json").read_text())["teach"]

    kit_results = json.loads((kit / "eval" / "results.json").read_text())
    models = {m["model"]: summary(m) for m in scored["models"]}
    for m in kit_results["models"]:
        if m["model"] in ("cpt-moe", "DeltaMoE"):
            models[f"kit {m['model']}"] = summary(m)
    base = {lang: v["perplexity"] for lang, v in next(m for m in scored["models"] if m["model"] == "base")["perplexity"].items()}
    taught_ppl = {lang: v["perplexity"] for lang, v in next(m for m in scored["models"] if m["model"] == "taught")["perplexity"].items()}
    result = {
        "command": "python3 tools/teach_kit.py " + " ".join(sys.argv[1:]),
        "teach": settings,
        "tokens_per_second": report["tokens_per_second"],
        "taught_over_base_perplexity": {lang: round(taught_ppl[lang] / base[lang], 3) for lang in base},
        "models": models,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps({k: result[k] for k in ("tokens_per_second", "taught_over_base_perplexity")}, indent=1))
    for name, m in models.items():
        print(name, m["perplexity"], m["instructions"])


if __name__ == "__main__":
    main()
