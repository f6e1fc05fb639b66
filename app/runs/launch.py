"""What the worker does around a trainer process: before it, turn the run's inputs into the
trainer's config file; after a successful exit, record what the run made.

``prepare`` and ``complete`` are the worker's only two calls into the rest of the app; the
worker itself (``app/worker.py``) owns the process: launching, heartbeats, retries, cancel.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy.orm import Session

from app.config import Settings
from app.errors import AppError
from app.runs.models import Run


class InputError(AppError):
    """A run's inputs cannot be used (a dataset file changed or vanished, a model folder is
    missing): retrying will not help, so the run fails at once with this message."""

    status_code = 422
    title = "Run input unusable"


def output_dir(folder: Path) -> Path:
    """Where the trainer writes: config.json, metrics.jsonl, checkpoints/, model/ (or completions)."""
    return folder / "output"


def prepare(db: Session, settings: Settings, run: Run, folder: Path) -> Path:
    """Write ``<folder>/run_config.json``, the trainer's --config, and return its path."""
    config = {**run.config, "out": str(output_dir(folder))}
    if run.kind.value == "generate":
        config["out"] = str(output_dir(folder) / "completions.jsonl")
    path = folder / "run_config.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def complete(db: Session, settings: Settings, run: Run, folder: Path) -> str:
    """Record what a run that exited 0 made; returns a line for the run's message."""
    return ""
