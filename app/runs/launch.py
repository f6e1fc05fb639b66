"""What the worker does around a trainer process: before it, turn the run's inputs into the
trainer's config file; after a successful exit, record what the run made.

``prepare`` and ``complete`` are the worker's only two calls into the rest of the app; the
worker itself (``app/worker.py``) owns the process: launching, heartbeats, retries, cancel.

- prepare: every registered model becomes its weights folder (or hub name), every frozen dataset
  its file, after checking the file still has the sha256 it was frozen with (recorded on the
  run's input row); a generate run also gets its prompts file, written from its selection.
- complete: sft/rm/ppo/init-tiny runs register their model with its headline metrics; generate
  runs import their samples linked to the registered policies, and build the ranking batch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.errors import AppError
from app.labeling.batches import BatchOptions, create_batch
from app.labeling.models import TaskKind
from app.prompts.models import Completion
from app.prompts.service import import_completions
from app.registry import service as registry
from app.runs.models import Run, RunKind
from app.runs.planning import prompt_selection, run_inputs
from app.runs.specs import SPECS, GenerationPlan

# The metrics a model page shows, taken from the last value the trainer logged.
HEADLINE_PREFIXES = ("valid/", "eval/", "rm/bias")


class InputError(AppError):
    """A run's inputs cannot be used (a dataset file changed or vanished, a model folder is
    missing): retrying will not help, so the run fails at once with this message."""

    status_code = 422
    title = "Run input unusable"


def output_dir(folder: Path) -> Path:
    """Where the trainer writes: config.json, metrics.jsonl, checkpoints/, model/ (or completions)."""
    return folder / "output"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def prepare(db: Session, settings: Settings, run: Run, folder: Path) -> Path:
    """Write ``<folder>/run_config.json``, the trainer's --config, and return its path."""
    config = dict(run.config)
    models: list[tuple[str, str]] = []  # generate: (weights, registered name)
    for item, model, dataset in run_inputs(db, run.id):
        if model is not None:
            where = registry.weights_location(settings, model.path or "")
            if isinstance(where, Path) and not where.exists():
                raise InputError(f"{item.role}: the weights of model {model.name} are missing ({model.path}).")
            if SPECS[run.kind].input(item.role).many:  # generate and eval: several models in turn
                models.append((str(where), model.name))
            else:
                config[item.role] = str(where)
        elif dataset is not None:
            path = Path(settings.artifact_dir).resolve() / dataset.path
            if not path.is_file():
                raise InputError(f"{item.role}: the file of dataset {dataset.name} is missing ({dataset.path}).")
            digest = sha256_of(path)
            if digest != dataset.sha256:
                raise InputError(f"{item.role}: the file of dataset {dataset.name} changed since it was frozen "
                                 f"(sha256 {digest[:12]}..., frozen as {dataset.sha256[:12]}...).")
            item.sha256 = digest
            config[item.role] = str(path)
    out = output_dir(folder)
    config["out"] = str(out)
    if run.kind == RunKind.eval:
        config.update(model=",".join(w for w, _ in models), model_name=",".join(n for _, n in models))
    if run.kind == RunKind.generate:
        plan = GenerationPlan(**(run.generation or {}))
        config.update(
            model=",".join(w for w, _ in models), model_name=",".join(n for _, n in models),
            k=plan.samples_per_model(len(models)), prompts=str(write_prompts(db, plan, folder / "prompts.jsonl")),
            out=str(out / "completions.jsonl"),
        )
    if SPECS[run.kind].output_kind is not None and run.kind != RunKind.init_tiny:
        config.setdefault("resume", True)
    db.flush()
    path = folder / "run_config.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def write_prompts(db: Session, plan: GenerationPlan, path: Path) -> Path:
    """The selected prompts as a prompts file (docs/formats.md 'prompts'), with their ids."""
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for prompt in db.scalars(prompt_selection(db, plan)):
            row = {"prompt_id": prompt.id, "prompt": prompt.text, "split": str(prompt.split)}
            if prompt.messages:
                row["messages"] = prompt.messages
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    if n == 0:
        raise InputError("No active prompts match this run's selection any more.")
    return path


def last_values(metrics_file: Path, prefixes: tuple[str, ...] = HEADLINE_PREFIXES) -> dict[str, float]:
    values: dict[str, float] = {}
    if metrics_file.is_file():
        for line in metrics_file.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and str(row.get("name", "")).startswith(prefixes):
                values[row["name"]] = float(row["value"])
    return values


