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
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import HuggingFaceStorageReader, HuggingFaceStorageWriter
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions, get_model_state_dict, get_optimizer_state_dict, set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard

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


def save_full_model(model: nn.Module, tok: Any, path: Path) -> None:
    """Gather the full weights on rank 0 and save an ordinary transformers folder (collective)."""
    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
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
    """Save / load a sharded model and its optimizer into a checkpoint folder (every process)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer):
        self.model, self.optimizer = model, optimizer

    def _flat(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {f"model.{k}": v for k, v in get_model_state_dict(self.model).items()}
        osd = get_optimizer_state_dict(self.model, self.optimizer)  # initialises empty AdamW state
        for fqn, st in osd["state"].items():
            for key, val in st.items():
                tensors[f"optim.{fqn}.{key}"] = val
        return tensors, osd

    def save(self, folder: Path) -> None:
        tensors, osd = self._flat()
        dcp.save(tensors, storage_writer=HuggingFaceStorageWriter(str(folder / "sharded"), save_distributed=True))
        if is_main():
            (folder / "optimizer.json").write_text(json.dumps({"param_groups": osd["param_groups"]}), encoding="utf-8")

    def load(self, folder: Path) -> None:
        if not (folder / "sharded").is_dir():
            raise TrainerError(f"{folder} holds no sharded state: it was not written by an --fsdp run "
                               "(resume it without --fsdp, or start a new run folder)")
        tensors, osd = self._flat()
        dcp.load(tensors, storage_reader=HuggingFaceStorageReader(str(folder / "sharded")))  # in place
        set_model_state_dict(self.model, {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        for fqn, st in osd["state"].items():
            for key in st:
                st[key] = tensors[f"optim.{fqn}.{key}"]
        osd["param_groups"] = json.loads((folder / "optimizer.json").read_text(encoding="utf-8"))["param_groups"]
        set_optimizer_state_dict(self.model, self.optimizer, osd)
