"""The command line: the whole loop on files, config files + flag overrides, one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trainers.cli import main

from conftest import prompt_rows, ranking_rows, sft_rows, write_jsonl

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRAINERS_NO_PROGRESS": "1"}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainers", *args], capture_output=True, text=True, env=ENV,
                          cwd=Path(__file__).resolve().parents[2], timeout=120)


def test_the_whole_loop_runs_from_the_command_line(tmp_path):
    sft = write_jsonl(tmp_path / "sft.jsonl", sft_rows(24))
    rank = write_jsonl(tmp_path / "rank.jsonl", ranking_rows(16))
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(8))
    t = str(tmp_path)
    assert main(["init-tiny", "--out", f"{t}/base", "--text", str(sft), "--vocab-size", "320"]) == 0
    assert main(["sft", "--model", f"{t}/base", "--data", str(sft), "--out", f"{t}/sft", "--epochs", "1"]) == 0
    assert main(["rm", "--model", f"{t}/sft/model", "--data", str(rank), "--out", f"{t}/rm",
                 "--demonstrations", str(sft)]) == 0
    assert main(["ppo", "--policy", f"{t}/sft/model", "--reward-model", f"{t}/rm/model", "--prompts", str(prompts),
                 "--pretrain-data", str(sft), "--out", f"{t}/ppo", "--steps", "2", "--rollout-batch-size", "4",
                 "--minibatch-size", "2", "--max-new-tokens", "6"]) == 0
    out = tmp_path / "gen" / "completions.jsonl"
    assert main(["generate", "--model", f"{t}/ppo/model", "--prompts", str(prompts), "--k", "3",
                 "--out", str(out), "--max-new-tokens", "6"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 24
    assert set(rows[0]) >= {"prompt_id", "prompt", "completion", "model", "settings"}
    assert rows[0]["settings"]["temperature"] == 1.0 and rows[0]["model"] == "model"
    for run in ("sft", "rm", "ppo"):
        cfg = json.loads((tmp_path / run / "config.json").read_text())
        assert cfg["out"] == f"{t}/{run}"
        metrics = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        assert metrics and set(metrics[0]) == {"step", "name", "value", "time"}
        assert (tmp_path / run / "model" / "model.safetensors").is_file()
    ppo_names = {json.loads(x)["name"] for x in (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()}
    assert {"reward/score", "kl", "loss/ptx", "loss/value", "clipfrac/policy", "entropy", "response/length",
            "time/generation_s", "time/training_s"} <= ppo_names


def test_config_file_with_flag_overrides(tiny_dir, tmp_path):
    sft = write_jsonl(tmp_path / "sft.jsonl", sft_rows(16))
    conf = tmp_path / "sft.yaml"
    conf.write_text(yaml.safe_dump({"model": str(tiny_dir), "data": str(sft), "out": str(tmp_path / "run"),
                                    "epochs": 3, "lr": 0.5, "batch-size": 4}))
    assert main(["sft", "--config", str(conf), "--epochs", "1", "--lr", "0.001"]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["epochs"], saved["lr"], saved["batch_size"]) == (1, 0.001, 4)


def test_help_documents_every_key():
    from dataclasses import fields

    from trainers.ppo import PPOConfig

    r = _run("ppo", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for f in fields(PPOConfig):
        assert "--" + f.name.replace("_", "-") in text
    assert "beta: per-token KL penalty coefficient (default: 0.02)" in text


@pytest.mark.parametrize("args, message", [
    (["sft", "--data", "x.jsonl", "--out", "o"], "missing required option(s): --model"),
    (["sft", "--model", "m", "--data", "x.jsonl", "--out", "o", "--epochs", "two"], "'epochs': expected int"),
])
def test_config_errors_are_one_line_with_status_2(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_bad_row_stops_before_training_with_line_number(tiny_dir, tmp_path):
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(3) + [{"prompt": "x", "completion": 5}])
    r = _run("sft", "--model", str(tiny_dir), "--data", str(data), "--out", str(tmp_path / "run"))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "sft.jsonl:4: field 'completion'" in r.stderr and "--skip-bad-rows" in r.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
    ok = main(["sft", "--model", str(tiny_dir), "--data", str(data), "--out", str(tmp_path / "run"),
               "--skip-bad-rows", "--epochs", "1"])
    assert ok == 0
    assert "1 bad rows skipped" in json.loads((tmp_path / "run" / "result.json").read_text())["input"]


def test_trainers_never_import_the_app():
    code = "import sys, trainers.cli, trainers.sft, trainers.reward, trainers.ppo, trainers.generate; " \
           "print(any(m == 'app' or m.startswith('app.') for m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.stdout.strip() == "False"
