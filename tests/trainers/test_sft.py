"""SFT: prompt tokens masked, loss falls, best epoch kept, reload and resume continue identically."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from trainers.common import metric_series, read_metrics
from trainers.models import load_scalar_model, load_tokenizer
from trainers.sft import IGNORE, SFTConfig, collate_sft, evaluate_loss, tokenize_sft, train_sft
from trainers.data import SFTExample

from conftest import sft_rows, write_jsonl


def _cfg(tiny_dir, tmp_path, **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(40))
    base = dict(model=str(tiny_dir), data=str(data), out=str(tmp_path / "run"), epochs=3, batch_size=8,
                micro_batch_size=4, lr=1e-2, valid_fraction=0.2, seed=1)
    base.update(kw)
    return SFTConfig(**base)


def test_prompt_and_padding_tokens_are_masked(tiny_dir):
    tok = load_tokenizer(str(tiny_dir))
    ex = [SFTExample([{"role": "user", "content": "Repeat: red"}, {"role": "assistant", "content": "red"}]),
          SFTExample([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "a longer reply here"}])]
    items = tokenize_sft(tok, ex, 128)
    ids, mask, labels = collate_sft(items, tok.pad_token_id, torch.device("cpu"))
    for row, (seq, plen) in enumerate(items):
        assert (labels[row, :plen] == IGNORE).all()
        assert labels[row, plen:len(seq)].tolist() == seq[plen:]
        assert (labels[row, len(seq):] == IGNORE).all()
    assert tok.decode(labels[0][labels[0] != IGNORE]) == " red</s>"


def test_loss_falls_and_validation_runs_each_epoch(tiny_dir, tmp_path):
    cfg = _cfg(tiny_dir, tmp_path)
    result = train_sft(cfg)
    rows = read_metrics(cfg.out)
    loss = [v for _, v in metric_series(rows, "train/loss")]
    valid = metric_series(rows, "valid/loss")
    assert len(loss) == result["steps"] == 12  # 32 train rows / 8 x 3 epochs
    assert sum(loss[-3:]) / 3 < 0.6 * loss[0]
    assert [s for s, _ in valid] == [4, 8, 12] and valid[-1][1] < valid[0][1]
    lr = [v for _, v in metric_series(rows, "train/lr")]
    assert lr[-1] == pytest.approx(0.1 * cfg.lr, rel=1e-6)  # cosine decay to 10%
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["kind"] == "SFTConfig" and saved["lr"] == cfg.lr


def test_saved_model_reloads_with_the_same_validation_loss(tiny_dir, tmp_path):
    cfg = _cfg(tiny_dir, tmp_path, epochs=1)
    train_sft(cfg)
    rows = read_metrics(cfg.out)
    logged = metric_series(rows, "valid/loss")[-1][1]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    tok = load_tokenizer(str(tmp_path / "run" / "model"))
    from trainers.data import parse_sft, read_file, split_train_valid

    _, valid = split_train_valid(read_file(cfg.data, parse_sft)[0], cfg.valid_fraction, cfg.seed)
    items = tokenize_sft(tok, valid, cfg.max_length)
    assert evaluate_loss(model, items, tok.pad_token_id, 4, torch.device("cpu"), torch.float32) == pytest.approx(logged, rel=1e-5)


def test_resume_from_checkpoint_continues_identically(tiny_dir, tmp_path):
    full = _cfg(tiny_dir, tmp_path / "a", residual_dropout=0.1, epochs=2)
    train_sft(full)
    part = _cfg(tiny_dir, tmp_path / "b", residual_dropout=0.1, epochs=2, max_steps=3)
    assert train_sft(part)["finished"] is False
    rest = _cfg(tiny_dir, tmp_path / "b", residual_dropout=0.1, epochs=2)
    assert train_sft(rest)["finished"] is True
    a = metric_series(read_metrics(full.out), "train/loss")
    b = metric_series(read_metrics(rest.out), "train/loss")
    assert [s for s, _ in b] == list(range(1, 9))  # no duplicated or missing steps
    assert [v for _, v in b] == pytest.approx([v for _, v in a], rel=1e-5)
    wa = load_file(tmp_path / "a" / "run" / "checkpoints" / "step-00000008" / "policy" / "model.safetensors")
    wb = load_file(tmp_path / "b" / "run" / "checkpoints" / "step-00000008" / "policy" / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_best_epoch_by_reward_model_score_becomes_the_final_model(tiny_dir, tmp_path):
    torch.manual_seed(0)
    rm_dir = tmp_path / "rm"
    load_scalar_model(str(tiny_dir)).save_pretrained(rm_dir)
    load_tokenizer(str(tiny_dir)).save_pretrained(rm_dir)
    cfg = _cfg(tiny_dir, tmp_path, reward_model=str(rm_dir), valid_max_new_tokens=6)
    result = train_sft(cfg)
    scores = metric_series(read_metrics(cfg.out), "valid/rm_score")
    assert len(scores) == 3
    best = max(range(3), key=lambda i: scores[i][1])
    assert result["best_epoch"] == best + 1
    final = load_file(tmp_path / "run" / "model" / "model.safetensors")
    kept = load_file(tmp_path / "run" / "best" / "model.safetensors")
    assert all(torch.equal(final[k], kept[k]) for k in final)


def test_right_padded_loss_needs_no_attention_mask(tiny_dir):
    """Training runs the causal LM without a mask: with right padding the response loss is unchanged."""
    from trainers.sft import response_token_loss_sum

    tok = load_tokenizer(str(tiny_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_dir)).eval()
    ex = [SFTExample([{"role": "user", "content": "Repeat: red"}, {"role": "assistant", "content": "red"}]),
          SFTExample([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "a longer reply here"}])]
    ids, mask, labels = collate_sft(tokenize_sft(tok, ex, 128), tok.pad_token_id, torch.device("cpu"), multiple=64)
    assert ids.shape[1] == 64
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    want = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                             ignore_index=IGNORE, reduction="sum")
    with torch.no_grad():
        got = response_token_loss_sum(model, ids, mask, labels)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)


def test_compile_defaults_off_on_cpu():
    assert SFTConfig(model="m", data="d", out="o").compile is None  # None: on with CUDA only
