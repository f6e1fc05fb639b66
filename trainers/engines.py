"""Generation engines: who samples the responses of ``generate`` and of PPO's rollouts.

- ``transformers`` (the default, and the CPU path): the model's own ``generate``, in batches.
  In PPO it samples from the training policy itself, so there is nothing to push.
- ``vllm``: a vLLM engine in the same process, on the same GPU (colocated, as TRL's
  ``vllm_mode="colocate"``), given ``gpu_memory_utilization`` of the GPU. Used where vLLM is
  installed (``pip install 'rlhf-lab[vllm]'``) and a CUDA GPU is present; asking for it elsewhere
  is a :class:`ConfigError` that names what is missing. In PPO the policy's current weights are
  pushed into it (:meth:`VLLMEngine.load_weights`) before each rollout.

Both take the same token ids (the prompt encoded by :func:`trainers.formatting.encode_prompt`, cut
from the left to ``max_prompt_length``), sample at the same temperature with no top-k/top-p, stop
at the tokenizer's EOS only, and return the same :class:`Sample`. Log-probabilities are always
recomputed by the training model (trainers/rollout.py), so the PPO loss does not depend on the engine.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import socket
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import torch

from trainers.configs import ENGINES
from trainers.data import Messages
from trainers.errors import ConfigError
from trainers.formatting import encode_prompt
from trainers.losses import response_mask
from trainers.models import pad_batch

@dataclass
class Sample:
    prompt_ids: list[int]
    response_ids: list[int]  # up to and including the first EOS
    has_eos: bool


@torch.no_grad()
def sample_responses(
    model: Any, tokenizer: Any, prompts: list[Messages], max_new_tokens: int, temperature: float,
    device: torch.device, max_prompt_length: int = 512,
) -> list[Sample]:
    """One sampled response per prompt with transformers' ``generate`` (temperature 0 = greedy)."""
    model = getattr(model, "module", model)
    was_training = model.training
    model.eval()
    enc = [encode_prompt(tokenizer, m)[-max_prompt_length:] for m in prompts]
    ids, mask = pad_batch(enc, tokenizer.pad_token_id, side="left", device=device)
    kw: dict[str, Any] = {"do_sample": False} if temperature <= 0 else {
        "do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
    out = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **kw,
    )
    resp = out[:, ids.shape[1]:]
    rmask, has_eos = response_mask(resp, tokenizer.eos_token_id)
    model.train(was_training)
    samples = []
    for i in range(len(prompts)):
        n = int(rmask[i].sum())
        samples.append(Sample(enc[i], resp[i, :n].tolist(), bool(has_eos[i])))
    return samples


def missing_for(engine: str) -> list[str]:
    """What this machine lacks to run ``engine`` (empty: it can run)."""
    if engine not in ENGINES:
        return [f"an engine named {engine!r} (choose one of: {', '.join(ENGINES)})"]
    if engine == "transformers":
        return []
    missing = []
    if importlib.util.find_spec("vllm") is None:
        missing.append("the vllm package is not installed (pip install 'rlhf-lab[vllm]')")
    if not torch.cuda.is_available():
        missing.append("no CUDA GPU is visible")
    return missing


def check_engine(engine: str) -> None:
    """Raise a ConfigError naming what is missing when ``engine`` cannot run here."""
    missing = missing_for(engine)
    if missing:
        raise ConfigError(f"--engine {engine} cannot run here: {'; '.join(missing)}. "
                          "Use --engine transformers (the default; it runs on CPU and GPU)")


class TransformersEngine:
    """Samples with the model's own ``generate``, ``batch_size`` prompts at a time."""

    name = "transformers"

    def __init__(self, model: Any, tokenizer: Any, device: torch.device, batch_size: int,
                 autocast_ctx: Callable[[], Any] = nullcontext):
        self.model, self.tok, self.device, self.batch_size, self.autocast_ctx = (
            model, tokenizer, device, batch_size, autocast_ctx)

    def sample(self, prompts: list[Messages], max_new_tokens: int, temperature: float,
               max_prompt_length: int) -> list[Sample]:
        out: list[Sample] = []
        for s in range(0, len(prompts), self.batch_size):
            with self.autocast_ctx():
                out += sample_responses(self.model, self.tok, prompts[s:s + self.batch_size], max_new_tokens,
                                        temperature, self.device, max_prompt_length)
        return out

    def load_weights(self, model: Any) -> None:
        """Nothing to push: it samples from the training model itself."""

    def close(self) -> None:
        self.model = None


