"""Reward model: K-wise loss by hand and vs pairwise expansion, hidden-rule accuracy, mean-0 bias."""

import json
import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from trainers.common import metric_series, read_metrics
from trainers.data import group_preferences, parse_preference
from trainers.formatting import encode_pair
from trainers.losses import kwise_loss
from trainers.models import load_scalar_model, load_tokenizer, pad_batch
from trainers.reward import (
    RMConfig, collate_groups, encode_groups, length_sorted_micro_batches, score_texts, train_rm,
)

from conftest import hidden_rule_score, pairwise_from_rankings, ranking_rows, sft_rows, write_jsonl


def _groups(tok, n=3, k=4, seed=0):
    return encode_groups(tok, group_preferences([parse_preference(r) for r in ranking_rows(n, k, seed)]), 128)


def test_loss_matches_hand_computation_on_a_tiny_example(tiny_dir):
    tok = load_tokenizer(str(tiny_dir))
    torch.manual_seed(0)
    rm = load_scalar_model(str(tiny_dir)).eval()
    groups = _groups(tok, n=2, k=3)
    ids, mask, w, lo, g = collate_groups(groups, tok.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        got = kwise_loss(rm(ids, mask), w, lo, g, 2)
        want = []
        for grp in groups:
            s = [float(rm(*pad_batch([q], tok.pad_token_id))) for q in grp.seqs]
            terms = [math.log(1 / (1 + math.exp(-(s[a] - s[b])))) for a, b in grp.pairs]
            assert len(terms) == 3  # C(3,2)
            want.append(-sum(terms) / 3)
    assert got.tolist() == pytest.approx(want, rel=1e-4)


def test_kwise_grouping_equals_explicit_pairwise_expansion_in_loss_and_gradient(tiny_dir):
    tok = load_tokenizer(str(tiny_dir))
    groups = _groups(tok, n=3, k=5, seed=2)
    torch.manual_seed(0)
    a = load_scalar_model(str(tiny_dir)).eval()
    b = load_scalar_model(str(tiny_dir)).eval()
    b.load_state_dict(a.state_dict())
    ids, mask, w, lo, g = collate_groups(groups, tok.pad_token_id, torch.device("cpu"))
    grouped = kwise_loss(a(ids, mask), w, lo, g, len(groups)).mean()  # one forward for all K of each prompt
    grouped.backward()
    per_group = []
    for grp in groups:  # the pairwise expansion: each pair encoded and scored on its own
        terms = []
        for win, los in grp.pairs:
            s = b(*pad_batch([grp.seqs[win], grp.seqs[los]], tok.pad_token_id))
            terms.append(-torch.nn.functional.logsigmoid(s[0] - s[1]))
        per_group.append(torch.stack(terms).mean())  # 1/C(K,2)
    expanded = torch.stack(per_group).mean()
    expanded.backward()
    assert float(grouped.detach()) == pytest.approx(float(expanded.detach()), rel=1e-5)
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-6, rtol=1e-4), name


def test_micro_batches_are_length_sorted_without_losing_or_repeating_a_group(tiny_dir):
    tok = load_tokenizer(str(tiny_dir))
    groups = encode_groups(tok, group_preferences([parse_preference(r) for r in ranking_rows(24, 2, seed=4)]), 128)
    micro = length_sorted_micro_batches(groups, 5)
    assert [len(m) for m in micro] == [5, 5, 5, 5, 4]
    assert sorted(id(g) for m in micro for g in m) == sorted(id(g) for g in groups)

    def padded_tokens(passes):  # what the forward passes compute: every sequence padded to its pass's longest
        return sum(len(m) * 2 * max(len(s) for g in m for s in g.seqs) for m in passes)

    unsorted = [groups[i:i + 5] for i in range(0, len(groups), 5)]
    assert padded_tokens(micro) < padded_tokens(unsorted)


def test_length_sorted_passes_give_the_same_model_as_one_pass_per_step(tiny_dir, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", ranking_rows(24, k=3, seed=5))
    common = dict(model=str(tiny_dir), data=str(data), epochs=1, batch_size=8, lr=3e-3, valid_fraction=0.0, seed=0)
    one = train_rm(RMConfig(out=str(tmp_path / "one"), micro_batch_size=8, **common))
    sorted_passes = train_rm(RMConfig(out=str(tmp_path / "sorted"), micro_batch_size=2, **common))
    a = load_scalar_model(one["model"]).state_dict()
    b = load_scalar_model(sorted_passes["model"]).state_dict()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5, rtol=1e-4), name


