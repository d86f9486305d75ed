"""Training loops for the kit: causal-LM pretraining on a mix of languages, chat fine-tuning
with the loss on the answers only, and the two MoE-LPR stages (new experts and router on the
new languages with the rest frozen plus the load-balancing loss; then the router alone on a
small replay of the original languages, taught to send their tokens to expert 0)."""

from __future__ import annotations

import math
import random
import time

import torch
import torch.nn.functional as F

from .tok import chat_prompt


def encode_stream(tok, paragraphs: list[str]) -> torch.Tensor:
    """Paragraphs as one token stream, documents separated by <|endoftext|> (id 0)."""
    ids = []
    for enc in tok.encode_batch(paragraphs):
        ids.extend(enc.ids)
        ids.append(0)
    return torch.tensor(ids, dtype=torch.long)


def windows(streams: dict[str, torch.Tensor], batch: int, seq: int, rng: random.Random,
            mix: list[str] | None = None, repeat_share: float = 0.0):
    """Batches of random windows; yields (ids, langs). Languages come round-robin from `mix`
    (default: each once, equal shares; repeat a language in it to weight it). A `repeat_share`
    of the windows are half a window said twice: web-scale pretraining text repeats itself
    often enough for models to learn to copy, a few megabytes of fortunes do not."""
    langs = mix or sorted(streams)
    offset = 0
    while True:
        offset += batch
        rows, which = [], []
        for b in range(batch):
            lang = langs[(offset + b) % len(langs)]
            s = streams[lang]
            start = rng.randrange(0, len(s) - seq - 1)
            if rng.random() < repeat_share:
                half = s[start : start + (seq + 2) // 2]
                rows.append(torch.cat([half, half])[: seq + 1])
            else:
                rows.append(s[start : start + seq + 1])
            which.append(lang)
        yield torch.stack(rows), which


def schedule(step: int, steps: int, lr: float, warmup: int = 30) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def optimise(model, params, steps: int, lr: float, loss_fn, log: str, weight_decay: float = 0.0):
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
    model.train()
    started = time.time()
    ema = None
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = schedule(step, steps, lr)
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % 50 == 0 or step == steps - 1:
            print(f"  [{log}] step {step + 1}/{steps} loss {ema:.3f} ({time.time() - started:.0f} s)", flush=True)
    model.eval()


def pretrain(model, streams, steps: int, lr: float, seed: int, batch: int = 32, seq: int = 128,
             params=None, log: str = "pretrain", aux: bool = False, mix=None, weight_decay=0.01,
             repeat_share: float = 0.0):
    rng = random.Random(seed)
    data = windows(streams, batch, seq, rng, mix, repeat_share)
    params = [p for p in (params or model.parameters()) if p.requires_grad]

    def loss_fn(_step):
        x, _ = next(data)
        out = model(input_ids=x[:, :-1], labels=x[:, :-1].clone(), output_router_logits=aux) if aux else None
        if out is None:
            logits = model(input_ids=x[:, :-1]).logits
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        return out.loss  # LM loss + router_aux_loss_coef · load balancing

    optimise(model, params, steps, lr, loss_fn, log, weight_decay=weight_decay)


def chat_batch(tok, examples, rng: random.Random, batch: int, max_len: int = 112):
    """Prompt + answer + <|im_end|>, the loss on the answer and the end token only."""
    rows, masks = [], []
    for ex in rng.sample(examples, batch):
        prompt = tok.encode(chat_prompt(ex.prompt)).ids
        answer = tok.encode(ex.answer).ids + [2]
        ids = (prompt + answer)[:max_len]
        mask = ([0] * len(prompt) + [1] * len(answer))[:max_len]
        rows.append(ids)
        masks.append(mask)
    width = max(map(len, rows))
    x = torch.zeros(len(rows), width, dtype=torch.long)
    m = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, (ids, mask) in enumerate(zip(rows, masks)):
        x[i, : len(ids)] = torch.tensor(ids)
        m[i, : len(mask)] = torch.tensor(mask, dtype=torch.bool)
    return x, m


def finetune_chat(model, tok, examples, steps: int, lr: float, seed: int, batch: int = 32,
                  replay=None, replay_every: int = 4, replay_mix=None):
    """Chat fine-tuning; every `replay_every`-th step is plain LM on `replay` streams (in the
    proportions of `replay_mix`) so the model keeps its language modelling: replaying every
    language the base knows keeps the tied embedding rows of tokens the chat tasks never
    target from being pushed down, which Δ would otherwise carry into every graft."""
    rng = random.Random(seed)
    lm = windows(replay, batch, 128, random.Random(seed + 1), replay_mix) if replay else None

    def loss_fn(step):
        if lm is not None and step % replay_every == replay_every - 1:
            x, _ = next(lm)
            logits = model(input_ids=x[:, :-1]).logits
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        x, m = chat_batch(tok, examples, rng, batch)
        logits = model(input_ids=x[:, :-1]).logits
        target = x[:, 1:].masked_fill(~m[:, 1:], -100)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)

    optimise(model, list(model.parameters()), steps, lr, loss_fn, "chat", weight_decay=0.01)


