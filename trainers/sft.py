"""Supervised fine-tuning on demonstrations: loss on response tokens only.

Cosine decay to ``final_lr_ratio`` (10%), residual dropout, several epochs, validation loss
every epoch and, when ``reward_model`` is given, the mean RM score of greedy responses to the
validation prompts; the best epoch by that score (else by validation loss) becomes the final
model in ``<out>/model``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
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
from trainers.configs import SFTConfig
from trainers.data import SFTExample, parse_sft, read_file, split_train_valid
from trainers.formatting import encode_pair
from trainers.models import apply_residual_dropout, compile_blocks, load_causal_lm, load_tokenizer, pad_batch
from trainers.sharding import (
    ShardedState, check_resume, fsdp_micro_batches, is_sharded, save_full_model, shard_model,
)

IGNORE = -100


def tokenize_sft(tok: Any, examples: list[SFTExample], max_length: int) -> list[tuple[list[int], int]]:
    """(ids, prompt length) per example; the prompt ids are masked out of the loss."""
    return [encode_pair(tok, ex.messages[:-1], ex.messages[-1]["content"], max_length) for ex in examples]


def collate_sft(items: list[tuple[list[int], int]], pad_id: int, device: torch.device, multiple: int = 1):
    """Right-padded (ids, mask, labels); ``multiple`` rounds the width up (few shapes for torch.compile)."""
    ids, mask = pad_batch([i for i, _ in items], pad_id, "right", device, multiple)
    labels = ids.clone()
    labels[mask == 0] = IGNORE
    for row, (_, plen) in enumerate(items):
        labels[row, :plen] = IGNORE
    return ids, mask, labels


def idle_batch(tok: Any) -> list[tuple[list[int], int]]:
    """One pad token with no loss: a pass that only takes part in FSDP's collectives."""
    return [([tok.pad_token_id], 1)]


def shifted_ce_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed fp32 cross-entropy of position t's logits against labels[t + 1] (-100: no loss)."""
    target = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE)  # shift labels, not logits: no copy
    return torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE, reduction="sum")


def response_token_loss_sum(model: Any, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
                            ce: Any = shifted_ce_sum) -> torch.Tensor:
    """Summed next-token cross-entropy over the response tokens (labels != -100).

    Batches are right-padded and the model is causal, so no real token ever attends to a pad
    token and positions 0..len-1 are the defaults: the model runs without an attention mask
    (plain causal attention, the flash kernel under SDPA); pad positions carry no loss.
    """
    return ce(model(input_ids=ids, use_cache=False).logits, labels)


@torch.no_grad()
def evaluate_loss(model: Any, items: list, pad_id: int, bs: int, device: torch.device, dtype: torch.dtype,
                  multiple: int = 1, passes: int = 0) -> float:
    """Token-weighted mean response loss, over all processes; at least ``passes`` forward passes
    (under FSDP every process must run as many: the missing ones are idle passes with no loss)."""
    model.eval()
    total = torch.zeros(2, device=device, dtype=torch.float64)
    for s in range(0, max(len(items), passes * bs), bs):
        ids, mask, labels = collate_sft(items[s:s + bs] or [([pad_id], 1)], pad_id, device, multiple)
        with autocast(device, dtype):
            total[0] += response_token_loss_sum(model, ids, mask, labels).double()
        total[1] += (labels[:, 1:] != IGNORE).sum()
    total = all_reduce_sum(total)
    model.train()
    return float(total[0] / total[1].clamp(min=1))


