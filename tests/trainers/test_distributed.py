"""torchrun with 2 CPU processes (gloo) gives the same losses as one process on the same global batch."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trainers.common import metric_series, read_metrics
from trainers.reward import RMConfig, train_rm
from trainers.sft import SFTConfig, train_sft

from conftest import ranking_rows, sft_rows, write_jsonl

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))


def _torchrun(*args: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRAINERS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "trainers", *args],
                       capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def _losses(out: Path, name: str = "train/loss") -> list[float]:
    return [v for _, v in metric_series(read_metrics(out), name)]


@pytest.mark.slow
def test_sft_two_processes_match_one(tiny_dir, tmp_path):
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(30))
    common = dict(model=str(tiny_dir), data=str(data), epochs=2, batch_size=8, micro_batch_size=2, lr=1e-2,
                  valid_fraction=0.2, seed=3)
    train_sft(SFTConfig(out=str(tmp_path / "one"), **common))
    _torchrun("sft", "--model", str(tiny_dir), "--data", str(data), "--out", str(tmp_path / "two"), "--epochs", "2",
              "--batch-size", "8", "--micro-batch-size", "2", "--lr", "0.01", "--valid-fraction", "0.2", "--seed", "3")
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 6  # 24 rows (one batch of 8 is uneven: 4 per process)
    assert two == pytest.approx(one, rel=2e-4)
    assert _losses(tmp_path / "two", "valid/loss") == pytest.approx(_losses(tmp_path / "one", "valid/loss"), rel=2e-4)


@pytest.mark.slow
def test_rm_two_processes_match_one(tiny_dir, tmp_path):
    data = write_jsonl(tmp_path / "rank.jsonl", ranking_rows(30, k=4))
    train_rm(RMConfig(model=str(tiny_dir), data=str(data), out=str(tmp_path / "one"), batch_size=6,
                      micro_batch_size=2, lr=3e-3, valid_fraction=0.2, seed=3))
    _torchrun("rm", "--model", str(tiny_dir), "--data", str(data), "--out", str(tmp_path / "two"), "--batch-size", "6",
              "--micro-batch-size", "2", "--lr", "0.003", "--valid-fraction", "0.2", "--seed", "3")
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 4
    assert two == pytest.approx(one, rel=2e-4)
    assert _losses(tmp_path / "two", "valid/accuracy") == _losses(tmp_path / "one", "valid/accuracy")
