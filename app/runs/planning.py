"""Launching a run from registered models and frozen datasets, validated before anything is queued.

``launch_run`` is what the run form, ``POST /api/runs`` and ``rlhf runs create`` call. It checks
every input (exists, right kind, file present) and every option with the trainer's own config
dataclass, so a bad run is refused with a 422 naming the field, and nothing is queued.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.datasets.models import Dataset
from app.errors import Conflict, InvalidInput
from app.labeling.models import Batch, Task
from app.prompts.models import Prompt, PromptStatus
from app.registry import service as registry
from app.registry.models import RegisteredModel
from app.runs import service as runs
from app.runs.models import Run, RunInput, RunKind
from app.runs.specs import PLAN_KEYS, SPECS, GenerationPlan, InputSpec, RunSpec
from app.users.models import User
from trainers.config import _coerce, build_config
from trainers.errors import ConfigError

InputRef = str | int


@dataclass
class RunRequest:
    kind: str
    name: str = ""
    inputs: dict[str, InputRef | list[InputRef]] = field(default_factory=dict)  # role -> model/dataset id or name
    options: dict[str, Any] = field(default_factory=dict)  # trainer options (and, for generate, the plan)
    gpus: int = 0  # the run's total; alone: a single-node run
    output_name: str | None = None
    nodes: int = 1
    gpus_per_node: int | None = None  # None: gpus / nodes


def spec_for(kind: str | RunKind) -> RunSpec:
    try:
        return SPECS[RunKind(kind)]
    except ValueError:
        raise InvalidInput(f"Unknown run kind {kind!r}: choose one of {', '.join(k.value for k in SPECS)}.", field="kind") from None


def find_dataset(db: Session, ref: InputRef, field_name: str) -> Dataset:
    ds = None
    if isinstance(ref, int) or (isinstance(ref, str) and ref.strip().isdigit()):
        ds = db.get(Dataset, int(ref))
    if ds is None and isinstance(ref, str):
        ds = db.scalar(select(Dataset).where(Dataset.name == ref.strip()))
    if ds is None:
        raise InvalidInput(f"No frozen dataset {ref!r}: freeze an export (Datasets page or `rlhf export ... --freeze NAME`).", field=field_name)
    return ds


def _resolve_input(db: Session, settings: Settings, spec: InputSpec, ref: InputRef) -> RegisteredModel | Dataset:
    if isinstance(ref, bool) or not isinstance(ref, (str, int)) or (isinstance(ref, str) and not ref.strip()):
        raise InvalidInput(f"{spec.role}: give a registered model or dataset by name or id.", field=spec.role)
    if spec.is_model:
        model = registry.find_model(db, ref, spec.role)
        if model.kind not in spec.model_kinds:
            raise InvalidInput(f"{spec.role}: {model.name} is a {model.kind.value} model; this needs {spec.accepts()}.", field=spec.role)
        if not model.path:
            raise InvalidInput(f"{spec.role}: {model.name} has no weights here (an external model).", field=spec.role)
        return model
    ds = find_dataset(db, ref, spec.role)
    if ds.kind not in spec.dataset_kinds:
        raise InvalidInput(f"{spec.role}: dataset {ds.name} holds {ds.kind.value} rows; this needs {spec.accepts()}.", field=spec.role)
    if not (Path(settings.artifact_dir) / ds.path).is_file():
        raise InvalidInput(f"{spec.role}: the file of dataset {ds.name} is missing from the artifact folder.", field=spec.role)
    return ds


def _resolve_inputs(db: Session, settings: Settings, spec: RunSpec, given: dict) -> list[tuple[str, RegisteredModel | Dataset]]:
    unknown = sorted(set(given) - {i.role for i in spec.inputs})
    if unknown:
        roles = ", ".join(i.role for i in spec.inputs) or "none"
        raise InvalidInput(f"A {spec.kind.value} run has no input {unknown[0]!r} (its inputs: {roles}).", field=unknown[0])
    chosen = []
    for item in spec.inputs:
        value = given.get(item.role)
        refs = value if isinstance(value, list) else ([] if value in (None, "") else [value])
        if not refs:
            if item.required:
                raise InvalidInput(f"{item.role}: choose {item.accepts()}.", field=item.role)
            continue
        if len(refs) > 1 and not item.many:
            raise InvalidInput(f"{item.role}: choose one {item.accepts()[2:]}.", field=item.role)
        resolved = [_resolve_input(db, settings, item, r) for r in refs]
        if len({x.id for x in resolved}) != len(resolved):
            raise InvalidInput(f"{item.role}: the same model is chosen twice.", field=item.role)
        chosen.extend((item.role, x) for x in resolved)
    return chosen


def check_options(spec: RunSpec, options: dict[str, Any], placeholders: dict[str, str]) -> dict[str, Any]:
    """The trainer options, coerced to their types by the trainer's own rules; the first bad key
    is refused with its name. ``placeholders`` stand in for inputs and the output folder so the
    config's own ``validate()`` runs too (e.g. PPO's ptx_coef > 0 needs pretraining data)."""
    fields = {f.name for f in spec.option_fields()}
    hints = typing.get_type_hints(spec.config_class)
    clean: dict[str, Any] = {}
    for key, value in options.items():
        if key in spec.managed:
            raise InvalidInput(f"{key}: set by the worker (the run folder), not by you.", field=key)
        if spec.input(key) is not None:
            raise InvalidInput(f"{key}: choose it as an input (a registered model or frozen dataset), not a path.", field=key)
        if key not in fields:
            raise InvalidInput(f"Unknown option {key!r} for a {spec.kind.value} run (`python -m trainers {spec.kind.value} --help` lists them).", field=key)
        try:
            clean[key] = _coerce(key, hints[key], value)
        except ConfigError as exc:
            raise InvalidInput(f"{key}: {str(exc).split(': ', 1)[-1]}", field=key) from None
    try:
        build_config(spec.config_class, {**placeholders, **clean})
    except ConfigError as exc:
        raise InvalidInput(str(exc), field=_field_named(str(exc), list(clean), [i.role for i in spec.inputs], fields)) from None
    return clean


def _field_named(message: str, given: list[str], inputs: list[str], fields: set[str]) -> str:
    """The option a trainer's validation message is about: one it names (as key or --flag) that
    the user set, else a missing input it names, else the first option it names."""
    def position(name: str) -> int:
        hits = [message.find(n) for n in (name, name.replace("_", "-")) if re.search(rf"(?<!\w){re.escape(n)}(?![\w-])", message)]
        return min(hits) if hits else -1

    for group in (given, inputs, sorted(fields)):
        named = sorted((position(n), n) for n in group if position(n) >= 0)
        if named:
            return named[0][1]
    return "options"


def _check_plan(db: Session, plan_values: dict[str, Any], n_models: int) -> GenerationPlan:
    try:
        plan = GenerationPlan(**plan_values)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"]) or "options"
        raise InvalidInput(f"{name}: {err['msg']}", field=name) from None
    if plan.purpose == "evaluation":
        if not 2 <= n_models <= 9:
            raise InvalidInput("model: an evaluation compares 2 to 9 models.", field="model")
        plan.k, plan.create_batch = n_models, True  # one response per model and prompt
    elif plan.create_batch and not 4 <= plan.k <= 9:
        raise InvalidInput("k: a ranking batch needs 4 to 9 responses per prompt.", field="k")
    if plan.create_batch and plan.batch_name and db.scalar(select(Batch.id).where(Batch.name == plan.batch_name)):
        raise Conflict(f"A batch named {plan.batch_name!r} already exists.", field="batch_name")
    if not db.scalar(select(func.count()).select_from(prompt_selection(db, plan).subquery())):
        raise InvalidInput("No active prompts match this selection (split, category, source, batch).", field="split")
    return plan


def prompt_selection(db: Session, plan: GenerationPlan):
    """The prompts a generate run samples for, oldest first."""
    q = select(Prompt).where(Prompt.status == PromptStatus.active)
    if plan.split:
        q = q.where(Prompt.split == plan.split)
    if plan.category:
        q = q.where(Prompt.category == plan.category)
    if plan.source:
        q = q.where(Prompt.source == plan.source)
    if plan.prompt_batch:
        ref = plan.prompt_batch.strip()
        batch_id = int(ref) if ref.isdigit() else db.scalar(select(Batch.id).where(Batch.name == ref))
        if batch_id is None or db.get(Batch, batch_id) is None:
            raise InvalidInput(f"prompt_batch: no batch {ref!r}.", field="prompt_batch")
        q = q.where(Prompt.id.in_(select(Task.prompt_id).where(Task.batch_id == batch_id)))
    q = q.order_by(Prompt.id)
    return q.limit(plan.limit) if plan.limit else q


def launch_run(db: Session, settings: Settings, request: RunRequest, *, actor: User | None = None) -> Run:
    """Validate a run request completely, then queue the run with its inputs."""
    spec = spec_for(request.kind)
    runs.resources(gpus=request.gpus, nodes=request.nodes, gpus_per_node=request.gpus_per_node)
    chosen = _resolve_inputs(db, settings, spec, request.inputs)
    options = dict(request.options)
    plan = None
    if spec.kind == RunKind.generate:
        plan_values = {k: options.pop(k) for k in list(options) if k in PLAN_KEYS}
        n_models = sum(1 for role, _ in chosen if role == "model")
        plan = _check_plan(db, plan_values, n_models)
    placeholders = {role: "input" for role, _ in chosen}
    placeholders["out"] = "out/completions.jsonl" if spec.kind == RunKind.generate else "out"
    if spec.kind == RunKind.generate:
        placeholders["prompts"] = "prompts.jsonl"
    trainer_options = check_options(spec, options, placeholders)
    output_name = None
    if spec.output_kind is not None:
        output_name = (request.output_name or "").strip() or None
        if output_name:
            registry.check_name(output_name, "output_name")
            if registry.name_taken(db, output_name):
                raise Conflict(f"A model named {output_name!r} is already registered; choose another output name.", field="output_name")
    run = runs.create_run(db, kind=spec.kind, name=request.name, config=trainer_options, gpus=request.gpus,
                           nodes=request.nodes, gpus_per_node=request.gpus_per_node, actor=actor)
    run.output_name = output_name or f"{spec.kind.value}-{run.id}"
    run.generation = plan.model_dump(mode="json") if plan else None
    for role, target in chosen:
        is_model = isinstance(target, RegisteredModel)
        db.add(RunInput(run_id=run.id, role=role, model_id=target.id if is_model else None,
                        dataset_id=None if is_model else target.id))
    db.flush()
    return run


def run_inputs(db: Session, run_id: int) -> list[tuple[RunInput, RegisteredModel | None, Dataset | None]]:
    rows = db.scalars(select(RunInput).where(RunInput.run_id == run_id).order_by(RunInput.id)).all()
    return [(r, db.get(RegisteredModel, r.model_id) if r.model_id else None, db.get(Dataset, r.dataset_id) if r.dataset_id else None)
            for r in rows]


def output_model(db: Session, run_id: int) -> RegisteredModel | None:
    return db.scalar(select(RegisteredModel).where(RegisteredModel.run_id == run_id))

