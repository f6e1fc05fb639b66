"""--engine: transformers (the default) samples exactly as generate did; vllm where it cannot run
(no vllm package, no CUDA GPU: the CPU test machines) stops at once with a message naming what is
missing. The vLLM path itself needs both and is exercised by benchmarks/ppo_engines.py on a GPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainers.common import set_seed
from trainers.config import build_config
from trainers.engines import TransformersEngine, missing_for
from trainers.errors import ConfigError
from trainers.generate import GenerateConfig, decode_response, generate_completions, sample_responses
from trainers.models import load_causal_lm, load_tokenizer
from trainers.ppo import PPOConfig, train_ppo

from conftest import prompt_rows, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")
VLLM_RUNS_HERE = not missing_for("vllm")
needs_no_vllm = pytest.mark.skipif(VLLM_RUNS_HERE, reason="vllm and a CUDA GPU are present: the error cannot occur")


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRAINERS_NO_PROGRESS": "1"}
    return subprocess.run([sys.executable, "-m", "trainers", *args], capture_output=True, text=True, env=env,
                          timeout=180, cwd=ROOT)


def test_the_default_engine_writes_what_generate_sampled_before_engines(tiny_dir, tmp_path):
    prompts = prompt_rows(5)
    path = write_jsonl(tmp_path / "p.jsonl", prompts)
    out = tmp_path / "c.jsonl"
    cfg = GenerateConfig(model=str(tiny_dir), prompts=str(path), out=str(out), k=2, max_new_tokens=6, batch_size=4,
                         temperature=1.0, seed=3)
    assert cfg.engine == "transformers"
    generate_completions(cfg)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    # the loop generate ran before there were engines: seed, then sample_responses per batch of 4
    tok, model = load_tokenizer(str(tiny_dir)), load_causal_lm(str(tiny_dir))
    set_seed(3)
    jobs = [[{"role": "user", "content": p["prompt"]}] for p in prompts for _ in range(2)]
    expected = []
    for s in range(0, len(jobs), 4):
        expected += [decode_response(tok, x.response_ids) for x in sample_responses(model, tok, jobs[s:s + 4], 6, 1.0, CPU)]
    assert [r["completion"] for r in rows] == expected
    assert len(set(expected)) > 1  # sampled, not one repeated string
    assert all(r["settings"]["engine"] == "transformers" for r in rows)
    assert json.loads((tmp_path / "c.jsonl.config.json").read_text())["engine"] == "transformers"


def test_the_transformers_engine_batches_like_one_call_per_batch(tiny_dir):
    tok, model = load_tokenizer(str(tiny_dir)), load_causal_lm(str(tiny_dir))
    msgs = [[{"role": "user", "content": f"Tell me {i}"}] for i in range(5)]
    torch.manual_seed(7)
    got = TransformersEngine(model, tok, CPU, batch_size=2).sample(msgs, 5, 1.0, 64)
    torch.manual_seed(7)
    want = [s for i in range(0, 5, 2) for s in sample_responses(model, tok, msgs[i:i + 2], 5, 1.0, CPU, 64)]
    assert got == want
    assert TransformersEngine(model, tok, CPU, 4).load_weights(model) is None  # it samples from the model itself


@pytest.mark.parametrize("cls, base", [
    (GenerateConfig, {"model": "m", "prompts": "p.jsonl", "out": "c.jsonl"}),
    (PPOConfig, {"policy": "m", "prompts": "p.jsonl", "out": "runs/ppo", "ptx_coef": 0}),
])
def test_engine_values_are_checked_with_the_config(cls, base):
    assert build_config(cls, base).engine == "transformers"
    assert build_config(cls, {**base, "engine": "vllm"}).engine == "vllm"  # allowed anywhere; checked at run start
    with pytest.raises(ConfigError, match="--engine must be one of transformers, vllm, not 'tgi'"):
        build_config(cls, {**base, "engine": "tgi"})
    with pytest.raises(ConfigError, match=r"vllm_gpu_memory_utilization must be in \(0, 1\]"):
        build_config(cls, {**base, "engine": "vllm", "vllm_gpu_memory_utilization": 1.5})


@needs_no_vllm
def test_generate_with_vllm_where_it_cannot_run_says_what_is_missing(tiny_dir, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(2))
    out = tmp_path / "samples" / "c.jsonl"
    r = _cli("generate", "--model", str(tiny_dir), "--prompts", str(prompts), "--out", str(out), "--engine", "vllm")
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: --engine vllm cannot run here: ")
    if not torch.cuda.is_available():
        assert "no CUDA GPU is visible" in line
    try:
        import vllm  # noqa: F401
    except ImportError:
        assert "the vllm package is not installed (pip install 'rlhf-lab[vllm]')" in line
    assert "Use --engine transformers" in line
    assert not out.parent.exists()  # nothing written


@needs_no_vllm
def test_ppo_with_vllm_where_it_cannot_run_says_what_is_missing(tiny_dir, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(8))
    out = tmp_path / "ppo"
    r = _cli("ppo", "--policy", str(tiny_dir), "--prompts", str(prompts), "--out", str(out), "--ptx-coef", "0",
             "--reward-model", str(tiny_dir), "--engine", "vllm")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: --engine vllm cannot run here: ")
    assert not out.exists()  # stopped before the run folder was made


def test_ppo_writes_the_engine_into_its_run_config(tiny_dir, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(8))
    cfg = PPOConfig(policy=str(tiny_dir), prompts=str(prompts), out=str(tmp_path / "ppo"), steps=1, rollout_batch_size=4,
                    generation_batch_size=4, minibatch_size=4, ppo_epochs=1, ptx_coef=0.0, max_new_tokens=4,
                    eval_prompts=0)
    train_ppo(cfg, reward_fn=lambda prompts, responses: [float(len(r)) for r in responses])
    saved = json.loads((tmp_path / "ppo" / "config.json").read_text())
    assert saved["engine"] == "transformers" and saved["vllm_gpu_memory_utilization"] == 0.3


def test_the_weights_pushed_to_vllm_carry_the_checkpoint_names(tiny_dir):
    """vLLM loads a folder's safetensors by name at start; the push must use the same names and
    tensors, whatever wraps the policy (DDP's .module, regional torch.compile)."""
    from safetensors.torch import load_file

    from trainers.engines import policy_weights
    from trainers.models import compile_blocks

    saved = {}
    for f in Path(tiny_dir).glob("*.safetensors"):
        saved.update(load_file(f))
    model = load_causal_lm(str(tiny_dir))
    pushed = dict(policy_weights(model))
    assert pushed.keys() == saved.keys()
    assert all(torch.equal(pushed[k], saved[k]) for k in saved)

    class Wrapped(torch.nn.Module):  # what DDP looks like from outside: the model under .module
        def __init__(self, m):
            super().__init__()
            self.module = m

    compile_blocks(model)
    assert dict(policy_weights(Wrapped(model))).keys() == saved.keys()