class VLLMEngine:  # needs vLLM and a CUDA GPU: exercised by benchmarks/ppo_engines.py, not by the CPU tests
    """A colocated vLLM engine (in this process, on this process's GPU), fed token ids."""

    name = "vllm"

    def __init__(self, model: str, tokenizer: Any, dtype: torch.dtype, seed: int, gpu_memory_utilization: float,
                 max_model_len: int):
        check_engine("vllm")
        # One engine per process, in-process (the weights can be pushed into it), on this process's GPU:
        # vLLM's torchrun-compatible launcher reads torchrun's variables; a lone process gets its own.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        if not _under_torchrun():
            os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                               "MASTER_PORT": str(_free_port())})
        from vllm import LLM

        self.tok = tokenizer
        self.llm = LLM(model=model, dtype=dtype, seed=seed, gpu_memory_utilization=gpu_memory_utilization,
                       max_model_len=max_model_len, distributed_executor_backend="external_launcher",
                       skip_tokenizer_init=True,  # it gets token ids and returns token ids
                       generation_config="vllm")  # no extra stop tokens or sampling defaults from the folder

    def sample(self, prompts: list[Messages], max_new_tokens: int, temperature: float,
               max_prompt_length: int) -> list[Sample]:
        from vllm import SamplingParams

        eos = self.tok.eos_token_id
        enc = [encode_prompt(self.tok, m)[-max_prompt_length:] for m in prompts]
        # temperature 0 is greedy in vLLM too; no top-k / top-p (their defaults), stop at EOS only
        params = SamplingParams(n=1, temperature=max(0.0, temperature), max_tokens=max_new_tokens,
                                stop_token_ids=[eos], detokenize=False)
        outs = self.llm.generate([{"prompt_token_ids": ids} for ids in enc], sampling_params=params, use_tqdm=False)
        samples = []
        for ids, o in zip(enc, outs):
            resp = list(o.outputs[0].token_ids)
            has_eos = eos in resp or o.outputs[0].finish_reason == "stop"
            if eos in resp:
                resp = resp[:resp.index(eos) + 1]
            elif has_eos:
                resp.append(eos)
            samples.append(Sample(ids, resp, has_eos))
        return samples

    def load_weights(self, model: Any) -> None:
        """Copy the training policy's current weights into the engine (in place), then drop its
        prefix cache, whose keys and values the old weights computed. Under FSDP every process
        gathers each parameter in turn (``full_tensor``), so every process must call this."""
        try:  # vLLM 0.22-0.31, in-process engine: the model itself
            target = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        except AttributeError:  # later layouts: the documented hook that runs a function on the model
            self.llm.apply_model(lambda m: m.load_weights(policy_weights(model)))
        else:
            target.load_weights(policy_weights(model))
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        self.llm = None
        gc.collect()
        try:
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            if not _under_torchrun():  # under torchrun the process group is the trainer's: keep it
                cleanup_dist_env_and_memory()
        except ImportError:  # pragma: no cover
            pass
        torch.cuda.empty_cache()


def policy_weights(model: Any):
    """(name, tensor) for every parameter under the names of the model's own checkpoint files (what
    vLLM's ``load_weights`` reads): wrappers (DDP, torch.compile, activation checkpointing) left out,
    FSDP shards gathered whole, one at a time (a collective: every process iterates)."""
    model = getattr(model, "module", model)
    for name, p in model.named_parameters():
        for junk in ("_orig_mod.", "_checkpoint_wrapped_module.", "_fsdp_wrapped_module."):
            name = name.replace(junk, "")
        p = p.detach()
        yield name, (p.full_tensor() if hasattr(p, "full_tensor") else p)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def make_engine(engine: str, *, model: Any = None, model_path: str = "", tokenizer: Any, device: torch.device,
                dtype: torch.dtype, batch_size: int, seed: int, max_model_len: int, gpu_memory_utilization: float,
                autocast_ctx: Callable[[], Any] = nullcontext) -> TransformersEngine | VLLMEngine:
    """The engine named ``engine``: transformers samples from ``model``; vLLM loads ``model_path``."""
    check_engine(engine)
    if engine == "vllm":
        return VLLMEngine(model_path, tokenizer, dtype, seed, gpu_memory_utilization, max_model_len)
    return TransformersEngine(model, tokenizer, device, batch_size, autocast_ctx)
