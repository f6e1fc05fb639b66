"""SFT and RM with --fsdp (FSDP2) under torchrun with 2 CPU processes (gloo).

Tolerances: the sharded run sums the same fp32 terms in another order (each process's gradient,
then a reduce-scatter average, instead of one sum), so it differs from one process only by float
rounding, which AdamW at lr 1e-2 carries forward over the steps. Measured on this tiny model
(6 steps): losses 5e-8 relative, weights 1.5e-5 absolute, logits 1.1e-6 absolute (logits of
magnitude ~2). We allow rel 1e-5 on losses and 1e-4 absolute on logits (about 100x the measured
gaps, far below what a wrong gradient scale or a missed shard would give: those change the loss
from the second step in the second decimal). A resumed run repeats the same operations from
state restored bit for bit, so its losses and weights must match the uninterrupted run's to 1e-6.
The RM was measured the same way (losses 3e-8 relative, bias 1e-7) and gets the same tolerances.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trainers.common import metric_series, read_metrics
from trainers.errors import TrainerError
from trainers.reward import RMConfig, train_rm
from trainers.sft import SFTConfig, train_sft

from conftest import ranking_rows, sft_rows, write_jsonl

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
ARGS = dict(epochs=2, batch_size=8, micro_batch_size=2, lr=1e-2, valid_fraction=0.2, seed=3)


RM_ARGS = dict(batch_size=6, micro_batch_size=2, lr=3e-3, valid_fraction=0.2, seed=3)


def _fsdp_run(tiny_dir: Path, data: Path, out: Path, *extra: str, procs: int = 2, kind: str = "sft",
              args: dict = ARGS) -> None:
    flags = [x for k, v in args.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRAINERS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([TORCHRUN, "--standalone", "--nproc-per-node", str(procs), "-m", "trainers", kind, "--fsdp",
                        "--model", str(tiny_dir), "--data", str(data), "--out", str(out), *flags, *extra],
                       capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def _series(out: Path, name: str = "train/loss") -> list[float]:
    return [v for _, v in metric_series(read_metrics(out), name)]


@pytest.fixture(scope="module")
def runs(tiny_dir, tmp_path_factory):
    """One process without FSDP, and two processes with --fsdp, on the same data and seed."""
    root = tmp_path_factory.mktemp("fsdp")
    data = write_jsonl(root / "sft.jsonl", sft_rows(26))  # 21 training rows, 5 validation rows
    train_sft(SFTConfig(model=str(tiny_dir), data=str(data), out=str(root / "one"), **ARGS))
    _fsdp_run(tiny_dir, data, root / "fsdp")
    return root, data


@pytest.mark.slow
def test_fsdp_losses_match_one_process(runs):
    root, _ = runs
    one, two = _series(root / "one"), _series(root / "fsdp")
    # batches of 8, 8 and 5 rows, 2 epochs: the batch of 5 splits 2/3 over the processes, and the
    # 5 validation rows 2/3, so one process runs an idle pass to match the other's collectives
    assert len(one) == len(two) == 6
    assert two == pytest.approx(one, rel=1e-5)
    assert _series(root / "fsdp", "valid/loss") == pytest.approx(_series(root / "one", "valid/loss"), rel=1e-5)
    ckpt = root / "fsdp" / "checkpoints" / "step-00000006"
    assert sorted(p.name for p in (ckpt / "sharded").iterdir()) == [  # one safetensors file per process
        "shard-00001-model-00001-of-00001.safetensors", "shard-00002-model-00001-of-00001.safetensors"]


@pytest.mark.slow
def test_fsdp_final_model_loads_with_from_pretrained(runs):
    from transformers import AutoModelForCausalLM

    root, _ = runs
    config = json.loads((root / "fsdp" / "model" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    sharded = AutoModelForCausalLM.from_pretrained(root / "fsdp" / "model").eval()
    single = AutoModelForCausalLM.from_pretrained(root / "one" / "model").eval()
    ids = torch.tensor([[5, 17, 42, 99, 3, 250, 7]])
    with torch.no_grad():
        a, b = sharded(input_ids=ids).logits, single(input_ids=ids).logits
    assert torch.allclose(a, b, rtol=0, atol=1e-4), (a - b).abs().max()
    assert (root / "fsdp" / "model" / "tokenizer.json").is_file()


@pytest.mark.slow
def test_fsdp_sft_validation_by_reward_model_matches_one_process(runs, tiny_dir, tmp_path):
    """--reward-model scores greedy responses to the validation prompts: 5 rows split 3/2, so one
    process makes an idle generate call to keep the sharded model's collectives in step."""
    from trainers.models import load_scalar_model, load_tokenizer

    _, data = runs
    torch.manual_seed(0)
    rm = tmp_path / "rm"
    load_scalar_model(str(tiny_dir)).save_pretrained(rm)
    load_tokenizer(str(tiny_dir)).save_pretrained(rm)
    args = {**ARGS, "epochs": 1}
    train_sft(SFTConfig(model=str(tiny_dir), data=str(data), out=str(tmp_path / "one"), reward_model=str(rm),
                        valid_max_new_tokens=6, **args))
    _fsdp_run(tiny_dir, data, tmp_path / "fsdp", "--reward-model", str(rm), "--valid-max-new-tokens", "6", args=args)
    one, two = _series(tmp_path / "one", "valid/rm_score"), _series(tmp_path / "fsdp", "valid/rm_score")
    assert len(one) == len(two) == 1
    assert two == pytest.approx(one, rel=1e-4)
    assert _series(tmp_path / "fsdp") == pytest.approx(_series(tmp_path / "one"), rel=1e-5)