def train_sft(cfg: SFTConfig) -> dict[str, Any]:
    rank, world, device = init_distributed()
    set_seed(cfg.seed)
    out = Path(cfg.out)
    rows, report = read_file(cfg.data, parse_sft, cfg.skip_bad_rows)
    if cfg.valid_data:
        train_rows = rows
        valid_rows, _ = read_file(cfg.valid_data, parse_sft, cfg.skip_bad_rows)
    else:
        train_rows, valid_rows = split_train_valid(rows, cfg.valid_fraction, cfg.seed)
    if is_main():
        write_config(cfg, out)
    dtype = resolve_dtype(cfg.dtype, device)
    tok = load_tokenizer(cfg.model)
    ckpt_dir = out / "checkpoints"
    resume_from = latest_checkpoint(ckpt_dir) if cfg.resume else None
    check_resume(resume_from, cfg.fsdp)
    # an --fsdp checkpoint holds sharded weights, loaded after sharding (trainers/sharding.py);
    # under --fsdp the model stays on the CPU until sharding moves one block at a time to the device
    model = load_causal_lm(str(resume_from / "policy") if resume_from and not cfg.fsdp else cfg.model,
                           attn_implementation="sdpa" if device.type == "cuda" else None)
    model = model if cfg.fsdp else model.to(device)
    apply_residual_dropout(model, cfg.residual_dropout)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    train_items = tokenize_sft(tok, train_rows, cfg.max_length)
    valid_items = shard(tokenize_sft(tok, valid_rows, cfg.max_length), rank, world)
    steps_per_epoch = math.ceil(len(train_items) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    use_compile = device.type == "cuda" if cfg.compile is None else cfg.compile
    if use_compile:
        compile_blocks(model)  # in place, before DDP wraps it
    pad_multiple = 64 if use_compile else 1  # tensor-core friendly widths
    # The loss stays eager: compiling it too gained ~1 MFU point in steady state on an H100 but
    # cost ~5 s more warm-up, a net loss over a 256-step run (benchmarks/README.md).
    ce = shifted_ce_sum
    ddp = shard_model(model, device) if cfg.fsdp else DDP(model) if world > 1 else model
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                              fused=device.type == "cuda")
    sharded = ShardedState(model, optim) if cfg.fsdp else None  # saves/loads the sharded model and optimizer
    sched = torch.optim.lr_scheduler.LambdaLR(optim, cosine_lr_lambda(total_steps, cfg.warmup_steps, cfg.final_lr_ratio))
    state: dict[str, Any] = {"best": None, "best_epoch": None}
    step = 0
    if resume_from:
        saved = load_checkpoint(resume_from, optim, sched, sharded)
        step, state = saved["step"], {"best": saved["best"], "best_epoch": saved["best_epoch"]}
    metrics = Metrics(out, resume=resume_from is not None)
    if resume_from:
        metrics.truncate_after(step)
    rm = rm_tok = None
    if cfg.reward_model and valid_rows:
        from trainers.models import load_scalar_model

        rm = load_scalar_model(cfg.reward_model).to(device).eval()
        rm_tok = load_tokenizer(cfg.reward_model)
    end = min(total_steps, cfg.max_steps) if cfg.max_steps else total_steps
    valid_passes = fsdp_micro_batches(len(valid_rows), world, cfg.micro_batch_size) if cfg.fsdp else 0
    n_tokens_seen = 0
    t0 = time.time()
    metrics.total_steps = end
    bar = progress(end, "sft", initial=step)
    while step < end:
        epoch = step // steps_per_epoch
        order = torch.randperm(len(train_items), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch)).tolist()
        pos = step % steps_per_epoch
        batch = [train_items[i] for i in order[pos * cfg.batch_size:(pos + 1) * cfg.batch_size]]
        n_resp = sum(len(ids) - plen for ids, plen in batch)
        # longest first: micro-batches of similar length waste less padding (the loss is a sum)
        mine = sorted(shard(batch, rank, world), key=lambda it: -len(it[0]))
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        micro = [mine[i:i + cfg.micro_batch_size] for i in range(0, len(mine), cfg.micro_batch_size)]
        if cfg.fsdp:  # as many passes on every process: each gathers the blocks' weights; [] = idle pass
            micro += [[]] * (fsdp_micro_batches(len(batch), world, cfg.micro_batch_size) - len(micro))
        for mi, mb in enumerate(micro):
            ids, mask, labels = collate_sft(mb or idle_batch(tok), tok.pad_token_id, device, pad_multiple)
            sync = world == 1 or mi == len(micro) - 1 or cfg.fsdp  # FSDP reduce-scatters every pass
            ctx = ddp.no_sync() if not sync else _null()
            with ctx, autocast(device, dtype):
                s = response_token_loss_sum(ddp, ids, mask, labels, ce)
                # normalised by the global batch's response tokens; DDP averages over processes
                (s * world / max(1, n_resp)).backward()
            loss_sum += s.detach().double()
            n_tokens_seen += sum(len(i) for i, _ in mb) * world  # no device sync
        if not micro and world > 1:  # an empty shard still takes part in the gradient all-reduce
            (sum(p.sum() for p in ddp.parameters()) * 0).backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        gnorm = gnorm.full_tensor() if hasattr(gnorm, "full_tensor") else gnorm  # a DTensor under FSDP
        optim.step()
        sched.step()
        optim.zero_grad(set_to_none=True)
        release_freed_memory(device)  # CPU: varying pass widths fragment glibc's heap
        step += 1
        loss, gnorm = torch.stack([all_reduce_sum(loss_sum) / max(1, n_resp), gnorm.double()]).tolist()  # one sync
        metrics.log(step, {"train/loss": loss, "train/lr": sched.get_last_lr()[0], "train/grad_norm": float(gnorm),
                           "train/tokens_per_s": n_tokens_seen / max(1e-9, time.time() - t0),
                           "train/elapsed_s": time.time() - t0})
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
        epoch_end = step % steps_per_epoch == 0
        if epoch_end and valid_items is not None and valid_rows:
            vals = {"valid/loss": evaluate_loss(model, valid_items, tok.pad_token_id, cfg.micro_batch_size, device, dtype,
                                                pad_multiple, passes=valid_passes)}
            if rm is not None:
                vals["valid/rm_score"] = validation_rm_score(model, tok, rm, rm_tok, valid_rows, cfg, device)
            metrics.log(step, vals)
            key = vals.get("valid/rm_score", -vals["valid/loss"])
            if state["best"] is None or key > state["best"]:
                state = {"best": key, "best_epoch": epoch + 1}
                _save_model(model, tok, out / "best")
        if epoch_end or (cfg.save_every and step % cfg.save_every == 0) or step == end:
            save_checkpoint(ckpt_dir, {} if sharded else {"policy": model}, optim, sched, step,
                            {**state, "config": cfg.__dict__}, tokenizer=tok, keep_last=cfg.keep_checkpoints,
                            sharded=sharded)
    bar.close()
    final = out / "model"
    if step >= total_steps:
        if (out / "best").is_dir():
            if is_main():
                shutil.rmtree(final, ignore_errors=True)
                shutil.copytree(out / "best", final)
        else:
            _save_model(model, tok, final)
    result = {"steps": step, "finished": step >= total_steps, "best_epoch": state["best_epoch"],
              "model": str(final), "input": report.summary(), "train_rows": len(train_items),
              "valid_rows": len(valid_rows)}
    if is_main():
        (out / "result.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def _null():
    from contextlib import nullcontext

    return nullcontext()


def _save_model(model: Any, tok: Any, path: Path) -> None:
    """Rank 0 writes a transformers folder; a sharded model is gathered first (every process)."""
    if is_sharded(model):
        return save_full_model(model, tok, path)
    if not is_main():
        return
    shutil.rmtree(path, ignore_errors=True)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)


