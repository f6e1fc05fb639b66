"""Reward model on K-wise rankings, grouped by prompt.

All K completions of a prompt are scored in one forward pass, and every one of the group's
C(K,2) pairs enters the loss of that one batch element (``losses.kwise_loss``); ties give no
pair. Pairwise rows are regrouped by prompt first. After training a bias is set so that the
demonstrations (``--demonstrations``; else each group's best-ranked responses) score mean 0.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from trainers.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from trainers.common import (
    Metrics, all_reduce_sum, autocast, cosine_lr_lambda, init_distributed, is_main, progress,
    release_freed_memory, resolve_dtype, set_seed, shard,
)
from trainers.config import write_config
from trainers.configs import RMConfig
from trainers.data import (
    Messages, RankGroup, group_preferences, parse_preference, parse_sft, prompts_in_several_splits, read_file,
    split_train_valid,
)
from trainers.formatting import encode_pair
from trainers.losses import kwise_loss, pairwise_correct
from trainers.models import ScalarHeadModel, load_scalar_model, load_tokenizer, pad_batch
from trainers.sharding import (
    ShardedState, check_resume, fsdp_micro_batches, is_sharded, save_full_model, shard_model,
)


@dataclass
class EncodedGroup:
    seqs: list[list[int]]
    pairs: list[tuple[int, int]]


def encode_groups(tok: Any, groups: list[RankGroup], max_length: int) -> list[EncodedGroup]:
    return [EncodedGroup([encode_pair(tok, g.prompt, c, max_length)[0] for c in g.completions], g.pairs)
            for g in groups]


def length_sorted_micro_batches(groups: list[EncodedGroup], size: int) -> list[list[EncodedGroup]]:
    """A step's groups in micro-batches of at most ``size``, longest first, so that each pass pads to
    lengths close to its own instead of the step's longest sequence. The step's gradient is a sum
    over groups, so which pass a group falls in does not change it (only float summation order)."""
    ordered = sorted(groups, key=lambda g: -max(len(s) for s in g.seqs))
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


def idle_group(pad_id: int) -> EncodedGroup:
    """One pad token and no pair: a pass that only takes part in FSDP's collectives."""
    return EncodedGroup([[pad_id]], [])


def collate_groups(groups: list[EncodedGroup], pad_id: int, device: torch.device):
    """Flat sequences of all groups + (winner, loser, group) index tensors into them."""
    seqs, win, lose, gid = [], [], [], []
    for gi, g in enumerate(groups):
        off = len(seqs)
        seqs.extend(g.seqs)
        for w, l in g.pairs:
            win.append(off + w)
            lose.append(off + l)
            gid.append(gi)
    ids, mask = pad_batch(seqs, pad_id, "right", device)
    t = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
    return ids, mask, t(win), t(lose), t(gid)


@torch.no_grad()
def evaluate(model: Any, groups: list[EncodedGroup], pad_id: int, bs: int, device, dtype,
             passes: int = 0) -> dict[str, float]:
    """Held-out pairwise accuracy and mean group loss, over all processes; at least ``passes``
    forward passes (under FSDP every process runs as many: the missing ones are idle passes)."""
    model.eval()
    acc = torch.zeros(4, device=device, dtype=torch.float64)  # correct, pairs, loss sum, groups
    for s in range(0, max(len(groups), passes * bs), bs):
        chunk = groups[s:s + bs]
        ids, mask, w, l, g = collate_groups(chunk or [idle_group(pad_id)], pad_id, device)
        with autocast(device, dtype):
            scores = model(ids, mask)
        acc[0] += pairwise_correct(scores, w, l).sum().double()
        acc[1] += len(w)
        acc[2] += kwise_loss(scores, w, l, g, max(1, len(chunk))).sum().double()
        acc[3] += len(chunk)
    acc = all_reduce_sum(acc)
    model.train()
    return {"valid/accuracy": float(acc[0] / acc[1].clamp(min=1)), "valid/loss": float(acc[2] / acc[3].clamp(min=1))}


