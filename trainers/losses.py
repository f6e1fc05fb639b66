"""Small pure functions for the losses and advantages; each one is tested on its own."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------- masks and indices


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real (mask == 1) token of each row, for left or right padding.

    Computed from the mask alone, so it is right when pad == eos (an EOS that ends the text is a
    real token, the same id used as padding is not).
    """
    t = attention_mask.shape[-1]
    flipped = attention_mask.flip(-1).to(torch.long)
    return (t - 1 - flipped.argmax(-1)).to(torch.long)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so a left-padded row sees the same positions."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def response_mask(response_ids: torch.Tensor, eos_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask over the response up to and including its first EOS, has_eos per row).

    A row without EOS (cut by max_new_tokens) keeps every token: the caller decides what a
    missing EOS costs (see PPOConfig.missing_eos_penalty).
    """
    if eos_id is None:
        return torch.ones_like(response_ids, dtype=torch.bool), torch.zeros(response_ids.shape[0], dtype=torch.bool)
    is_eos = response_ids == eos_id
    has_eos = is_eos.any(-1)
    # number of EOS strictly before each position; a token is kept while none came before it
    before = torch.cumsum(is_eos.long(), -1) - is_eos.long()
    return before == 0, has_eos


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked entries; zeros where the mask is off."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


# ---------------------------------------------------------------- reward model


def kwise_loss(
    scores: torch.Tensor, winners: torch.Tensor, losers: torch.Tensor, pair_group: torch.Tensor, num_groups: int
) -> torch.Tensor:
    """Per-prompt ranking loss: -1/P_g * sum_{(w,l) in g} log sigmoid(r_w - r_l).

    ``scores`` holds every completion of every group (one forward pass); ``winners``/``losers``
    index into it and ``pair_group`` says which group each pair belongs to. P_g is the group's
    number of pairs, C(K,2) for a ranking without ties (ties give no pair). Returns [num_groups].
    """
    pair_loss = -F.logsigmoid(scores[winners] - scores[losers])
    total = torch.zeros(num_groups, dtype=scores.dtype, device=scores.device).index_add(0, pair_group, pair_loss)
    count = torch.zeros(num_groups, dtype=scores.dtype, device=scores.device).index_add(
        0, pair_group, torch.ones_like(pair_loss))
    return total / count.clamp(min=1)


def pairwise_correct(scores: torch.Tensor, winners: torch.Tensor, losers: torch.Tensor) -> torch.Tensor:
    return (scores[winners] > scores[losers]).float()


# ---------------------------------------------------------------- PPO


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-token reward term -beta * (log pi_RL - log pi_ref)."""
    return -beta * (logprobs - ref_logprobs)


def token_rewards(
    score: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """KL penalty on every response token, plus the sequence score on its last real token."""
    rewards = kl_penalty(logprobs, ref_logprobs, beta) * mask
    last = last_token_index(mask.long())
    rewards = rewards.clone()
    rewards[torch.arange(rewards.shape[0], device=rewards.device), last] += score.to(rewards.dtype)
    return rewards


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over right-padded responses: (advantages, returns).

    delta_t = r_t + gamma * V_{t+1} - V_t with V = 0 after the last real token.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    adv = torch.zeros_like(values)
    last = torch.zeros_like(values[:, 0])
    t_len = values.shape[1]
    for t in reversed(range(t_len)):
        next_v = values[:, t + 1] if t + 1 < t_len else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        adv[:, t] = last
    return adv, adv + values


def clipped_policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO surrogate (to minimise) and the fraction of tokens where the clip was active."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    frac = masked_mean((clipped > unclipped).float(), mask)
    return loss, frac


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """0.5 * max((V - R)^2, (clip(V) - R)^2) and the clipped fraction."""
    v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    a = (values - returns) ** 2
    b = (v_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(a, b), mask)
    frac = masked_mean((b > a).float(), mask)
    return loss, frac


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(label) under softmax(logits / temperature)."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)
