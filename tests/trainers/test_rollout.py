"""PPO batches: prompt/response layout, log-probs, rewards and masks on the right tokens."""

import torch

from trainers.generate import Sample
from trainers.losses import logprobs_from_logits
from trainers.models import load_causal_lm, load_tokenizer
from trainers.rollout import Rollout, add_advantages, build_batch, policy_forward


def _samples(tok):
    eos = tok.eos_token_id
    return [
        Sample([7, 8, 9], [20, 21, eos], True),          # finished with EOS
        Sample([7], [22, 23, 24, 25, 26], False),         # cut by max_new_tokens: no EOS
        Sample([7, 8, 9, 10, 11], [eos], True),           # empty answer: just EOS
    ]


def test_layout_and_response_mask(tiny_pad_eos_dir):
    tok = load_tokenizer(str(tiny_pad_eos_dir))
    ids, mask, width, rmask = build_batch(_samples(tok), tok.pad_token_id, torch.device("cpu"))
    assert width == 5
    assert rmask.int().tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert mask[:, :width].sum(1).tolist() == [3, 1, 5]  # left-padded prompts
    # with pad == eos the finishing EOS stays a real token; the padding after it does not
    assert ids[0, width + 2] == tok.eos_token_id and mask[0, width + 2] == 1 and mask[0, width + 3] == 0


def test_response_logprobs_match_unpadded_forward(tiny_pad_eos_dir):
    tok = load_tokenizer(str(tiny_pad_eos_dir))
    model = load_causal_lm(str(tiny_pad_eos_dir)).eval()
    samples = _samples(tok)
    ids, mask, width, rmask = build_batch(samples, tok.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        logp, _ = policy_forward(model, ids, mask, width, temperature=0.7)
        for i, s in enumerate(samples):
            seq = torch.tensor([s.prompt_ids + s.response_ids])
            logits = model(seq).logits[:, len(s.prompt_ids) - 1:-1]
            want = logprobs_from_logits(logits, seq[:, len(s.prompt_ids):], 0.7)[0]
            assert torch.allclose(logp[i, : len(s.response_ids)], want, atol=1e-5)


def test_score_lands_on_the_last_response_token_with_or_without_eos(tiny_pad_eos_dir):
    tok = load_tokenizer(str(tiny_pad_eos_dir))
    ids, mask, width, rmask = build_batch(_samples(tok), tok.pad_token_id, torch.device("cpu"))
    zeros = torch.zeros(rmask.shape)
    r = Rollout(ids, mask, width, rmask, zeros, zeros, zeros, torch.tensor([1.0, 2.0, 3.0]),
                torch.tensor([True, False, True]))
    r = add_advantages(r, kl_coef=0.02, gamma=1.0, lam=1.0)
    assert r.rewards.tolist() == [[0, 0, 1.0, 0, 0], [0, 0, 0, 0, 2.0], [3.0, 0, 0, 0, 0]]
    assert (r.advantages[~rmask] == 0).all() and (r.returns[~rmask] == 0).all()
    # with zero values and gamma = lambda = 1, every real token's return is the sequence score
    assert r.returns[1].tolist() == [2.0] * 5 and r.returns[0, :3].tolist() == [1.0] * 3