@torch.no_grad()
def validation_rm_score(model, tok, rm, rm_tok, rows: list[SFTExample], cfg: SFTConfig, device) -> float:
    """Mean RM score of greedy responses to the validation prompts (all processes)."""
    from trainers.generate import decode_response, sample_responses
    from trainers.reward import score_texts

    rank, world = (0, 1)
    import torch.distributed as dist

    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    mine = shard(rows, rank, world)
    bs = cfg.micro_batch_size
    # under FSDP every generate step gathers the blocks' weights: every process makes as many calls
    # (a process with no rows left samples its first row again and counts nothing), and transformers
    # keeps the calls' decode steps in lock-step (synced_gpus, see trainers/sharding.py)
    calls = fsdp_micro_batches(len(rows), world, bs) if is_sharded(model) else 0
    total = torch.zeros(2, device=device, dtype=torch.float64)
    for s in range(0, max(len(mine), calls * bs), bs):
        chunk = mine[s:s + bs]
        prompts = [ex.messages[:-1] for ex in chunk or rows[:1]]
        samples = sample_responses(model, tok, prompts, cfg.valid_max_new_tokens, 0.0, device)
        if not chunk:
            continue
        texts = [decode_response(tok, x.response_ids) for x in samples]
        scores = score_texts(rm, rm_tok, prompts, texts, device, cfg.max_length)
        total[0] += scores.double().sum()
        total[1] += len(chunk)
    total = all_reduce_sum(total)
    return float(total[0] / total[1].clamp(min=1))
