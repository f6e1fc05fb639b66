"""PPO-ptx with --fsdp (FSDP2) under torchrun with 2 CPU processes (gloo).

What it is compared with: a 2-process DDP run, not one process. Each process samples its half
of the rollout from its own generator, so one process (one generator, one generate call over
all prompts) samples other responses and the runs would not be comparable. Under --fsdp every
process samples the same prompts with the same generator as under DDP, and ``generate`` runs
in lock-step (``synced_gpus``): a process whose responses have all ended runs idle forward
passes without drawing samples, so the responses are the same as DDP's. The policy is a
briefly SFT-trained tiny model whose responses end at different lengths, so the lock-step is
needed (without it gloo stops on a collective size mismatch in the first rollout).

Tolerances: the sharded run reduce-scatters gradients instead of all-reducing them, so the
weights differ by float rounding (measured over 3 iterations: 5.7e-7 on the final weights,
metrics within 2e-6 relative or 5e-7 absolute, the sampled responses identical). We allow
rel 1e-4 / abs 1e-5 on every logged metric and 1e-5 on the weights: about 20x the measured
gaps, and far below what a wrong gradient scale or a differing sample gives (those change the
losses in the second decimal). A resumed --fsdp run restores every process's state (weights,
AdamW, EMA, RNG) bit for bit and must match the uninterrupted run to 1e-6.
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

from trainers.common import read_metrics
from trainers.errors import ConfigError
from trainers.ppo import PPOConfig, check_fsdp_batches

from conftest import prompt_rows, sft_rows, write_jsonl

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
ARGS = dict(steps=3, rollout_batch_size=8, minibatch_size=4, generation_batch_size=4, ptx_batch_size=4,
            max_new_tokens=8, lr=3e-3, value_lr=3e-3, ema_decay=0.5, eval_every=2, seed=0)
UNTIMED = ("time/", "episodes_per_s", "progress")


def _ppo_run(setup: dict, out: Path, *extra: str, fsdp: bool = True, prompts: str = "prompts") -> None:
    flags = [x for k, v in ARGS.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRAINERS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "trainers", "ppo",
                        *(["--fsdp"] if fsdp else []), "--policy", str(setup["policy"]),
                        "--reward-model", str(setup["rm"]), "--prompts", str(setup[prompts]),
                        "--pretrain-data", str(setup["pretrain"]), "--out", str(out), *flags, *extra],
                       capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def _metrics(out: Path) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for row in read_metrics(out):
        if not row["name"].startswith(UNTIMED):
            series.setdefault(row["name"], []).append((row["step"], row["value"]))
    return series


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model" / "model.safetensors"))


@pytest.fixture(scope="module")
def setup(tiny_dir, tmp_path_factory):
    """An SFT policy (its responses end at varied lengths), an RM folder with a seeded head, data."""
    from trainers.models import load_scalar_model, load_tokenizer
    from trainers.sft import SFTConfig, train_sft

    root = tmp_path_factory.mktemp("fsdp_ppo")
    sft = write_jsonl(root / "sft.jsonl", sft_rows(48, seed=5))
    train_sft(SFTConfig(model=str(tiny_dir), data=str(sft), out=str(root / "sft"), epochs=2, batch_size=8,
                        micro_batch_size=8, lr=1e-2, valid_fraction=0.0))
    torch.manual_seed(1)  # the RM's score head is new: seeded, saved once, read by every run
    rm = load_scalar_model(str(root / "sft" / "model"))
    rm.save_pretrained(root / "rm")
    load_tokenizer(str(root / "sft" / "model")).save_pretrained(root / "rm")
    return {
        "root": root, "policy": root / "sft" / "model", "rm": root / "rm",
        # 4 held-out prompts: 2 per process, as under DDP (an uneven split is padded under --fsdp)
        "prompts": write_jsonl(root / "prompts.jsonl", prompt_rows(24) + prompt_rows(4, seed=9, split="valid")),
        "uneven": write_jsonl(root / "uneven.jsonl", prompt_rows(24) + prompt_rows(5, seed=9, split="valid")),
        "pretrain": write_jsonl(root / "pretrain.jsonl", sft_rows(40, seed=2)),
    }


@pytest.fixture(scope="module")
def runs(setup):
    """--fsdp and DDP, 2 processes each; the --fsdp run checkpoints every iteration (kept: 2 and 3)."""
    root = setup["root"]
    _ppo_run(setup, root / "fsdp", "--save-every", "1")
    _ppo_run(setup, root / "ddp", fsdp=False)
    return root


@pytest.mark.slow
def test_fsdp_ppo_matches_ddp_on_two_processes(runs):
    fsdp, ddp = _metrics(runs / "fsdp"), _metrics(runs / "ddp")
    assert fsdp.keys() == ddp.keys()
    for name in ("loss/policy", "loss/value", "loss/ptx", "reward/score", "kl", "entropy", "approx_kl"):
        assert [s for s, _ in fsdp[name]] == [1, 2, 3], name
    assert [s for s, _ in fsdp["eval/reward"]] == [0, 2, 3]
    for name in fsdp:
        assert [s for s, _ in fsdp[name]] == [s for s, _ in ddp[name]], name
        assert [v for _, v in fsdp[name]] == pytest.approx([v for _, v in ddp[name]], rel=1e-4, abs=1e-5), name
    # responses ended at different lengths: generate had to run in lock-step
    assert any(0 < v < 1 for _, v in fsdp["response/eos_fraction"])
    straight, sharded = _weights(runs / "ddp"), _weights(runs / "fsdp")
    assert sharded.keys() == straight.keys()
    for name in straight:
        assert torch.allclose(sharded[name], straight[name], rtol=0, atol=1e-5), name
    ckpt = runs / "fsdp" / "checkpoints" / "step-00000003"
    assert sorted(p.name for p in (ckpt / "sharded").iterdir()) == [  # one safetensors file per process
        "shard-00001-model-00001-of-00001.safetensors", "shard-00002-model-00001-of-00001.safetensors"]
    assert (ckpt / "rng-rank-0.safetensors").is_file() and (ckpt / "rng-rank-1.safetensors").is_file()
    assert not (ckpt / "policy").exists()  # the weights are in sharded/ only


@pytest.mark.slow
def test_fsdp_ppo_final_policy_loads_with_from_pretrained(runs):
    from transformers import AutoModelForCausalLM

    out = runs / "fsdp" / "model"
    assert json.loads((out / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    assert (out / "tokenizer.json").is_file()
    assert json.loads((runs / "fsdp" / "result.json").read_text())["ema"] == 0.5  # the EMA weights, gathered
    sharded = AutoModelForCausalLM.from_pretrained(out).eval()
    single = AutoModelForCausalLM.from_pretrained(runs / "ddp" / "model").eval()
    ids = torch.tensor([[5, 17, 42, 99, 3, 250, 7]])
    with torch.no_grad():
        a, b = sharded(input_ids=ids).logits, single(input_ids=ids).logits
    assert torch.allclose(a, b, rtol=0, atol=1e-4), (a - b).abs().max()


@pytest.mark.slow
def test_fsdp_ppo_checkpoint_resumes_to_the_same_weights(runs, setup, tmp_path):
    # the run as it stood after iteration 2: its folder with the last checkpoint and final model removed
    out = shutil.copytree(runs / "fsdp", tmp_path / "resumed")
    shutil.rmtree(out / "checkpoints" / "step-00000003")
    shutil.rmtree(out / "model")
    assert (out / "checkpoints" / "step-00000002" / "sharded").is_dir()
    _ppo_run(setup, out, "--save-every", "1")  # resumes from step 2: weights, AdamW, EMA and each process's RNG
    straight, resumed = _metrics(runs / "fsdp"), _metrics(out)
    assert resumed.keys() == straight.keys()
    for name in straight:
        assert [s for s, _ in resumed[name]] == [s for s, _ in straight[name]], name
        assert [v for _, v in resumed[name]] == pytest.approx([v for _, v in straight[name]], rel=1e-6, abs=1e-7), name
    a, b = _weights(runs / "fsdp"), _weights(out)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(b[name], a[name], rtol=0, atol=1e-6), name


@pytest.mark.slow
def test_fsdp_ppo_held_out_prompts_that_do_not_split_evenly(setup, tmp_path):
    # 5 held-out prompts: 2 and 3 per process; the process with 2 samples a padding copy (weight 0)
    # so that both run the same forward passes
    out = tmp_path / "uneven"
    _ppo_run(setup, out, "--steps", "1", prompts="uneven")
    series = _metrics(out)
    assert [s for s, _ in series["eval/reward"]] == [0, 1]
    assert series["eval/kl"][0][1] == pytest.approx(0.0, abs=1e-6)  # policy == reference at the start
    assert (out / "model" / "model.safetensors").is_file()


def test_fsdp_ppo_needs_batches_that_split_evenly_over_the_processes(tmp_path):
    cfg = PPOConfig(policy="p", prompts="x.jsonl", out=str(tmp_path), reward_model="rm", ptx_coef=0.0,
                    rollout_batch_size=12, minibatch_size=6, fsdp=True)
    check_fsdp_batches(cfg, 2)
    check_fsdp_batches(cfg, 3)
    with pytest.raises(ConfigError, match=r"--fsdp: minibatch_size \(6\) must be a multiple of the number of processes \(4\)"):
        check_fsdp_batches(cfg, 4)
    with pytest.raises(ConfigError, match=r"--fsdp: rollout_batch_size \(12\) must be a multiple"):
        check_fsdp_batches(cfg, 5)


def test_fsdp_ppo_in_one_process_says_how_to_launch(tiny_dir, tmp_path):
    from trainers.errors import TrainerError
    from trainers.ppo import train_ppo

    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(8))
    cfg = PPOConfig(policy=str(tiny_dir), prompts=str(prompts), out=str(tmp_path / "run"), ptx_coef=0.0, fsdp=True)
    with pytest.raises(TrainerError, match="--fsdp needs several processes: launch with torchrun"):
        train_ppo(cfg, reward_fn=lambda p, r: [0.0] * len(r))
    assert not (tmp_path / "run" / "checkpoints").exists()
