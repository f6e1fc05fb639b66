"""``--fsdp``: torch's FSDP2 (``fully_shard``) for the trainers.

Each transformer block, then the whole model, is sharded across the run's processes: every
process holds 1/N of the parameters, of their gradients and of the AdamW state, and gathers a
block's full weights only while that block runs. Gradients are reduce-scattered (averaged over
processes, as DDP does), so the loop's loss scaling is the same as under DDP.

Checkpoints keep the layout of :mod:`trainers.checkpoint` (``state.json``, ``rng.safetensors``),
with the model and optimizer tensors written by every process through
``torch.distributed.checkpoint`` into ``sharded/`` as safetensors files (the shard offsets are
JSON in the safetensors headers: nothing is pickled), plus ``optimizer.json`` (param groups).
A checkpoint can be resumed on another number of processes (DCP reshards on load).
The final model is gathered on rank 0 and saved as an ordinary transformers folder.

A sharded model is marked as FSDP-managed for transformers, so ``generate`` runs with
``synced_gpus``: a process whose samples have all ended keeps running (idle) forward passes until
every process is done, as each pass all-gathers the blocks' weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint import HuggingFaceStorageReader, HuggingFaceStorageWriter
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions, get_model_state_dict, get_optimizer_state_dict, set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

from trainers.common import is_main
from trainers.errors import TrainerError


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The modules named in ``_no_split_modules`` of the model or its transformers model (a
    :class:`trainers.models.ScalarHeadModel` wraps one): its decoder / encoder layers."""
    names = {n for m in model.modules() for n in (getattr(m, "_no_split_modules", None) or [])}
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        raise TrainerError(f"--fsdp: no transformer blocks found in {type(model).__name__} "
                           "(it lists no _no_split_modules)")
    return blocks


def shard_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Shard ``model`` in place (each block, then the root) over all processes; returns it."""
    if not dist.is_initialized():
        raise TrainerError("--fsdp needs several processes: launch with torchrun --nproc-per-node N")
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    model._fsdp_architecture = type(model).__name__  # fully_shard swaps the root's class for FSDP<name>
    for block in transformer_blocks(model):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    model._is_fsdp_managed_module = True  # transformers' generate then decodes in lock-step (synced_gpus)
    return model


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def fsdp_micro_batches(batch_len: int, world: int, micro_batch_size: int) -> int:
    """Forward passes each process runs for a global batch: the same on every process, since each
    pass all-gathers every block's weights (the largest shard's count; others pad with idle passes)."""
    largest = -(-batch_len // world)
    return -(-largest // micro_batch_size)


def check_resume(checkpoint: Path | None, fsdp: bool) -> None:
    """Refuse to resume an --fsdp checkpoint without --fsdp (it holds no model folder)."""
    if checkpoint is not None and not fsdp and (checkpoint / "sharded").is_dir():
        raise TrainerError(f"{checkpoint} was written by an --fsdp run: resume it with --fsdp "
                           "(on any number of processes), or start a new run folder")


def save_full_model(model: nn.Module, tok: Any, path: Path, weights: dict[str, torch.Tensor] | None = None) -> None:
    """Gather the full weights on rank 0 and save an ordinary transformers folder (collective).
    ``weights`` (sharded tensors under the model's names, e.g. PPO's EMA) replace the model's own."""
    if weights is None:
        sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:  # full_tensor() all-gathers each one on every process
        sd = {k: (v.full_tensor() if isinstance(v, DTensor) else v).cpu() for k, v in weights.items()}
    if is_main():
        hf = getattr(model, "hf", model)  # a ScalarHeadModel saves its transformers model
        prefix = "hf." if hf is not model else ""
        shutil.rmtree(path, ignore_errors=True)
        hf.save_pretrained(path, state_dict={k[len(prefix):]: v for k, v in sd.items()}, safe_serialization=True)
        arch = getattr(model, "_fsdp_architecture", None) if hf is model else None
        if arch:  # save_pretrained records the class name, here FSDP<name>
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
            config["architectures"] = [arch]
            (path / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if tok is not None:
            tok.save_pretrained(path)
    dist.barrier()


class ShardedState:
    """Save / load a sharded model and its optimizer into a checkpoint folder (every process).

    ``model`` may be a container of several sharded models trained by one optimizer (PPO's
    ``nn.ModuleDict(policy=..., value=...)``); ``extra`` is a dict of further sharded tensors (PPO's
    EMA weights), saved under ``extra.<name>`` and restored into that dict. Each process also keeps
    its own RNG state (``rng-rank-N.safetensors``): processes that sample different data consume
    their generators differently, and rank 0's ``rng.safetensors`` holds only its own."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 extra: dict[str, torch.Tensor] | None = None):
        self.model, self.optimizer, self.extra = model, optimizer, extra

    def _flat(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {f"model.{k}": v for k, v in get_model_state_dict(self.model).items()}
        tensors.update({f"extra.{k}": v for k, v in (self.extra or {}).items()})
        osd = get_optimizer_state_dict(self.model, self.optimizer)  # initialises empty AdamW state
        for fqn, st in osd["state"].items():
            for key, val in st.items():
                tensors[f"optim.{fqn}.{key}"] = val
        return tensors, osd

    def save(self, folder: Path) -> None:
        tensors, osd = self._flat()
        dcp.save(tensors, storage_writer=HuggingFaceStorageWriter(str(folder / "sharded"), save_distributed=True))
        rng = {"torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["torch_cuda"] = torch.cuda.get_rng_state()
        save_file(rng, str(folder / f"rng-rank-{dist.get_rank()}.safetensors"))
        if is_main():
            (folder / "optimizer.json").write_text(json.dumps({"param_groups": osd["param_groups"]}), encoding="utf-8")

    def load(self, folder: Path) -> None:
        if not (folder / "sharded").is_dir():
            raise TrainerError(f"{folder} holds no sharded state: it was not written by an --fsdp run "
                               "(resume it without --fsdp, or start a new run folder)")
        tensors, osd = self._flat()
        dcp.load(tensors, storage_reader=HuggingFaceStorageReader(str(folder / "sharded")))  # in place
        set_model_state_dict(self.model, {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        for k in self.extra or {}:
            self.extra[k] = tensors[f"extra.{k}"]
        for fqn, st in osd["state"].items():
            for key in st:
                st[key] = tensors[f"optim.{fqn}.{key}"]
        osd["param_groups"] = json.loads((folder / "optimizer.json").read_text(encoding="utf-8"))["param_groups"]
        set_optimizer_state_dict(self.model, self.optimizer, osd)
        rng_file = folder / f"rng-rank-{dist.get_rank()}.safetensors"
        if rng_file.is_file():  # absent for ranks a resharded resume adds: they keep rank 0's state
            rng = load_file(str(rng_file))
            torch.set_rng_state(rng["torch_cpu"])
            if "torch_cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state(rng["torch_cuda"])