@torch.no_grad()
def score_texts(rm: ScalarHeadModel, tok: Any, prompts: list[Messages], responses: list[str], device,
                max_length: int = 512, batch_size: int = 16) -> torch.Tensor:
    """RM scores (bias included) of prompt/response pairs, rendered like the training data and cut
    to the length the RM was trained at (``max_length`` only for an RM that does not record it)."""
    max_length = getattr(rm, "max_length", None) or max_length  # scripted scorers in tests have none
    out = []
    for s in range(0, len(prompts), batch_size):
        seqs = [encode_pair(tok, p, r, max_length)[0] for p, r in zip(prompts[s:s + batch_size], responses[s:s + batch_size])]
        ids, mask = pad_batch(seqs, tok.pad_token_id, "right", device)
        out.append(rm(ids, mask).float())
    return torch.cat(out) if out else torch.zeros(0)


def normalise_bias(rm: ScalarHeadModel, tok: Any, cfg: RMConfig, train_groups: list[RankGroup], device) -> dict:
    """Shift the RM so the demonstrations (or the best-ranked responses) score mean 0."""
    if cfg.demonstrations:
        demos, _ = read_file(cfg.demonstrations, parse_sft, cfg.skip_bad_rows)
        prompts = [d.messages[:-1] for d in demos]
        texts = [d.messages[-1]["content"] for d in demos]
        source = f"demonstrations ({cfg.demonstrations})"
    else:
        prompts, texts = [], []
        for g in train_groups:
            losers = {l for _, l in g.pairs}
            for i, c in enumerate(g.completions):
                if i not in losers:
                    prompts.append(g.prompt)
                    texts.append(c)
        source = "best-ranked (chosen) responses of the training comparisons"
    rm.set_bias(0.0)
    rm.eval()
    raw = score_texts(rm, tok, prompts, texts, device, cfg.max_length)
    mean = float(raw.mean())
    rm.set_bias(-mean)
    return {"bias": -mean, "normalised_on": source, "normalised_count": len(texts)}


