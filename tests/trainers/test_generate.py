"""generate: K samples per prompt into the app's completions format; EOS handling."""

import gc
import gzip
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch

import trainers.generate
from trainers.common import metric_series, read_metrics
from trainers.config import build_config
from trainers.errors import ConfigError
from trainers.generate import GenerateConfig, generate_completions, sample_responses
from trainers.models import load_causal_lm, load_tokenizer

from conftest import prompt_rows, write_jsonl


def test_writes_k_completions_per_prompt_gzipped(tiny_dir, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(3) + [{"prompt": "no id here"}])
    out = tmp_path / "c.jsonl.gz"
    res = generate_completions(GenerateConfig(model=str(tiny_dir), prompts=str(prompts), out=str(out), k=2,
                                              max_new_tokens=5, model_name="tiny-sft", temperature=0.8))
    rows = [json.loads(x) for x in gzip.open(out, "rt", encoding="utf-8")]
    assert res["rows"] == len(rows) == 8
    assert [r.get("prompt_id") for r in rows] == [0, 0, 1, 1, 2, 2, None, None]
    assert rows[-1]["prompt"] == "no id here" and "prompt_id" not in rows[-1]
    assert all(r["model"] == "tiny-sft" and r["settings"]["temperature"] == 0.8 for r in rows)
    assert json.loads((tmp_path / "c.jsonl.gz.config.json").read_text())["k"] == 2


def test_samples_stop_at_eos_and_flag_cut_responses(tiny_pad_eos_dir):
    tok = load_tokenizer(str(tiny_pad_eos_dir))
    model = load_causal_lm(str(tiny_pad_eos_dir))

    def boost_eos(mod, inp, out):  # make EOS likely (p ~ 0.2 per token) so both outcomes occur
        out[..., tok.eos_token_id] += 4.5
        return out

    model.lm_head.register_forward_hook(boost_eos)
    torch.manual_seed(0)
    msgs = [[{"role": "user", "content": f"Hi {i}"}] for i in range(16)]
    samples = sample_responses(model, tok, msgs, 4, 1.0, torch.device("cpu"))
    for s in samples:
        assert len(s.response_ids) <= 4
        if s.has_eos:
            assert s.response_ids[-1] == tok.eos_token_id and tok.eos_token_id not in s.response_ids[:-1]
        else:
            assert len(s.response_ids) == 4 and tok.eos_token_id not in s.response_ids
    assert 0 < sum(s.has_eos for s in samples) < len(samples)
    greedy = sample_responses(model, tok, msgs[:2], 4, 0.0, torch.device("cpu"))
    again = sample_responses(model, tok, msgs[:2], 4, 0.0, torch.device("cpu"))
    assert [s.response_ids for s in greedy] == [s.response_ids for s in again]


def test_samples_from_each_model_in_turn_one_at_a_time(tiny_dir, tiny_pad_eos_dir, tmp_path, monkeypatch):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(3))
    loaded: list[weakref.ref] = []

    def load(name, dtype=torch.float32):
        gc.collect()
        assert all(r() is None for r in loaded), "the previous model is still in memory"
        model = load_causal_lm(name, dtype)
        loaded.append(weakref.ref(model))
        return model

    monkeypatch.setattr(trainers.generate, "load_causal_lm", load)
    out = tmp_path / "both" / "c.jsonl"
    res = generate_completions(GenerateConfig(model=f"{tiny_dir}, {tiny_pad_eos_dir}", model_name="sft,ppo",
                                              prompts=str(prompts), out=str(out), k=2, max_new_tokens=5,
                                              batch_size=4))
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(loaded) == 2 and res["rows"] == len(rows) == 12
    assert [r["model"] for r in rows] == ["sft"] * 6 + ["ppo"] * 6
    assert [r["prompt_id"] for r in rows] == [0, 0, 1, 1, 2, 2] * 2
    assert [m["name"] for m in res["models"]] == ["sft", "ppo"]
    alone = tmp_path / "alone" / "c.jsonl"  # each model starts from the seed: the first one's rows as if alone
    single = generate_completions(GenerateConfig(model=str(tiny_dir), model_name="sft", prompts=str(prompts),
                                                 out=str(alone), k=2, max_new_tokens=5, batch_size=4))
    assert [json.loads(x) for x in alone.read_text().splitlines()] == rows[:6]
    assert "models" not in single
    # the progress stream beside the output: rows so far after each batch, and progress 0..1
    metrics = read_metrics(out.parent)
    assert metric_series(metrics, "generate/rows") == [(4, 4.0), (6, 6.0), (10, 10.0), (12, 12.0)]
    progress = [v for _, v in metric_series(metrics, "progress")]
    assert progress == sorted(progress) and progress[0] > 0 and progress[-1] == 1.0
    assert json.loads((out.parent / "c.jsonl.config.json").read_text())["model_name"] == "sft,ppo"


@pytest.mark.parametrize("values, message", [
    ({"model": "a,b", "model_name": "x"}, "--model-name gives 1 name(s) for 2 model(s)"),
    ({"model": "a", "model_name": "x,y"}, "--model-name gives 2 name(s) for 1 model(s)"),
    ({"model": "runs/1/model,runs/2/model"}, "two models would be written under the same name (model, model)"),
    ({"model": "a,,b"}, "--model: an empty entry"),
    ({"model": "a,b", "model_name": "x,"}, "--model-name: an empty entry"),
])
def test_models_and_names_must_pair_up(values, message):
    with pytest.raises(ConfigError) as e:
        build_config(GenerateConfig, {"prompts": "p.jsonl", "out": "c.jsonl", **values})
    assert message in str(e.value)


def test_names_default_to_the_folders():
    cfg = build_config(GenerateConfig, {"model": "runs/sft/model/, org/ppo", "model_name": "", "prompts": "p",
                                        "out": "c.jsonl"})
    assert cfg.models() == ["runs/sft/model/", "org/ppo"] and cfg.model_names() == ["model", "ppo"]


def test_command_line_creates_the_output_folder(tiny_dir, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(2))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRAINERS_NO_PROGRESS": "1"}

    def run(out: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "trainers", "generate", "--model", str(tiny_dir), "--prompts",
                               str(prompts), "--k", "2", "--max-new-tokens", "3", "--out", str(out)],
                              capture_output=True, text=True, env=env, timeout=120,
                              cwd=Path(__file__).resolve().parents[2])

    out = tmp_path / "not" / "yet" / "completions.jsonl"
    r = run(out)
    assert r.returncode == 0, r.stderr
    assert len(out.read_text().splitlines()) == 4
    assert (out.parent / "completions.jsonl.config.json").is_file()
    assert metric_series(read_metrics(out.parent), "progress")[-1] == (4, 1.0)
    (tmp_path / "run").mkdir()  # another trainer's run folder: its metrics.jsonl is not overwritten
    (tmp_path / "run" / "config.json").write_text("{}")
    (tmp_path / "run" / "metrics.jsonl").write_text("kept\n")
    r = run(tmp_path / "run" / "completions.jsonl")
    assert r.returncode == 2 and "another trainer's run folder" in r.stderr
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == "kept\n"
