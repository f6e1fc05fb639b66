"""The pure loss/advantage functions, each against a hand computation."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainers.losses import (
    clipped_policy_loss, clipped_value_loss, entropy_from_logits, gae, kl_penalty, kwise_loss, last_token_index,
    logprobs_from_logits, position_ids_from_mask, response_mask, token_rewards, whiten,
)


def ls(x: float) -> float:
    return math.log(1 / (1 + math.exp(-x)))


def test_kwise_loss_matches_hand_computation():
    scores = torch.tensor([2.0, 1.0, 0.0, 0.5, -0.5])
    # group 0: K=3 ranked 0 > 1 > 2 (3 pairs); group 1: K=2, 4 > 3 (1 pair)
    w = torch.tensor([0, 0, 1, 4])
    lo = torch.tensor([1, 2, 2, 3])
    g = torch.tensor([0, 0, 0, 1])
    got = kwise_loss(scores, w, lo, g, 2)
    want0 = -(ls(1.0) + ls(2.0) + ls(1.0)) / 3  # 1/C(3,2)
    want1 = -ls(-1.0)
    assert got.tolist() == pytest.approx([want0, want1], rel=1e-6)


def test_kwise_loss_gradient_is_normalised_per_group():
    scores = torch.zeros(4, requires_grad=True)  # one group of K=4 in a total order: 6 pairs
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    w = torch.tensor([p[0] for p in pairs])
    lo = torch.tensor([p[1] for p in pairs])
    kwise_loss(scores, w, lo, torch.zeros(6, dtype=torch.long), 1).sum().backward()
    # d/ds_i of -1/6 sum log sigmoid(s_w - s_l) at 0 = -(wins_i - losses_i) * 0.5 / 6
    wins = torch.tensor([3.0, 2.0, 1.0, 0.0])
    losses = torch.tensor([0.0, 1.0, 2.0, 3.0])
    assert torch.allclose(scores.grad, -(wins - losses) * 0.5 / 6)


def test_last_token_index_left_and_right_padding():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 0, 0, 0]])
    assert last_token_index(mask).tolist() == [2, 4, 4, 1]


def test_position_ids_count_real_tokens_only():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 2, 2]]


def test_response_mask_stops_after_first_eos_and_flags_missing_eos():
    eos = 2
    ids = torch.tensor([[5, 7, 2, 2, 2], [5, 6, 7, 8, 9], [2, 2, 2, 2, 2]])
    mask, has_eos = response_mask(ids, eos)
    assert mask.int().tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert has_eos.tolist() == [True, False, True]


def test_kl_penalty_and_token_rewards_put_score_on_last_response_token():
    logp = torch.tensor([[-1.0, -2.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -1.0, 0.0]])
    assert kl_penalty(logp, ref, 0.1)[0].tolist() == pytest.approx([-0.05, 0.1, 0.0, 0.0])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    r = token_rewards(torch.tensor([3.0]), logp, ref, mask, 0.1)
    assert r[0].tolist() == pytest.approx([-0.05, 0.1, 3.0, 0.0])


def test_gae_matches_hand_computation():
    rewards = torch.tensor([[1.0, 2.0, 9.0]])
    values = torch.tensor([[0.5, 0.5, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # third slot is padding: its reward and value are ignored
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # t=1: delta = 2 + 0 - 0.5 = 1.5; t=0: delta = 1 + 0.5 - 0.5 = 1, adv = 1 + 0.5 * 1.5
    assert adv[0].tolist() == pytest.approx([1.75, 1.5, 0.0])
    assert ret[0].tolist() == pytest.approx([2.25, 2.0, 0.0])


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.floats(0.5, 1.0), st.floats(0.0, 1.0))
def test_gae_equals_discounted_sum_of_deltas(n, gamma, lam):
    g = torch.Generator().manual_seed(n)
    r, v = torch.randn(1, n, generator=g, dtype=torch.float64), torch.randn(1, n, generator=g, dtype=torch.float64)
    adv, _ = gae(r, v, torch.ones(1, n, dtype=torch.float64), gamma, lam)
    vn = torch.cat([v[0, 1:], torch.zeros(1, dtype=torch.float64)])
    delta = r[0] + gamma * vn - v[0]
    want = [sum((gamma * lam) ** k * delta[t + k] for k in range(n - t)) for t in range(n)]
    assert adv[0].tolist() == pytest.approx([float(x) for x in want], abs=1e-9)


def test_whiten_normalises_masked_entries_only():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = whiten(x, m)
    assert w[0, 3] == 0
    assert float(w[0, :3].mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(w[0, :3].pow(2).mean()) == pytest.approx(1.0, rel=1e-4)


def test_clipped_policy_loss_clips_only_in_the_advantage_direction():
    old = torch.zeros(1, 1)
    new = torch.log(torch.tensor([[1.5]]))
    m = torch.ones(1, 1)
    loss, frac = clipped_policy_loss(new, old, torch.tensor([[1.0]]), m, 0.2)
    assert float(loss) == pytest.approx(-1.2) and float(frac) == 1.0
    loss, frac = clipped_policy_loss(new, old, torch.tensor([[-1.0]]), m, 0.2)
    assert float(loss) == pytest.approx(1.5) and float(frac) == 0.0


def test_clipped_value_loss_takes_the_pessimistic_branch():
    old = torch.tensor([[0.0, 0.0]])
    new = torch.tensor([[1.0, 0.1]])
    ret = torch.tensor([[2.0, 0.0]])
    loss, frac = clipped_value_loss(new, old, ret, torch.ones(1, 2), 0.2)
    # token 0: unclipped (1-2)^2 = 1, clipped (0.2-2)^2 = 3.24 -> 3.24; token 1: 0.01 vs 0.01
    assert float(loss) == pytest.approx(0.5 * (3.24 + 0.01) / 2)
    assert float(frac) == 0.5


def test_logprobs_and_entropy_use_the_temperature():
    logits = torch.tensor([[[2.0, 0.0]]])
    t = 2.0
    p = torch.softmax(logits / t, -1)
    assert float(logprobs_from_logits(logits, torch.tensor([[0]]), t)) == pytest.approx(float(p[0, 0, 0].log()))
    assert float(entropy_from_logits(logits, t)) == pytest.approx(float(-(p * p.log()).sum()))
