"""Resumable checkpoints, all in safetensors + JSON (nothing is ever unpickled).

A checkpoint folder ``<out>/checkpoints/step-N/`` holds:
- one model folder per trained module (``save_pretrained``: safetensors + config),
- ``optimizer.safetensors`` (every tensor of the optimizer state) + ``optimizer.json`` (the rest),
- ``state.json``: step, epoch, scheduler state, Python RNG, run config, extra trainer state,
- ``rng.safetensors``: torch CPU (and CUDA) generator states,
- extra tensors (e.g. EMA weights) in ``extra.safetensors``.

Under ``--fsdp`` (``sharded=``, see :mod:`trainers.sharding`) the model folders and optimizer
files are replaced by ``sharded/`` (every process writes its shards) and ``optimizer.json``, and
every process writes its own RNG state (``rng-rank-N.safetensors``).
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from trainers.common import barrier, is_main
from trainers.errors import TrainerError


def _optimizer_to_files(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            name = f"{idx}.{key}"
            if torch.is_tensor(val):
                tensors[name] = val.detach().contiguous().cpu()
            else:
                scalars[name] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_files(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, val in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = val
    for name, val in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = val
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(
    ckpt_dir: str | Path,
    models: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    step: int,
    state: dict[str, Any],
    tokenizer: Any = None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    keep_last: int = 2,
    sharded: Any = None,
) -> Path:
    """Write a checkpoint (rank 0; with ``sharded``, a :class:`trainers.sharding.ShardedState`,
    every process writes its shards first) and prune older ones, keeping ``keep_last``."""
    path = Path(ckpt_dir) / f"step-{step:08d}"
    tmp = path.with_name(path.name + ".tmp")
    if is_main():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    if sharded is not None:
        barrier()
        sharded.save(tmp)
        barrier()
    if is_main():
        for name, model in models.items():
            model = getattr(model, "module", model)
            model.save_pretrained(tmp / name, safe_serialization=True)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp / name)
        if sharded is None:
            tensors, meta = _optimizer_to_files(optimizer)
            save_file(tensors, str(tmp / "optimizer.safetensors"))
            (tmp / "optimizer.json").write_text(json.dumps(meta), encoding="utf-8")
        rng = {"torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                rng[f"torch_cuda_{i}"] = s
        save_file(rng, str(tmp / "rng.safetensors"))
        if extra_tensors:
            save_file({k: v.detach().contiguous().cpu() for k, v in extra_tensors.items()},
                      str(tmp / "extra.safetensors"))
        py_state = random.getstate()
        full = {
            "step": step,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "python_rng": [py_state[0], list(py_state[1]), py_state[2]],
            **state,
        }
        (tmp / "state.json").write_text(json.dumps(full, indent=1), encoding="utf-8")
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
        old = sorted(p for p in Path(ckpt_dir).glob("step-*") if not p.name.endswith(".tmp"))
        for p in old[:-keep_last] if keep_last > 0 else []:
            if p != path:
                shutil.rmtree(p, ignore_errors=True)
    barrier()
    return path


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    found = sorted(p for p in Path(ckpt_dir).glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))
    return found[-1] if found else None


def load_checkpoint(path: str | Path, optimizer: torch.optim.Optimizer, scheduler: Any,
                    sharded: Any = None) -> dict[str, Any]:
    """Restore optimizer, scheduler and RNG in place; return the JSON state (step, extra).
    With ``sharded`` (a :class:`trainers.sharding.ShardedState`) it restores the sharded model
    and optimizer too (on every process)."""
    p = Path(path)
    if not (p / "state.json").is_file():
        raise TrainerError(f"not a checkpoint folder: {p}")
    state = json.loads((p / "state.json").read_text(encoding="utf-8"))
    rng = load_file(str(p / "rng.safetensors"))
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [rng[k] for k in sorted(k for k in rng if k.startswith("torch_cuda_"))]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    a, b, c = state["python_rng"]
    random.setstate((a, tuple(b), c))
    if sharded is not None:  # after rank 0's RNG: it restores each process's own RNG state
        sharded.load(p)
    else:
        meta = json.loads((p / "optimizer.json").read_text(encoding="utf-8"))
        _optimizer_from_files(optimizer, load_file(str(p / "optimizer.safetensors")), meta)
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if is_main():  # the run's log says where an attempt went on from
        print(f"resuming from checkpoint {p.name} (step {state['step']})", file=sys.stderr, flush=True)
    return state


def load_extra(path: str | Path) -> dict[str, torch.Tensor]:
    f = Path(path) / "extra.safetensors"
    return load_file(str(f)) if f.is_file() else {}
