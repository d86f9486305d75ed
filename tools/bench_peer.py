#!/usr/bin/env python3
"""Peer figures for `moegraft bench` (dev-only): prefill and decode tokens/s of the same model
on the same machine, measured the way moegraft measures them — a prompt of random ids fed to a
fresh cache, then single-token greedy steps (forward pass plus argmax) at each context.

  llama.cpp (llama-cpp-python):  bench_peer.py llama.cpp --gguf MODEL.gguf --threads 2
  transformers/PyTorch (CPU):    bench_peer.py transformers --model HF_DIR --threads 2 [--dtype float32]

Prints one JSON object: {"peer", "threads", "prefill": {...}, "decode": [{"context", ...}]},
each speed as {"median", "min", "max", "samples"} like moegraft's report.

The merge peer times what `moegraft bench`'s merge figure times — ParamΔ of a model onto
itself, out = t + (inst − base) in f32, written in the target's dtype to a new directory —
the way a PyTorch user would write it (safetensors' lazy `safe_open`, one tensor at a time,
then `save_file`, under a temporary name renamed when complete):

  PyTorch + safetensors (CPU):   bench_peer.py merge --model HF_DIR --threads 2

and prints {"peer", "threads", "merge": {"input_bytes", "output_bytes", "seconds", "gbps"}}.
"""
import argparse
import json
import random
import statistics
import sys
import time


def stat(samples):
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": len(samples),
    }


def random_ids(n, vocab, seed):
    rng = random.Random(seed)
    return [rng.randrange(vocab) for _ in range(n)]


def run(step, prefill_fn, vocab, args):
    """step(id) -> next id after one cached token; prefill_fn(ids) -> next id (fresh cache)."""
    prompt = random_ids(args.prompt_tokens, vocab, 1)
    rates = []
    for r in range(args.warmup + args.repeats):
        t = time.perf_counter()
        prefill_fn(prompt)
        s = time.perf_counter() - t
        if r >= args.warmup:
            rates.append(len(prompt) / s)
    out = {"prefill": {"tokens": len(prompt), "tokens_per_s": stat(rates)}, "decode": []}
    for context in args.contexts:
        tok = prefill_fn(random_ids(context, vocab, 2))
        rates = []
        for i in range(args.warmup + args.decode_tokens):
            t = time.perf_counter()
            tok = step(tok)
            s = time.perf_counter() - t
            if i >= args.warmup:
                rates.append(1.0 / s)
        out["decode"].append({"context": context, "tokens_per_s": stat(rates)})
    return out


def llama_cpp(args):
    import numpy as np
    from llama_cpp import Llama, __version__

    n_ctx = max(args.contexts + [args.prompt_tokens]) + args.warmup + args.decode_tokens + 8
    llm = Llama(
        model_path=args.gguf,
        n_ctx=n_ctx,
        n_batch=max(args.prompt_tokens, 512),
        n_threads=args.threads,
        n_threads_batch=args.threads,
        n_gpu_layers=0,
        verbose=False,
    )

    def argmax_last():
        return int(np.argmax(llm._ctx.get_logits_ith(-1)[: llm.n_vocab()]))

    def prefill_fn(ids):
        llm.reset()
        llm.eval(ids)
        return argmax_last()

    def step(tok):
        llm.eval([tok])
        return argmax_last()

    out = run(step, prefill_fn, llm.n_vocab(), args)
    out["peer"] = f"llama.cpp via llama-cpp-python {__version__}, CPU, {args.gguf}"
    return out


def transformers_peer(args):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).eval()
    state = {}

    @torch.inference_mode()
    def prefill_fn(ids):
        o = model(torch.tensor([ids]), use_cache=True)
        state["past"] = o.past_key_values
        return int(o.logits[0, -1].argmax())

    @torch.inference_mode()
    def step(tok):
        o = model(torch.tensor([[tok]]), past_key_values=state["past"], use_cache=True)
        state["past"] = o.past_key_values
        return int(o.logits[0, -1].argmax())

    out = run(step, prefill_fn, model.config.vocab_size, args)
    out["peer"] = (
        f"transformers {transformers.__version__} / torch {torch.__version__}, CPU, "
        f"{args.dtype}, {args.model}"
    )
    return out


def merge_peer(args):
    import glob
    import os
    import shutil
    import tempfile

    import safetensors
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    torch.set_num_threads(args.threads)
    files = sorted(glob.glob(os.path.join(args.model, "*.safetensors")))
    if not files:
        sys.exit(f"no .safetensors files in {args.model}")
    scratch = tempfile.mkdtemp(prefix="merge-peer-")

    def graft(out_dir):
        in_bytes = out_bytes = 0
        tmp = out_dir + ".partial"
        os.makedirs(tmp)
        for path in files:
            name = os.path.basename(path)
            # The same file as base, instruct and target, opened three times as three inputs.
            with safe_open(path, "pt") as b, safe_open(path, "pt") as i, safe_open(path, "pt") as t:
                merged = {}
                for key in t.keys():
                    tt, ii, bb = t.get_tensor(key), i.get_tensor(key), b.get_tensor(key)
                    out = (tt.float() + (ii.float() - bb.float())).to(tt.dtype)
                    merged[key] = out
                    in_bytes += 3 * tt.numel() * tt.element_size()
                    out_bytes += out.numel() * out.element_size()
                save_file(merged, os.path.join(tmp, name), metadata={"format": "pt"})
        os.rename(tmp, out_dir)
        return in_bytes, out_bytes

    seconds = []
    try:
        for r in range(args.warmup + args.repeats):
            out_dir = os.path.join(scratch, f"out-{r}")
            start = time.perf_counter()
            in_bytes, out_bytes = graft(out_dir)
            s = time.perf_counter() - start
            shutil.rmtree(out_dir)
            if r >= args.warmup:
                seconds.append(s)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "peer": f"PyTorch {torch.__version__} + safetensors {safetensors.__version__}, CPU, {args.model}",
        "merge": {
            "input_bytes": in_bytes,
            "output_bytes": out_bytes,
            "seconds": stat(seconds),
            "gbps": stat([in_bytes / s / 1e9 for s in seconds]),
        },
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("peer", choices=["llama.cpp", "transformers", "merge"])
    p.add_argument("--gguf", help="GGUF file (llama.cpp)")
    p.add_argument("--model", help="Hugging Face directory (transformers, merge)")
    p.add_argument("--dtype", default="float32", help="torch dtype for transformers")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--contexts", default="128,1024")
    p.add_argument("--decode-tokens", type=int, default=32)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    args.contexts = [int(c) for c in args.contexts.split(",") if c]
    if args.peer == "llama.cpp":
        if not args.gguf:
            sys.exit("llama.cpp needs --gguf")
        out = llama_cpp(args)
    elif args.peer == "merge":
        if not args.model:
            sys.exit("merge needs --model")
        out = merge_peer(args)
    else:
        if not args.model:
            sys.exit("transformers needs --model")
        out = transformers_peer(args)
    out["threads"] = args.threads
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
