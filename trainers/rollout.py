"""PPO experience: sample responses, score them, and turn them into advantages.

Layout of a rollout batch: prompts left-padded to width P, responses right-padded to width R,
``seq = [pad.. prompt | response ..pad]``. The logits at positions P-1 .. P+R-2 predict the
response tokens; values are read at the same positions (the state before each token).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from trainers.data import Messages
from trainers.engines import Sample, TransformersEngine
from trainers.generate import decode_response
from trainers.losses import (
    entropy_from_logits, gae, last_token_index, logprobs_from_logits, masked_mean, position_ids_from_mask,
    token_rewards, whiten,
)
from trainers.models import pad_batch

RewardFn = Callable[[list[str], list[str]], list[float]]


@dataclass
class Rollout:
    ids: torch.Tensor           # [B, P+R]
    mask: torch.Tensor          # [B, P+R] attention mask
    prompt_width: int           # P
    rmask: torch.Tensor         # [B, R] response tokens up to and including EOS
    logprobs: torch.Tensor      # [B, R] behaviour policy, at the sampling temperature
    ref_logprobs: torch.Tensor  # [B, R]
    values: torch.Tensor        # [B, R]
    scores: torch.Tensor        # [B] sequence score (RM or scripted), after the missing-EOS penalty
    has_eos: torch.Tensor       # [B]
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    rewards: torch.Tensor | None = None

    def select(self, idx: torch.Tensor) -> "Rollout":
        f = lambda x: x[idx] if torch.is_tensor(x) and x.dim() > 0 else x  # noqa: E731
        return Rollout(**{k: f(v) for k, v in self.__dict__.items()})

    def __len__(self) -> int:
        return self.ids.shape[0]


def build_batch(samples: list[Sample], pad_id: int, device: torch.device):
    """(ids, mask, P, response mask) in the left-prompt / right-response layout."""
    p_ids, p_mask = pad_batch([s.prompt_ids for s in samples], pad_id, "left", device)
    r_ids, r_mask = pad_batch([s.response_ids if s.response_ids else [pad_id] for s in samples], pad_id, "right", device)
    for i, s in enumerate(samples):
        if not s.response_ids:  # an empty response keeps one masked-out slot
            r_mask[i] = 0
    ids = torch.cat([p_ids, r_ids], 1)
    mask = torch.cat([p_mask, r_mask], 1)
    return ids, mask, p_ids.shape[1], r_mask.bool()


def policy_forward(model: Any, ids: torch.Tensor, mask: torch.Tensor, width: int, temperature: float,
                   with_entropy: bool = False):
    """Log-probabilities (and entropies) of the response tokens at the sampling temperature."""
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=False).logits
    logits = logits[:, width - 1:-1]
    labels = ids[:, width:]
    logp = logprobs_from_logits(logits, labels, temperature)
    ent = entropy_from_logits(logits, temperature) if with_entropy else None
    return logp, ent


def value_forward(value_model: Any, ids: torch.Tensor, mask: torch.Tensor, width: int) -> torch.Tensor:
    return value_model(ids, mask, per_token=True)[:, width - 1:-1]


@torch.no_grad()
def make_rollout(
    policy: Any, ref: Any, value_model: Any, tok: Any, prompts: list[Messages], prompt_texts: list[str],
    score_fn: Callable[[list[Messages], list[str], list[str]], torch.Tensor], cfg: Any, device: torch.device,
    autocast_ctx: Callable[[], Any], engine: Any = None,
) -> tuple[Rollout, list[str]]:
    """Sample with ``engine`` (default: transformers' generate on ``policy``; trainers/engines.py), then
    recompute every log-prob, reference log-prob and value with the training models, whatever sampled."""
    if engine is None:
        engine = TransformersEngine(policy, tok, device, cfg.generation_batch_size, autocast_ctx)
    samples: list[Sample] = engine.sample(prompts, cfg.max_new_tokens, cfg.temperature, cfg.max_prompt_length)
    texts = [decode_response(tok, x.response_ids) for x in samples]
    ids, mask, width, rmask = build_batch(samples, tok.pad_token_id, device)
    was = getattr(policy, "training", True)
    policy.eval()
    value_model.eval()
    with autocast_ctx():
        logp, _ = policy_forward(policy, ids, mask, width, cfg.temperature)
        ref_logp, _ = policy_forward(ref, ids, mask, width, cfg.temperature)
        values = value_forward(value_model, ids, mask, width).float()
    policy.train(was)
    value_model.train(was)
    has_eos = torch.tensor([x.has_eos for x in samples], device=device)
    scores = score_fn(prompts, prompt_texts, texts).to(device).float()
    if cfg.missing_eos_penalty is not None:
        scores = torch.where(has_eos, scores, scores - cfg.missing_eos_penalty)
    return Rollout(ids, mask, width, rmask, logp.float(), ref_logp.float(), values * rmask, scores, has_eos), texts


def add_advantages(r: Rollout, kl_coef: float, gamma: float, lam: float) -> Rollout:
    """Per-token rewards (KL penalty + score on the last token), GAE, whitened advantages."""
    m = r.rmask.float()
    r.rewards = token_rewards(r.scores, r.logprobs, r.ref_logprobs, m, kl_coef)
    adv, ret = gae(r.rewards, r.values, m, gamma, lam)
    r.returns = ret
    r.advantages = whiten(adv, m)
    return r


def rollout_stats(r: Rollout) -> dict[str, float]:
    m = r.rmask.float()
    kl = ((r.logprobs - r.ref_logprobs) * m).sum(-1)
    return {
        "reward/score": float(r.scores.mean()),
        "reward/total": float(r.rewards.sum(-1).mean()) if r.rewards is not None else float("nan"),
        "kl": float(kl.mean()),
        "response/length": float(m.sum(-1).mean()),
        "response/eos_fraction": float(r.has_eos.float().mean()),
        "value/mean": float(masked_mean(r.values, m)),
        "last_token/index_mean": float(last_token_index(r.rmask.long()).float().mean()),
    }
