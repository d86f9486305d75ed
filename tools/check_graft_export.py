#!/usr/bin/env python3
"""Reference logits for a DeltaMoE export, from transformers.

Dev-only. Loads `<fixtures>/deltamoe-tiny` (a `moegraft graft` output) as MixtralForCausalLM
in float32 and writes, for a few id sequences, the full last-position logits, the top-10 ids
and their logits to `<fixtures>/reference.json`; tests/graft_export.rs checks moegraft's
runtime against them (within 2e-3).

    /opt/refvenv/bin/python tools/check_graft_export.py tests/fixtures/graft
"""

import argparse
import json
import sys
from pathlib import Path

import torch
import transformers
from transformers import MixtralForCausalLM

SEQUENCES = [
    [0, 5, 17, 42, 99, 3],
    [1, 250, 7, 7, 301, 12, 64, 2, 9],
    [123],
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("fixtures", type=Path)
    args = ap.parse_args()
    export = args.fixtures / "deltamoe-tiny"
    model = MixtralForCausalLM.from_pretrained(export, dtype=torch.float32)
    model.eval()
    manifest = json.loads((export / "moegraft.json").read_text())
    if manifest["method"] != "deltamoe":
        print(f"{export}: method is {manifest['method']}, expected deltamoe", file=sys.stderr)
        return 1
    cases = []
    with torch.no_grad():
        for ids in SEQUENCES:
            logits = model(torch.tensor([ids])).logits[0, -1]
            top = torch.topk(logits, 10)
            cases.append(
                {
                    "input_ids": ids,
                    "top_ids": top.indices.tolist(),
                    "top_logits": top.values.tolist(),
                    "last_logits": logits.tolist(),
                }
            )
    reference = {
        "generator": "tools/check_graft_export.py",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "notes": "MixtralForCausalLM.from_pretrained(deltamoe-tiny, dtype=float32), no KV cache; "
        "last_logits = logits at the last position.",
        "cases": cases,
    }
    out = args.fixtures / "reference.json"
    out.write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {out}: {len(cases)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