@pytest.fixture(scope="module")
def stopped(runs, tiny_dir):
    """An --fsdp run stopped by --max-steps 4 (mid-epoch 2): its last checkpoint is step 4."""
    root, data = runs
    _fsdp_run(tiny_dir, data, root / "stopped", "--max-steps", "4")
    assert not (root / "stopped" / "model").exists()
    return root / "stopped"


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model" / "model.safetensors"))


@pytest.mark.slow
def test_fsdp_checkpoint_resumes_to_the_same_weights(runs, stopped, tiny_dir, tmp_path):
    root, data = runs
    out = shutil.copytree(stopped, tmp_path / "resumed")
    _fsdp_run(tiny_dir, data, out)  # resumes from checkpoints/step-00000004
    assert _series(out) == pytest.approx(_series(root / "fsdp"), rel=1e-6)
    straight, resumed = _weights(root / "fsdp"), _weights(out)
    assert resumed.keys() == straight.keys()
    for name in straight:
        assert torch.allclose(resumed[name], straight[name], rtol=0, atol=1e-6), name


@pytest.mark.slow
def test_fsdp_checkpoint_resumes_on_another_number_of_processes(runs, stopped, tiny_dir, tmp_path):
    root, data = runs
    out = shutil.copytree(stopped, tmp_path / "resharded")
    # DCP reshards the 2-process checkpoint over 3 processes; the last two steps then sum their
    # gradients in another order (measured: 1.2e-7 on the weights), hence 1e-5 here
    _fsdp_run(tiny_dir, data, out, procs=3)
    assert _series(out) == pytest.approx(_series(root / "fsdp"), rel=1e-5)
    straight, resharded = _weights(root / "fsdp"), _weights(out)
    for name in straight:
        assert torch.allclose(resharded[name], straight[name], rtol=0, atol=1e-5), name


@pytest.mark.slow
def test_fsdp_checkpoint_without_fsdp_is_refused_clearly(runs, tiny_dir, tmp_path):
    root, data = runs
    shutil.copytree(root / "fsdp" / "checkpoints", tmp_path / "checkpoints")
    with pytest.raises(TrainerError, match="written by an --fsdp run: resume it with --fsdp"):
        train_sft(SFTConfig(model=str(tiny_dir), data=str(data), out=str(tmp_path), **ARGS))


@pytest.fixture(scope="module")
def rm_runs(tiny_dir, tmp_path_factory):
    """The RM on one process without FSDP, and on two with --fsdp."""
    root = tmp_path_factory.mktemp("fsdp_rm")
    # 23 training prompts in batches of 6: the last batch of 5 splits 2/3 (an idle pass on one process)
    data = write_jsonl(root / "rank.jsonl", ranking_rows(29, k=4))
    train_rm(RMConfig(model=str(tiny_dir), data=str(data), out=str(root / "one"), **RM_ARGS))
    _fsdp_run(tiny_dir, data, root / "fsdp", kind="rm", args=RM_ARGS)
    return root, data


@pytest.mark.slow
def test_fsdp_rm_matches_one_process_and_saves_a_loadable_rm(rm_runs):
    from trainers.models import load_scalar_model

    root, _ = rm_runs
    one, two = _series(root / "one"), _series(root / "fsdp")
    assert len(one) == len(two) == 4
    assert two == pytest.approx(one, rel=1e-5)
    for name in ("valid/loss", "valid/accuracy", "rm/bias"):
        assert _series(root / "fsdp", name) == pytest.approx(_series(root / "one", name), rel=1e-5), name
    config = json.loads((root / "fsdp" / "model" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    sharded, single = load_scalar_model(str(root / "fsdp" / "model")).eval(), load_scalar_model(str(root / "one" / "model")).eval()
    assert sharded.bias == pytest.approx(single.bias, rel=1e-5) and sharded.bias != 0
    ids, mask = torch.tensor([[5, 17, 42, 99, 3], [8, 250, 7, 0, 0]]), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        assert torch.allclose(sharded(ids, mask), single(ids, mask), rtol=0, atol=1e-4)


@pytest.mark.slow
def test_fsdp_rm_checkpoint_resumes_to_the_same_weights(rm_runs, tiny_dir, tmp_path):
    root, data = rm_runs
    out = tmp_path / "resumed"
    _fsdp_run(tiny_dir, data, out, "--max-steps", "2", kind="rm", args=RM_ARGS)
    assert (out / "checkpoints" / "step-00000002" / "sharded").is_dir() and not (out / "model").exists()
    _fsdp_run(tiny_dir, data, out, kind="rm", args=RM_ARGS)
    assert _series(out) == pytest.approx(_series(root / "fsdp"), rel=1e-6)
    straight, resumed = _weights(root / "fsdp"), _weights(out)
    assert resumed.keys() == straight.keys()
    for name in straight:
        assert torch.allclose(resumed[name], straight[name], rtol=0, atol=1e-6), name


def test_fsdp_in_one_process_says_how_to_launch(tiny_dir, tmp_path):
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(10))
    with pytest.raises(TrainerError, match="--fsdp needs several processes: launch with torchrun"):
        train_sft(SFTConfig(model=str(tiny_dir), data=str(data), out=str(tmp_path / "run"), fsdp=True, epochs=1))
    assert not (tmp_path / "run" / "checkpoints").exists()
