"""PPO-ptx on a tiny policy with a fixed scripted reward: it learns, KL stays bounded, ptx helps."""

import pytest
import torch
from safetensors.torch import load_file

from trainers.common import metric_series, read_metrics
from trainers.errors import ConfigError, DataError
from trainers.models import load_tokenizer
from trainers.ppo import PPOConfig, hold_out_documents, pretrain_sequences, train_ppo

from conftest import prompt_rows, sft_rows, write_jsonl


def vowel_share(prompts, responses):
    """The scripted reward: share of vowels among the response's characters."""
    return [sum(ch in "aeiou" for ch in r) / max(1, len(r)) for r in responses]


@pytest.fixture
def ppo_data(tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(48) + prompt_rows(16, seed=9, split="valid"))
    pretrain = write_jsonl(tmp_path / "pretrain.jsonl", sft_rows(64, seed=2))
    return prompts, pretrain


def _cfg(tiny_dir, tmp_path, ppo_data, name, **kw):
    base = dict(policy=str(tiny_dir), prompts=str(ppo_data[0]), pretrain_data=str(ppo_data[1]),
                out=str(tmp_path / name), steps=15, rollout_batch_size=16, minibatch_size=8, lr=3e-3,
                value_lr=3e-3, ptx_coef=0.0, max_new_tokens=8, eval_every=5, seed=0)
    base.update(kw)
    return PPOConfig(**base)


def _series(cfg, name):
    return [v for _, v in metric_series(read_metrics(cfg.out), name)]


def test_heldout_reward_rises_while_kl_stays_bounded(tiny_dir, tmp_path, ppo_data):
    low = _cfg(tiny_dir, tmp_path, ppo_data, "low", kl_coef=0.02)
    high = _cfg(tiny_dir, tmp_path, ppo_data, "high", kl_coef=0.3)
    train_ppo(low, reward_fn=vowel_share)
    train_ppo(high, reward_fn=vowel_share)
    reward = _series(low, "eval/reward")
    assert len(reward) == 4 and reward[-1] > reward[0] + 0.15
    kl_low, kl_high = _series(low, "eval/kl"), _series(high, "eval/kl")
    assert kl_low[0] == pytest.approx(0.0, abs=1e-5)  # policy == reference at the start
    assert 0 < kl_low[-1] < 8 * 1.5  # under 1.5 nats per response token
    assert kl_high[-1] < kl_low[-1]  # the penalty holds the policy closer to the reference
    for name in ("loss/value", "loss/policy", "clipfrac/policy", "entropy", "response/length",
                 "time/generation_share", "kl", "reward/score"):
        assert len(_series(low, name)) == 15, name


def test_the_default_ptx_weight_limits_the_pretraining_loss_and_keeps_the_reward(tiny_dir, tmp_path, ppo_data):
    default_gamma = PPOConfig.__dataclass_fields__["ptx_coef"].default
    plain = _cfg(tiny_dir, tmp_path, ppo_data, "plain", ptx_coef=0.0)
    ptx = _cfg(tiny_dir, tmp_path, ppo_data, "ptx", ptx_coef=default_gamma)
    train_ppo(plain, reward_fn=vowel_share)
    train_ppo(ptx, reward_fn=vowel_share)
    a, b = _series(plain, "eval/ptx_loss"), _series(ptx, "eval/ptx_loss")
    assert a[0] == pytest.approx(b[0])  # same seed, same start
    assert b[-1] - b[0] < a[-1] - a[0]  # less alignment tax than plain PPO
    assert _series(plain, "loss/ptx")[-1] == 0.0 and _series(ptx, "loss/ptx")[-1] > 0.0
    ra, rb = _series(plain, "eval/reward"), _series(ptx, "eval/reward")
    assert rb[-1] - rb[0] > 0.5 * (ra[-1] - ra[0]) > 0  # and most of its reward gain (27.8 kept almost none)


