"""PPO-ptx (InstructGPT): policy and frozen reference from SFT, value model from the RM.

reward = RM score of the finished response - beta * (log pi - log pi_ref) per token; GAE;
whitened advantages; clipped policy and value losses; plus ``ptx_coef`` (gamma) times the
language-modelling loss of a pretraining batch, accumulated into the same optimiser step
(gamma = 0 is plain PPO; default 1, measured: docs/formats.md 'choosing gamma'); optional EMA of
the policy weights.

``--fsdp`` shards all four models over the processes (trainers/sharding.py): the policy and value
model with their gradients and AdamW state, the frozen reference and RM without an optimizer
(they are as large as the policy, so keeping them whole would cap the model size). Every process
samples as many prompts (``rollout_batch_size`` and ``minibatch_size`` are multiples of the process
count) and ``generate`` decodes in lock-step, so every process runs the same forward passes.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from trainers.checkpoint import latest_checkpoint, load_checkpoint, load_extra, save_checkpoint
from trainers.common import (
    Metrics, all_reduce_sum, autocast, init_distributed, is_main, progress, resolve_dtype, set_seed, shard,
)
from trainers.config import write_config
from trainers.configs import PPOConfig
from trainers.data import parse_prompt, read_file, read_pretrain, split_train_valid
from trainers.engines import check_engine, make_engine
from trainers.errors import ConfigError, DataError
from trainers.losses import clipped_policy_loss, clipped_value_loss, masked_mean
from trainers.models import load_causal_lm, load_scalar_model, load_tokenizer, pad_batch
from trainers.rollout import RewardFn, add_advantages, make_rollout, policy_forward, rollout_stats, value_forward
from trainers.sharding import ShardedState, check_resume, save_full_model, shard_model


def place(model: nn.Module, device: torch.device, fsdp: bool) -> nn.Module:
    """Onto the device, or under --fsdp sharded: FSDP moves one block at a time from the CPU, so a
    process never holds a whole model on its GPU."""
    return shard_model(model, device) if fsdp else model.to(device)


def _scorer(cfg: PPOConfig, reward_fn: RewardFn | None, device) -> tuple[Callable, Any]:
    if reward_fn is not None:
        return (lambda msgs, ptexts, texts: torch.tensor(reward_fn(ptexts, texts), dtype=torch.float32)), None
    if not cfg.reward_model:
        raise ConfigError("missing required option: --reward-model")
    from trainers.reward import score_texts

    rm = load_scalar_model(cfg.reward_model).eval()
    for p in rm.parameters():
        p.requires_grad_(False)
    place(rm, device, cfg.fsdp)
    rm_tok = load_tokenizer(cfg.reward_model)
    return (lambda msgs, ptexts, texts: score_texts(rm, rm_tok, msgs, texts, device)), (rm, rm_tok)


def _value_source(cfg: PPOConfig, tok: Any, rm: Any) -> str:
    if cfg.value_model:
        return cfg.value_model
    if rm is not None and rm[0].is_decoder and len(rm[1]) == len(tok):
        return cfg.reward_model
    return cfg.policy


@torch.no_grad()
def pretrain_loss(model: Any, batch: list[list[int]], pad_id: int, device, dtype) -> float:
    was = model.training
    model.eval()
    loss = ptx_loss(model, batch, pad_id, device, dtype)
    model.train(was)
    return float(loss)


def ptx_loss(model: Any, batch: list[list[int]], pad_id: int, device, dtype) -> torch.Tensor:
    """Mean next-token cross-entropy of pretraining sequences."""
    ids, mask = pad_batch(batch, pad_id, "right", device)
    labels = ids.masked_fill(mask == 0, -100)
    with autocast(device, dtype):
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1]
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                             ignore_index=-100)


def pretrain_sequences(tok: Any, documents: list[str], max_length: int) -> list[list[int]]:
    """Each document on its own: tokenized, cut to its first ``max_length`` tokens (the rest is
    dropped, nothing is packed). A document that fits ends with EOS, as a response does, so the ptx
    term teaches the policy to stop rather than to run on; one of under 2 tokens has no next-token
    target and is left out."""
    eos = tok.eos_token_id
    out = []
    for text in documents:
        ids = list(tok(text, add_special_tokens=True)["input_ids"])
        if eos is not None and len(ids) < max_length and (not ids or ids[-1] != eos):
            ids.append(eos)
        ids = ids[:max_length]
        if len(ids) >= 2:
            out.append(ids)
    return out


def hold_out_documents(docs: list[list[int]], n: int) -> tuple[list[list[int]], list[list[int]]]:
    """(train, held-out): the last ``n`` documents, or a tenth of them when fewer than ``10 n``,
    are kept out of the ptx term so that ``eval/ptx_loss`` measures held-out text. A corpus of
    under 10 documents is too small to split: it is trained on and measured whole."""
    k = min(n, len(docs) // 10)
    if k < 1:
        return docs, docs
    return docs[:-k], docs[-k:]


def check_fsdp_batches(cfg: PPOConfig, world: int) -> None:
    """Under --fsdp every process samples and trains on as many episodes (equal forward passes)."""
    for name in ("rollout_batch_size", "minibatch_size"):
        if getattr(cfg, name) % world:
            raise ConfigError(f"--fsdp: {name} ({getattr(cfg, name)}) must be a multiple of the number of "
                              f"processes ({world}): every process runs as many forward passes")


def train_ppo(cfg: PPOConfig, reward_fn: RewardFn | None = None) -> dict[str, Any]:
    """Run PPO-ptx. ``reward_fn(prompts, responses) -> scores`` replaces the RM (scripted rewards)."""
    rank, world, device = init_distributed()
    if cfg.fsdp:
        check_fsdp_batches(cfg, world)
    check_engine(cfg.engine)  # --engine vllm without vllm or a GPU: say so before anything is loaded
    set_seed(cfg.seed)
    out = Path(cfg.out)
    prompts, report = read_file(cfg.prompts, parse_prompt, cfg.skip_bad_rows)
    train_p, valid_p = split_train_valid(prompts, cfg.valid_fraction, cfg.seed)
    valid_p = valid_p[: cfg.eval_prompts]
    pretrain: list[str] = []
    pre_report = None
    if cfg.pretrain_data:  # docs/formats.md 'pretraining text': one document per row / blank-line block
        pretrain, pre_report = read_pretrain(cfg.pretrain_data, cfg.skip_bad_rows)
    if is_main():
        write_config(cfg, out)
    dtype = resolve_dtype(cfg.dtype, device)
    tok = load_tokenizer(cfg.policy)
    pre_ids = pretrain_sequences(tok, pretrain, cfg.ptx_max_length)
    del pretrain
    if cfg.pretrain_data and not pre_ids:
        raise DataError(f"{cfg.pretrain_data}: no pretraining document of 2 tokens or more")
    pre_ids, eval_pre = hold_out_documents(pre_ids, max(cfg.ptx_batch_size, 16))
    score_fn, rm = _scorer(cfg, reward_fn, device)
    ckpt_dir = out / "checkpoints"
    resume_from = latest_checkpoint(ckpt_dir) if cfg.resume else None
    check_resume(resume_from, cfg.fsdp)
    saved = resume_from if resume_from and not cfg.fsdp else None  # --fsdp: sharded weights, loaded after sharding
    policy = place(load_causal_lm(str(saved / "policy") if saved else cfg.policy).train(), device, cfg.fsdp)
    ref = load_causal_lm(cfg.policy).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    ref = place(ref, device, cfg.fsdp)
    value = place(load_scalar_model(str(saved / "value") if saved else _value_source(cfg, tok, rm)).train(),
                  device, cfg.fsdp)
    d_policy = DDP(policy) if world > 1 and not cfg.fsdp else policy
    d_value = DDP(value) if world > 1 and not cfg.fsdp else value
    optim = torch.optim.AdamW([{"params": list(policy.parameters()), "lr": cfg.lr},
                               {"params": list(value.parameters()), "lr": cfg.value_lr}], fused=device.type == "cuda")
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: min(1.0, (s + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0)
    ema = {k: v.detach().clone().float() for k, v in policy.state_dict().items()} if cfg.ema_decay > 0 else None
    # under --fsdp the policy, value, optimizer and EMA (sharded like the policy) go to sharded/
    sharded = ShardedState(nn.ModuleDict({"policy": policy, "value": value}), optim, ema) if cfg.fsdp else None
    step = 0
    if resume_from:
        step = load_checkpoint(resume_from, optim, sched, sharded)["step"]
        if ema is not None and not cfg.fsdp:
            ema.update({k[4:]: v.to(device) for k, v in load_extra(resume_from).items() if k.startswith("ema.")})
    metrics = Metrics(out, resume=resume_from is not None)
    if resume_from:
        metrics.truncate_after(step)
    ac = lambda: autocast(device, dtype)  # noqa: E731
    # who samples the rollouts (trainers/engines.py); vLLM gets the policy's weights before each rollout
    engine = make_engine(cfg.engine, model=policy, model_path=cfg.policy, tokenizer=tok, device=device, dtype=dtype,
                         batch_size=cfg.generation_batch_size, seed=cfg.seed + rank, autocast_ctx=ac,
                         max_model_len=cfg.max_prompt_length + cfg.max_new_tokens,
                         gpu_memory_utilization=cfg.vllm_gpu_memory_utilization)
    n_mb = cfg.rollout_batch_size // cfg.minibatch_size
    end = min(cfg.steps, cfg.max_steps) if cfg.max_steps else cfg.steps

    def evaluate(at: int) -> None:
        vals: dict[str, float] = {}
        if valid_p:
            engine.load_weights(policy)
            mine = shard(valid_p, rank, world)
            n_mine = len(mine)
            if cfg.fsdp:  # as many prompts on every process (equal passes): copies of the first, weighted 0
                mine = mine + valid_p[:1] * (-(-len(valid_p) // world) - n_mine)
            if mine:
                r, _ = make_rollout(policy, ref, value, tok, [p.messages for p in mine], [p.text for p in mine],
                                    score_fn, cfg, device, ac, engine)
                w = (torch.arange(len(mine), device=device) < n_mine).double()
                s = (r.scores.double() * w).sum()
                kl = (((r.logprobs - r.ref_logprobs) * r.rmask).sum(-1).double() * w).sum()
            else:
                s = kl = torch.zeros((), dtype=torch.float64, device=device)
            tot = all_reduce_sum(torch.stack([s, kl, torch.tensor(float(n_mine), dtype=torch.float64, device=device)]))
            vals.update({"eval/reward": float(tot[0] / tot[2]), "eval/kl": float(tot[1] / tot[2])})
        if eval_pre:
            vals["eval/ptx_loss"] = pretrain_loss(policy, eval_pre, tok.pad_token_id, device, dtype)
        if vals:
            metrics.log(at, vals)

    if step == 0:
        evaluate(0)
    t_start, episodes = time.time(), 0
    t_gen_total = t_train_total = 0.0
    metrics.total_steps = end
    bar = progress(end, "ppo", initial=step)
    while step < end:
        # --- rollout: this iteration's prompts, in a seeded order that a resumed run repeats
        per_epoch = max(1, len(train_p) // cfg.rollout_batch_size)
        epoch, pos = divmod(step, per_epoch)
        order = torch.randperm(len(train_p), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch)).tolist()
        idx = [order[(pos * cfg.rollout_batch_size + j) % len(order)] for j in range(cfg.rollout_batch_size)]
        batch_p = shard([train_p[i] for i in idx], rank, world)
        t0 = time.time()
        engine.load_weights(policy)  # the weight push counts as generation time
        r, _ = make_rollout(policy, ref, value, tok, [p.messages for p in batch_p], [p.text for p in batch_p],
                            score_fn, cfg, device, ac, engine)
        r = add_advantages(r, cfg.kl_coef, cfg.gamma, cfg.lam)
        t_gen = time.time() - t0
        # --- update
        t1 = time.time()
        acc: dict[str, list[float]] = {k: [] for k in ("loss/policy", "loss/value", "loss/ptx", "clipfrac/policy",
                                                       "clipfrac/value", "entropy", "approx_kl")}
        ptx_gen = torch.Generator().manual_seed(cfg.seed * 7919 + step)
        for ep in range(cfg.ppo_epochs):
            perm = torch.randperm(len(r), generator=torch.Generator().manual_seed(cfg.seed * 31 + step * 97 + ep))
            mb_size = max(1, len(r) // n_mb)
            for mb_i in range(n_mb):
                mb = r.select(perm[mb_i * mb_size:(mb_i + 1) * mb_size].to(device))
                with ac():
                    logp, ent = policy_forward(d_policy, mb.ids, mb.mask, mb.prompt_width, cfg.temperature, with_entropy=True)
                    vals = value_forward(d_value, mb.ids, mb.mask, mb.prompt_width).float()
                pg, pg_clip = clipped_policy_loss(logp, mb.logprobs, mb.advantages, mb.rmask, cfg.clip_range)
                vf, vf_clip = clipped_value_loss(vals, mb.values, mb.returns, mb.rmask, cfg.value_clip)
                loss = pg + cfg.vf_coef * vf
                px = torch.zeros((), device=device)
                if cfg.ptx_coef > 0 and pre_ids:
                    pick = torch.randint(len(pre_ids), (cfg.ptx_batch_size,), generator=ptx_gen).tolist()
                    px = ptx_loss(d_policy, shard([pre_ids[i] for i in pick], rank, world), tok.pad_token_id, device, dtype)
                    loss = loss + cfg.ptx_coef * px
                loss.backward()
                clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
                torch.nn.utils.clip_grad_norm_(policy.parameters(), clip)
                torch.nn.utils.clip_grad_norm_(value.parameters(), clip)
                optim.step()
                sched.step()
                optim.zero_grad(set_to_none=True)
                if ema is not None:
                    with torch.no_grad():
                        for k, v in policy.state_dict().items():
                            if v.dtype.is_floating_point:
                                ema[k].mul_(cfg.ema_decay).add_(v.float(), alpha=1 - cfg.ema_decay)
                for k, v in (("loss/policy", pg), ("loss/value", vf), ("loss/ptx", px), ("clipfrac/policy", pg_clip),
                             ("clipfrac/value", vf_clip), ("entropy", masked_mean(ent.detach(), mb.rmask)),
                             ("approx_kl", masked_mean(mb.logprobs - logp.detach(), mb.rmask))):
                    acc[k].append(float(v.detach()) if torch.is_tensor(v) else float(v))
        t_train = time.time() - t1
        step += 1
        episodes += cfg.rollout_batch_size
        t_gen_total += t_gen
        t_train_total += t_train
        stats = rollout_stats(r)
        summed = all_reduce_sum(torch.tensor([stats[k] for k in sorted(stats)], dtype=torch.float64, device=device)) / world
        logged = {k: float(v) for k, v in zip(sorted(stats), summed)}
        logged.update({k: sum(v) / len(v) for k, v in acc.items() if v})
        logged.update({"time/generation_s": t_gen, "time/training_s": t_train,
                       "time/generation_share": t_gen_total / max(1e-9, t_gen_total + t_train_total),
                       "episodes_per_s": episodes / max(1e-9, time.time() - t_start)})
        metrics.log(step, logged)
        bar.update(1)
        bar.set_postfix(reward=f"{logged['reward/score']:.3f}", kl=f"{logged['kl']:.3f}")
        if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps:
            evaluate(step)
        if (cfg.save_every and step % cfg.save_every == 0) or step == end:
            extra = {f"ema.{k}": v for k, v in ema.items()} if ema is not None and not cfg.fsdp else None
            save_checkpoint(ckpt_dir, {} if sharded else {"policy": policy, "value": value}, optim, sched, step,
                            {"config": cfg.__dict__}, tokenizer=tok, extra_tensors=extra,
                            keep_last=cfg.keep_checkpoints, sharded=sharded)
    bar.close()
    result: dict[str, Any] = {"steps": step, "finished": step >= cfg.steps, "input": report.summary(),
                              "train_prompts": len(train_p), "eval_prompts": len(valid_p)}
    if pre_report is not None:
        result["pretrain_input"] = pre_report.summary()
        result["pretrain_documents"] = len(pre_ids)
        result["pretrain_heldout_documents"] = len(eval_pre) if eval_pre is not pre_ids else 0
    if cfg.fsdp and step >= cfg.steps:  # gathered on rank 0 (every process takes part)
        save_full_model(policy, tok, out / "model", ema)
        result.update({"model": str(out / "model"), **({"ema": cfg.ema_decay} if ema is not None else {})})
    elif is_main() and step >= cfg.steps:
        final = out / "model"
        shutil.rmtree(final, ignore_errors=True)
        to_save = policy
        if ema is not None:
            to_save = copy.deepcopy(policy)
            to_save.load_state_dict({k: v.to(to_save.state_dict()[k].dtype) for k, v in ema.items()})
            result["ema"] = cfg.ema_decay
        to_save.save_pretrained(final, safe_serialization=True)
        tok.save_pretrained(final)
        result["model"] = str(final)
    if is_main():
        (out / "result.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result