def train_rm(cfg: RMConfig) -> dict[str, Any]:
    rank, world, device = init_distributed()
    set_seed(cfg.seed)
    out = Path(cfg.out)
    items, report = read_file(cfg.data, parse_preference, cfg.skip_bad_rows)
    groups = group_preferences(items)
    mixed = prompts_in_several_splits(groups)
    if mixed and is_main():
        print(f"warning: {cfg.data}: {mixed} prompt(s) have comparisons in both the training and the held-out "
              "splits; each row is used in the split it is marked with, but held-out accuracy on these prompts "
              "is not fully held out", file=sys.stderr)
    if cfg.valid_data:
        v_items, _ = read_file(cfg.valid_data, parse_preference, cfg.skip_bad_rows)
        train_groups, valid_groups = groups, group_preferences(v_items)
    else:
        train_groups, valid_groups = split_train_valid(groups, cfg.valid_fraction, cfg.seed)
    if is_main():
        write_config(cfg, out)
    dtype = resolve_dtype(cfg.dtype, device)
    tok = load_tokenizer(cfg.model)
    ckpt_dir = out / "checkpoints"
    resume_from = latest_checkpoint(ckpt_dir) if cfg.resume else None
    check_resume(resume_from, cfg.fsdp)
    # an --fsdp checkpoint holds sharded weights, loaded after sharding (trainers/sharding.py);
    # under --fsdp the model stays on the CPU until sharding moves one block at a time to the device
    model = load_scalar_model(str(resume_from / "rm") if resume_from and not cfg.fsdp else cfg.model,
                              dropout=cfg.dropout)
    model = model if cfg.fsdp else model.to(device)
    model.set_bias(0.0)
    model.set_max_length(cfg.max_length)
    model.train()
    train_enc = encode_groups(tok, train_groups, cfg.max_length)
    valid_enc = shard(encode_groups(tok, valid_groups, cfg.max_length), rank, world)
    steps_per_epoch = math.ceil(len(train_enc) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    ddp = shard_model(model, device) if cfg.fsdp else DDP(model) if world > 1 else model
    if cfg.compile:
        ddp = torch.compile(ddp)
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda")
    sharded = ShardedState(model, optim) if cfg.fsdp else None  # saves/loads the sharded model and optimizer
    sched = torch.optim.lr_scheduler.LambdaLR(optim, cosine_lr_lambda(total_steps, cfg.warmup_steps, cfg.final_lr_ratio))
    step = 0
    if resume_from:
        step = load_checkpoint(resume_from, optim, sched, sharded)["step"]
    metrics = Metrics(out, resume=resume_from is not None)
    if resume_from:
        metrics.truncate_after(step)
    end = min(total_steps, cfg.max_steps) if cfg.max_steps else total_steps
    valid_passes = fsdp_micro_batches(len(valid_groups), world, cfg.micro_batch_size) if cfg.fsdp else 0
    t0, n_tokens, n_pairs = time.time(), 0, 0
    metrics.total_steps = end
    bar = progress(end, "rm", initial=step)
    last_eval: dict[str, float] = {}
    while step < end:
        epoch = step // steps_per_epoch
        order = torch.randperm(len(train_enc), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch)).tolist()
        pos = step % steps_per_epoch
        batch = [train_enc[i] for i in order[pos * cfg.batch_size:(pos + 1) * cfg.batch_size]]
        mine = shard(batch, rank, world)
        micro = length_sorted_micro_batches(mine, cfg.micro_batch_size)
        if cfg.fsdp:  # as many passes on every process: each gathers the blocks' weights; [] = idle pass
            micro += [[]] * (fsdp_micro_batches(len(batch), world, cfg.micro_batch_size) - len(micro))
        stats = torch.zeros(3, device=device, dtype=torch.float64)  # loss sum, correct, pairs
        for mi, mb in enumerate(micro):
            ids, mask, w, l, g = collate_groups(mb or [idle_group(tok.pad_token_id)], tok.pad_token_id, device)
            ctx = ddp.no_sync() if world > 1 and mi < len(micro) - 1 and not cfg.fsdp else _null()
            with ctx, autocast(device, dtype):
                scores = ddp(ids, mask)
                group_loss = kwise_loss(scores, w, l, g, max(1, len(mb)))
                (group_loss.sum() * world / len(batch)).backward()
            stats += torch.stack([group_loss.sum().detach().double(), pairwise_correct(scores.detach(), w, l).sum().double(),
                                  torch.tensor(float(len(w)), device=device, dtype=torch.float64)])
            n_tokens += int(mask.sum()) * world if mb else 0
            n_pairs += len(w) * world
        if not micro and world > 1:
            (sum(p.sum() for p in ddp.parameters()) * 0).backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        gnorm = gnorm.full_tensor() if hasattr(gnorm, "full_tensor") else gnorm  # a DTensor under FSDP
        optim.step()
        sched.step()
        optim.zero_grad(set_to_none=True)
        release_freed_memory(device)  # CPU: varying pass widths fragment glibc's heap
        step += 1
        stats = all_reduce_sum(stats)
        loss = float(stats[0] / len(batch))
        elapsed = max(1e-9, time.time() - t0)
        metrics.log(step, {"train/loss": loss, "train/accuracy": float(stats[1] / stats[2].clamp(min=1)),
                           "train/lr": sched.get_last_lr()[0], "train/grad_norm": float(gnorm),
                           "train/tokens_per_s": n_tokens / elapsed, "train/pairs_per_s": n_pairs / elapsed,
                           "train/elapsed_s": elapsed})
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
        if valid_groups and (step % steps_per_epoch == 0 or (cfg.eval_every and step % cfg.eval_every == 0) or step == end):
            last_eval = evaluate(model, valid_enc, tok.pad_token_id, cfg.micro_batch_size, device, dtype, valid_passes)
            metrics.log(step, last_eval)
        if step % steps_per_epoch == 0 or step == end:
            save_checkpoint(ckpt_dir, {} if sharded else {"rm": model}, optim, sched, step, {"config": cfg.__dict__},
                            tokenizer=tok, keep_last=cfg.keep_checkpoints, sharded=sharded)
    bar.close()
    result: dict[str, Any] = {"steps": step, "finished": step >= total_steps, "input": report.summary(),
                              "train_groups": len(train_groups), "valid_groups": len(valid_groups),
                              "train_pairs": sum(len(g.pairs) for g in train_groups),
                              "prompts_in_several_splits": mixed, **last_eval}
    if step >= total_steps:
        norm = normalise_bias(model, tok, cfg, train_groups, device)
        result.update(norm)
        metrics.log(step, {"rm/bias": norm["bias"]})
        final = out / "model"
        result["model"] = str(final)
        if is_sharded(model):
            save_full_model(model, tok, final)  # gathered on rank 0 (every process takes part)
        elif is_main():
            shutil.rmtree(final, ignore_errors=True)
            model.save_pretrained(final, safe_serialization=True)
            tok.save_pretrained(final)
    if is_main():
        (out / "result.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def _null():
    from contextlib import nullcontext

    return nullcontext()