def test_resume_reproduces_the_next_steps(tiny_dir, tmp_path, ppo_data):
    full = _cfg(tiny_dir, tmp_path, ppo_data, "full", steps=4, ptx_coef=0.5, ema_decay=0.9, eval_every=0)
    train_ppo(full, reward_fn=vowel_share)
    part = _cfg(tiny_dir, tmp_path, ppo_data, "part", steps=4, ptx_coef=0.5, ema_decay=0.9, eval_every=0, max_steps=2)
    assert train_ppo(part, reward_fn=vowel_share)["finished"] is False
    rest = _cfg(tiny_dir, tmp_path, ppo_data, "part", steps=4, ptx_coef=0.5, ema_decay=0.9, eval_every=0)
    assert train_ppo(rest, reward_fn=vowel_share)["finished"] is True
    for name in ("reward/score", "kl", "loss/policy", "loss/value", "loss/ptx", "entropy"):
        a = metric_series(read_metrics(full.out), name)
        b = metric_series(read_metrics(rest.out), name)
        assert [s for s, _ in b] == [1, 2, 3, 4], name
        assert [v for _, v in b] == pytest.approx([v for _, v in a], rel=1e-4, abs=1e-6), name
    wa = load_file(tmp_path / "full" / "model" / "model.safetensors")
    wb = load_file(tmp_path / "part" / "model" / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_ema_weights_are_the_final_model(tiny_dir, tmp_path, ppo_data):
    cfg = _cfg(tiny_dir, tmp_path, ppo_data, "ema", steps=2, ema_decay=0.5, eval_every=0)
    result = train_ppo(cfg, reward_fn=vowel_share)
    assert result["ema"] == 0.5
    final = load_file(tmp_path / "ema" / "model" / "model.safetensors")
    raw = load_file(tmp_path / "ema" / "checkpoints" / "step-00000002" / "policy" / "model.safetensors")
    start = load_file(tiny_dir / "model.safetensors")
    k = "model.layers.0.mlp.up_proj.weight"
    assert not torch.allclose(final[k], raw[k]) and not torch.allclose(final[k], start[k])


def test_missing_eos_is_penalised_explicitly(tiny_dir, tmp_path, ppo_data):
    cfg = _cfg(tiny_dir, tmp_path, ppo_data, "eos", steps=2, max_new_tokens=3, missing_eos_penalty=1.0, eval_every=0)
    train_ppo(cfg, reward_fn=lambda p, r: [0.0] * len(r))
    score, eos = _series(cfg, "reward/score"), _series(cfg, "response/eos_fraction")
    assert eos[0] < 1.0
    assert score == pytest.approx([-(1 - e) for e in eos])


def test_ptx_needs_pretraining_data(tiny_dir, tmp_path, ppo_data):
    with pytest.raises(ConfigError, match="pretrain-data"):
        _cfg(tiny_dir, tmp_path, ppo_data, "x", pretrain_data=None, ptx_coef=27.8).validate()


def test_ptx_reads_a_plain_text_corpus_like_text_rows(tiny_dir, tmp_path, ppo_data):
    docs = [f"{r['prompt']}\n{r['completion']}" for r in sft_rows(24, seed=3)]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    rows = write_jsonl(tmp_path / "corpus.jsonl", [{"text": d} for d in docs])
    a = _cfg(tiny_dir, tmp_path, (ppo_data[0], corpus), "txt", steps=2, ptx_coef=1.0, eval_every=0)
    b = _cfg(tiny_dir, tmp_path, (ppo_data[0], rows), "rows", steps=2, ptx_coef=1.0, eval_every=0)
    result = train_ppo(a, reward_fn=vowel_share)
    assert result["pretrain_documents"] + result["pretrain_heldout_documents"] == 24
    assert result["pretrain_heldout_documents"] == 2 and "corpus.txt: 24 rows read" in result["pretrain_input"]
    assert len(_series(a, "eval/ptx_loss")) == 2 and all(v > 0 for v in _series(a, "loss/ptx"))
    train_ppo(b, reward_fn=vowel_share)
    for name in ("loss/ptx", "eval/ptx_loss"):
        assert _series(a, name) == pytest.approx(_series(b, name), rel=1e-5), name


def test_pretraining_corpus_without_a_usable_document_is_refused(tiny_dir, tmp_path, ppo_data):
    (tmp_path / "tiny.txt").write_text("a\n\nb\n", encoding="utf-8")
    # cut to one token each, no document has a next-token target
    with pytest.raises(DataError, match="tiny.txt: no pretraining document of 2 tokens or more"):
        train_ppo(_cfg(tiny_dir, tmp_path, (ppo_data[0], tmp_path / "tiny.txt"), "none", steps=1, ptx_coef=1.0,
                       ptx_max_length=1), reward_fn=vowel_share)


def test_pretraining_documents_end_with_eos_unless_cut(tiny_dir):
    tok = load_tokenizer(str(tiny_dir))
    short, long = "the cat sleeps.", " ".join(["the dog runs in the park."] * 40)
    a, b = pretrain_sequences(tok, [short, long, ""], 32)  # "" has no next-token target: left out
    assert a[-1] == tok.eos_token_id and a[:-1] == tok(short)["input_ids"]
    assert len(b) == 32 and b == tok(long)["input_ids"][:32]  # cut: it did not end there


def test_ptx_eval_loss_is_measured_on_documents_ppo_does_not_train_on():
    docs = [[i, i + 1] for i in range(100)]
    train, heldout = hold_out_documents(docs, 16)
    assert heldout == docs[-10:] and train == docs[:-10]  # a tenth when under 10 x 16 documents
    train, heldout = hold_out_documents([[i, i] for i in range(400)], 16)
    assert len(heldout) == 16 and not {tuple(d) for d in heldout} & {tuple(d) for d in train}
    tiny = [[1, 2]] * 5
    assert hold_out_documents(tiny, 16) == (tiny, tiny)  # too small to split


def test_ppo_reports_the_heldout_pretraining_documents(tiny_dir, tmp_path, ppo_data):
    result = train_ppo(_cfg(tiny_dir, tmp_path, ppo_data, "held", steps=1, ptx_coef=1.0, eval_every=0),
                       reward_fn=vowel_share)
    assert result["pretrain_documents"] == 58 and result["pretrain_heldout_documents"] == 6  # 64 rows
