"""Shared plumbing: seeding, device and dtype, torch.distributed, metrics stream, schedules."""

from __future__ import annotations

import json
import math
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.distributed as dist


def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


# ---------------------------------------------------------------- distributed


def init_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device). Uses torchrun's env vars when present: NCCL on GPU, gloo on CPU."""
    try:  # our own tqdm bars show progress; silence transformers' loading/saving bars
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (a copy; identity in a single process)."""
    x = x.detach().clone()
    if dist.is_initialized():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shard(items: list, rank: int, world: int) -> list:
    """This rank's contiguous slice of a global batch (sizes differ by at most one)."""
    n = len(items)
    start = rank * n // world
    end = (rank + 1) * n // world
    return items[start:end]


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on a GPU that supports it, fp32 elsewhere."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    return table[name]


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed precision on GPU when training in bf16/fp16 with fp32 master weights; else nothing."""
    if device.type == "cuda" and dtype != torch.float32:
        return torch.autocast("cuda", dtype=dtype)
    return nullcontext()


def release_freed_memory(device: torch.device) -> bool:
    """Give the memory that freed CPU tensors left in glibc's heap back to the OS (``malloc_trim``).

    Training passes of varying widths (length-sorted micro-batches) free activation buffers of
    many sizes; glibc keeps them, fragmented, and the process's resident memory grows with each
    new width. Called once per optimiser step on CPU. Returns whether anything was called (not on
    a GPU, where activations live in CUDA memory, nor without glibc)."""
    global _malloc_trim
    if device.type != "cpu":
        return False
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
            _malloc_trim = False
    if not _malloc_trim:
        return False
    _malloc_trim(0)
    return True


_malloc_trim: Any = None


# ---------------------------------------------------------------- schedules


def cosine_lr_lambda(total_steps: int, warmup_steps: int = 0, final_ratio: float = 0.1):
    """Linear warm-up, then cosine decay from 1 to ``final_ratio`` at ``total_steps``."""

    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


# ---------------------------------------------------------------- metrics


class Metrics:
    """Appends ``{"step", "name", "value", "time"}`` lines to ``<out>/metrics.jsonl`` (rank 0)."""

    def __init__(self, out_dir: str | Path, resume: bool = False):
        self.path = Path(out_dir) / "metrics.jsonl"
        self.enabled = is_main()
        self.history: list[dict[str, Any]] = []
        # Set by a training loop to its last step: each log() then also writes a "progress"
        # row (0..1), which the app's worker turns into the run's live progress bar.
        self.total_steps: int | None = None
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not resume:
                self.path.write_text("", encoding="utf-8")

    def log(self, step: int, values: dict[str, float]) -> None:
        now = time.time()
        rows = [{"step": int(step), "name": k, "value": float(v), "time": now} for k, v in values.items()]
        if self.total_steps:
            rows.append({"step": int(step), "name": "progress", "value": min(1.0, step / self.total_steps), "time": now})
        self.history.extend(rows)
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as fh:
                for r in rows:
                    fh.write(json.dumps(r) + "\n")

    def truncate_after(self, step: int) -> None:
        """On resume, drop lines of steps after the checkpoint so the stream has no duplicates."""
        if not self.enabled or not self.path.exists():
            return
        keep = [ln for ln in self.path.read_text(encoding="utf-8").splitlines()
                if ln.strip() and json.loads(ln)["step"] <= step]
        self.path.write_text("".join(k + "\n" for k in keep), encoding="utf-8")


def read_metrics(out_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(out_dir) / "metrics.jsonl"
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def metric_series(rows: Iterable[dict[str, Any]], name: str) -> list[tuple[int, float]]:
    return [(r["step"], r["value"]) for r in rows if r["name"] == name]


def progress(total: int, desc: str, initial: int = 0):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, initial=initial, disable=not is_main() or bool(os.environ.get("TRAINERS_NO_PROGRESS")),
                dynamic_ncols=True)