def test_learns_a_hidden_ranking_rule_with_high_heldout_accuracy(tiny_dir, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", ranking_rows(160, k=4, seed=0))
    valid = write_jsonl(tmp_path / "valid.jsonl", ranking_rows(40, k=6, seed=1))
    cfg = RMConfig(model=str(tiny_dir), data=str(train), valid_data=str(valid), out=str(tmp_path / "rm"),
                   epochs=2, batch_size=8, lr=3e-3, seed=0)
    result = train_rm(cfg)
    assert result["valid/accuracy"] >= 0.9
    acc = metric_series(read_metrics(cfg.out), "valid/accuracy")
    assert [s for s, _ in acc] == [20, 40]
    # the saved model reloads with from_pretrained and ranks unseen completions by the rule
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm" / "model")
    assert hf.config.reward_bias == pytest.approx(result["bias"])
    rm = load_scalar_model(str(tmp_path / "rm" / "model")).eval()
    tok = load_tokenizer(str(tmp_path / "rm" / "model"))
    texts = ["good good good good red dog", "red dog sun tree good cat", "red dog sun tree cat bird"]
    s = score_texts(rm, tok, [[{"role": "user", "content": "Say something about the sun"}]] * 3, texts,
                    torch.device("cpu"))
    assert [hidden_rule_score(t) for t in texts] == [4, 1, 0] and s[0] > s[1] > s[2]


def test_pairwise_rows_train_exactly_like_native_rankings(tiny_dir, tmp_path):
    rows = ranking_rows(24, k=4, seed=5)
    native = write_jsonl(tmp_path / "native.jsonl", rows)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pairwise_from_rankings(rows))
    out = {}
    for name, path in (("native", native), ("pairs", pairs)):
        cfg = RMConfig(model=str(tiny_dir), data=str(path), out=str(tmp_path / name), batch_size=4, lr=1e-3,
                       valid_fraction=0.25, seed=0)
        res = train_rm(cfg)
        out[name] = ([v for _, v in metric_series(read_metrics(cfg.out), "train/loss")], res)
    assert out["native"][1]["train_pairs"] == out["pairs"][1]["train_pairs"] == 18 * 6
    assert out["native"][0] == pytest.approx(out["pairs"][0], rel=1e-4)


def test_demonstrations_score_mean_zero_after_training(tiny_dir, tmp_path):
    data = write_jsonl(tmp_path / "rank.jsonl", ranking_rows(16, k=4, seed=0))
    demos = write_jsonl(tmp_path / "demos.jsonl", sft_rows(10, seed=3))
    cfg = RMConfig(model=str(tiny_dir), data=str(data), demonstrations=str(demos), out=str(tmp_path / "rm"),
                   batch_size=4, lr=1e-3, seed=0)
    result = train_rm(cfg)
    assert "demonstrations" in result["normalised_on"] and result["normalised_count"] == 10
    rm = load_scalar_model(str(tmp_path / "rm" / "model")).eval()
    tok = load_tokenizer(str(tmp_path / "rm" / "model"))
    rows = sft_rows(10, seed=3)
    s = score_texts(rm, tok, [[{"role": "user", "content": r["prompt"]}] for r in rows],
                    [r["completion"] for r in rows], torch.device("cpu"))
    assert abs(float(s.mean())) < 1e-4
    assert float(s.std()) > 1e-3  # the shift is a bias, not a collapse


def test_without_demonstrations_the_chosen_responses_are_centred(tiny_dir, tmp_path):
    rows = ranking_rows(12, k=3, seed=4)
    data = write_jsonl(tmp_path / "rank.jsonl", rows)
    cfg = RMConfig(model=str(tiny_dir), data=str(data), out=str(tmp_path / "rm"), batch_size=4, valid_fraction=0.0)
    result = train_rm(cfg)
    assert "chosen" in result["normalised_on"] and result["normalised_count"] == 12
    saved = json.loads((tmp_path / "rm" / "result.json").read_text())
    assert saved["bias"] == pytest.approx(result["bias"])
    rm = load_scalar_model(str(tmp_path / "rm" / "model")).eval()
    tok = load_tokenizer(str(tmp_path / "rm" / "model"))
    best = [next(c["text"] for c in r["completions"] if c["id"] == r["ranked"][0][0]) for r in rows]
    s = score_texts(rm, tok, [[{"role": "user", "content": r["prompt"]}] for r in rows], best, torch.device("cpu"))
    assert abs(float(s.mean())) < 1e-4


def test_encoder_backbone_trains_as_a_reward_model(minilm_dir, tmp_path):
    data = write_jsonl(tmp_path / "rank.jsonl", ranking_rows(8, k=4, seed=0))
    cfg = RMConfig(model=str(minilm_dir), data=str(data), out=str(tmp_path / "rm"), batch_size=4, max_length=64,
                   lr=1e-4, valid_fraction=0.25)
    result = train_rm(cfg)
    assert result["finished"] and 0.0 <= result["valid/accuracy"] <= 1.0
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm" / "model")
    assert hf.config.num_labels == 1
    tok = load_tokenizer(str(tmp_path / "rm" / "model"))
    ids, _ = encode_pair(tok, [{"role": "user", "content": "x"}], "y", 64)
    assert ids[0] == tok.cls_token_id


def test_the_rm_records_its_max_length_and_is_scored_at_it(tiny_dir, tmp_path):
    data = write_jsonl(tmp_path / "rank.jsonl", ranking_rows(4, k=3, seed=1))
    train_rm(RMConfig(model=str(tiny_dir), data=str(data), out=str(tmp_path / "rm"), batch_size=2, max_length=24,
                      valid_fraction=0.0, lr=1e-4))
    rm = load_scalar_model(str(tmp_path / "rm" / "model")).eval()
    tok = load_tokenizer(str(tmp_path / "rm" / "model"))
    assert rm.max_length == 24
    msgs, long = [{"role": "user", "content": "question"}], "a long answer " * 30
    cut, _ = encode_pair(tok, msgs, long, 24)
    with torch.no_grad():
        expected = rm(*pad_batch([cut], tok.pad_token_id))
    # PPO and the evals call score_texts with their own, longer limits: the RM's own length wins
    assert torch.allclose(score_texts(rm, tok, [msgs], [long], torch.device("cpu"), max_length=512), expected)