def own_token_rows(streams: dict[str, torch.Tensor], langs, vocab: int, min_count: int = 20) -> torch.Tensor:
    """A mask of the tokens that belong to `langs`: used at least `min_count` times in their
    text and at least half of all their uses there (as `moegraft delta-stats --text` counts)."""
    counts = {lang: torch.bincount(s, minlength=vocab).double() for lang, s in streams.items()}
    mine = sum(counts[lang] for lang in langs)
    return (mine >= min_count) & (mine >= 0.5 * sum(counts.values()))


def freeze_for_new_experts(moe, token_rows: torch.Tensor | None = None) -> list:
    """Stage 1 of MoE-LPR: only the new experts and the routers learn; expert 0 (the base
    FFN) is kept exactly by zeroing its slice of the fused expert gradients (train with no
    weight decay, which would move it anyway). With `token_rows`, the (tied) embedding rows
    of the new languages' own tokens learn too, every other row stays the base's: at this
    scale the base saw too little of the new languages for their rows to be usable, which a
    real base's are (MoE-LPR freezes all embeddings)."""
    trainable = []
    if token_rows is not None:
        emb = moe.get_input_embeddings().weight
        emb.requires_grad_(True)
        keep = token_rows.to(emb.dtype)[:, None]
        emb.register_hook(lambda g: g * keep)
    for name, p in moe.named_parameters():
        if token_rows is not None and p is moe.get_input_embeddings().weight:
            trainable.append(p)
        elif ".mlp.experts." in name:
            p.requires_grad_(True)
            p.register_hook(lambda g: torch.cat([torch.zeros_like(g[:1]), g[1:]], 0))
            trainable.append(p)
        elif ".mlp.gate." in name:
            p.requires_grad_(True)
            trainable.append(p)
        else:
            p.requires_grad_(False)
    return trainable


def review_router(moe, streams, steps: int, lr: float, seed: int, lpr_weight: float = 1.0,
                  batch: int = 16, seq: int = 128):
    """Stage 2 of MoE-LPR: only the routers learn, on a small replay of the original
    languages: the LM loss plus the language-prior routing loss, a cross-entropy pulling
    every original-language token's router toward expert 0."""
    routers = []
    for name, p in moe.named_parameters():
        is_router = ".mlp.gate." in name
        p.requires_grad_(is_router)
        if is_router:
            routers.append(p)
    rng = random.Random(seed)
    data = windows(streams, batch, seq, rng)

    def loss_fn(_step):
        x, _ = next(data)
        out = moe(input_ids=x[:, :-1], output_router_logits=True)
        logits = out.logits
        lm = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        lpr = sum(F.cross_entropy(r, torch.zeros(r.shape[0], dtype=torch.long)) for r in out.router_logits)
        return lm + lpr_weight * lpr / len(out.router_logits)

    optimise(moe, routers, steps, lr, loss_fn, "router review")


@torch.no_grad()
def heldout_loss(model, stream: torch.Tensor, seq: int = 128, max_windows: int = 24) -> float:
    model.eval()
    losses = []
    for k in range(min(max_windows, (len(stream) - 1) // seq)):
        x = stream[k * seq : k * seq + seq + 1][None]
        logits = model(input_ids=x[:, :-1]).logits
        losses.append(F.cross_entropy(logits[0], x[0, 1:]).item())
    return sum(losses) / max(1, len(losses))


@torch.no_grad()
def expert0_share(moe, stream: torch.Tensor, seq: int = 128, windows_: int = 8) -> float:
    """How often expert 0 is among a token's chosen experts (over layers)."""
    hits = total = 0
    k = moe.config.num_experts_per_tok
    for w in range(min(windows_, (len(stream) - 1) // seq)):
        x = stream[w * seq : w * seq + seq][None]
        out = moe(input_ids=x, output_router_logits=True)
        for r in out.router_logits:
            top = r.topk(k, dim=-1).indices
            hits += (top == 0).any(-1).sum().item()
            total += top.shape[0]
    return hits / max(1, total)


@torch.no_grad()
def delta_on_token_rows(base, instruct, streams: dict[str, torch.Tensor], min_count: int = 20) -> dict:
    """‖Δ‖/‖θ_base‖ of the (tied) embedding over each language's own tokens: those seen at
    least `min_count` times, at least half of the time in that language. Small for the new
    languages means Δ carries the chat skill and not damage to their rows."""
    vocab = base.config.vocab_size
    e_base = base.get_input_embeddings().weight.double()
    delta = instruct.get_input_embeddings().weight.double() - e_base
    out = {}
    for lang in streams:
        rows = own_token_rows(streams, [lang], vocab, min_count)
        out[lang] = round((delta[rows].norm() / e_base[rows].norm()).item(), 4)
    return out