def complete(db: Session, settings: Settings, run: Run, folder: Path) -> str:
    """Record what a run that exited 0 made; returns a line for the run's message."""
    out = output_dir(folder)
    if run.kind == RunKind.generate:
        return _complete_generate(db, settings, run, out / "completions.jsonl")
    if run.kind == RunKind.eval:
        return _complete_eval(db, run, out / "results.json")
    spec = SPECS[run.kind]
    weights = out if run.kind == RunKind.init_tiny else out / "model"
    if not (weights / "config.json").is_file():
        return "the trainer stopped before its final model (max_steps): nothing registered"
    rel = weights.resolve().relative_to(Path(settings.artifact_dir).resolve())
    model = registry.record_output(db, run=run, name=run.output_name or f"{run.kind.value}-{run.id}",
                                   kind=spec.output_kind, path=str(rel), metrics=last_values(out / "metrics.jsonl"))
    return f"registered model {model.name} ({model.kind.value})"


def _complete_generate(db: Session, settings: Settings, run: Run, samples: Path) -> str:
    records = [json.loads(line) for line in samples.read_text(encoding="utf-8").splitlines() if line.strip()]
    summary = import_completions(db, records, settings=settings)
    plan = GenerationPlan(**(run.generation or {}))
    line = f"imported {summary.imported} completions ({summary.duplicates} duplicates dropped) for {summary.prompts} prompts"
    if not plan.create_batch:
        return line
    # An evaluation needs every model's response to every prompt, also one it gave before.
    ids = summary.completion_ids + (summary.matched_ids if plan.purpose == "evaluation" else [])
    items = mix_models(db, ids, plan.k)
    if not items:
        return line + f"; no prompt got {plan.k} distinct responses, so no ranking batch was built"
    name = plan.batch_name or f"{run.name} (run {run.id})"
    batch = create_batch(db, BatchOptions(
        name=name, kind=TaskKind.ranking, k=plan.k, overlap_share=plan.overlap_share, overlap_count=plan.overlap_count,
        priority=plan.priority, seed=run.id, purpose=plan.purpose, heldout_only=plan.heldout_only,
    ), items=items)
    run.output_batch_id = batch.id
    db.flush()
    if plan.purpose == "evaluation":
        from app.evals.service import attach_batch

        attach_batch(db, run, batch)
        return line + f"; evaluation batch {batch.name!r} with {len(items)} tasks of {plan.k} responses"
    return line + f"; ranking batch {batch.name!r} with {len(items)} tasks of K={plan.k}"


AUTO_METRICS = ("rm_score", "kl", "response_length", "corpus_nll", "corpus_ppl")


def _complete_eval(db: Session, run: Run, results_file: Path) -> str:
    """Automatic evaluation results go into the registry, beside the runs' own metrics:
    ``auto/<metric>`` on each policy, ``auto/rm_accuracy[_train|_heldout]`` on the RM."""
    results = json.loads(results_file.read_text(encoding="utf-8"))
    inputs = run_inputs(db, run.id)
    by_name = {model.name: model for item, model, _ in inputs if model is not None and item.role == "model"}
    lines = []
    for name, values in (results.get("models") or {}).items():
        model = by_name.get(name)
        numbers = {f"auto/{k}": v for k, v in values.items() if k in AUTO_METRICS and v is not None}
        if model is not None and numbers:
            registry.set_metrics(db, model, numbers, run_id=run.id)
            lines.append(name + ": " + ", ".join(f"{k[5:]} {v:.4g}" for k, v in numbers.items()))
    accuracy = results.get("rm_accuracy")
    rm = next((model for item, model, _ in inputs if item.role == "reward_model"), None)
    if accuracy and rm is not None:
        numbers = {("auto/rm_accuracy" if group == "all" else f"auto/rm_accuracy_{group}"): value
                   for group, value in accuracy.items() if group in ("all", "train", "heldout") and value is not None}
        registry.set_metrics(db, rm, numbers, run_id=run.id)
        lines.append(rm.name + ": " + ", ".join(f"{k[5:]} {v:.3f}" for k, v in numbers.items()))
    return "recorded in the registry: " + "; ".join(lines) if lines else "no results to record"


def mix_models(db: Session, completion_ids: list[int], k: int) -> dict[int, list[int]]:
    """Per prompt, K completions taken from the models in turn (A, B, A, B ...), so that every task
    of a multi-model run puts the models side by side; prompts with fewer than K are left out."""
    per_prompt: dict[int, dict[int | None, list[int]]] = {}
    for cid, pid, mid in db.execute(
        select(Completion.id, Completion.prompt_id, Completion.model_id).where(Completion.id.in_(set(completion_ids)))
        .order_by(Completion.id)
    ):
        per_prompt.setdefault(pid, {}).setdefault(mid, []).append(cid)
    items: dict[int, list[int]] = {}
    for pid, by_model in per_prompt.items():
        queues = [list(v) for _, v in sorted(by_model.items(), key=lambda kv: kv[0] or 0)]
        mixed: list[int] = []
        while len(mixed) < k and any(queues):
            for q in queues:
                if q and len(mixed) < k:
                    mixed.append(q.pop(0))
        if len(mixed) == k:
            items[pid] = mixed
    return items
