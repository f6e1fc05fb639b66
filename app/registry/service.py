"""The model registry: register base models, record what runs make, read lineage and metrics."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.config import Settings
from app.datasets.models import Dataset
from app.errors import Conflict, InvalidInput, NotFound
from app.registry.models import ModelKind, ModelMetric, RegisteredModel
from app.runs.models import Run, RunInput
from app.users.models import User

# Model names travel through trainer options and CLI flags: no spaces, no commas.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,199}$")
HUB_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def check_name(name: str, field_name: str = "name") -> str:
    name = (name or "").strip()
    if not NAME_RE.match(name):
        raise InvalidInput(
            "A model name is 1-200 letters, digits and . _ : + - (no spaces or commas), starting with a letter or digit.",
            field=field_name,
        )
    return name


def name_taken(db: Session, name: str) -> bool:
    return db.scalar(select(RegisteredModel.id).where(RegisteredModel.name == name)) is not None


def weights_location(settings: Settings, path: str) -> Path | str:
    """Where a model's weights are: a folder (absolute, or relative to the artifact folder) or,
    when no such folder exists, the hub name itself."""
    p = Path(path)
    if not p.is_absolute():
        under = Path(settings.artifact_dir) / p
        if under.exists():
            return under.resolve()
    return p if p.exists() else path


def register_model(
    db: Session, settings: Settings, *, name: str, path: str, kind: ModelKind | str = ModelKind.base,
    description: str = "", actor: User | None = None,
) -> RegisteredModel:
    """Register a model an admin brings: a folder on the server (holding a transformers model,
    ``config.json``) or a transformers hub name (loaded by the workers)."""
    name = check_name(name)
    try:
        kind = ModelKind(kind)
    except ValueError:
        raise InvalidInput(f"Unknown model kind {kind!r}: choose one of {', '.join(k.value for k in ModelKind)}.", field="kind") from None
    if name_taken(db, name):
        raise Conflict(f"A model named {name!r} is already registered.", field="name")
    path = (path or "").strip()
    if kind != ModelKind.external:
        if not path:
            raise InvalidInput("Give the folder of the model's weights or a hub name (e.g. gpt2).", field="path")
        where = weights_location(settings, path)
        if isinstance(where, Path):
            if not (where / "config.json").is_file():
                raise InvalidInput(f"{path} is not a transformers model folder: it has no config.json.", field="path")
        elif path.startswith(("/", ".", "~")) or not HUB_NAME_RE.match(path):
            raise InvalidInput(f"No folder {path} on the server, and it is not a hub name like 'org/model'.", field="path")
    model = RegisteredModel(name=name, kind=kind, path=path or None, description=description.strip()[:4000],
                            created_by_id=actor.id if actor else None)
    db.add(model)
    db.flush()
    audit.record(db, actor.id if actor else None, "model.register", "model", model.id, f"{kind.value} {name} {path}")
    return model


def record_output(db: Session, *, run: Run, name: str, kind: ModelKind, path: str, metrics: dict[str, float]) -> RegisteredModel:
    """The model a succeeded run made, with its headline metrics (idempotent per run)."""
    model = db.scalar(select(RegisteredModel).where(RegisteredModel.run_id == run.id))
    if model is None:
        if name_taken(db, name):  # taken since the run was queued: keep the run's name recognisable
            name = f"{name}-run{run.id}"
        model = RegisteredModel(name=name, kind=kind, path=path, run_id=run.id, created_by_id=run.created_by_id,
                                description=f"made by run {run.id} ({run.name})")
        db.add(model)
        db.flush()
    set_metrics(db, model, metrics, run_id=run.id)
    return model


def set_metrics(db: Session, model: RegisteredModel, metrics: dict[str, float], *, run_id: int | None = None) -> None:
    existing = {m.name: m for m in db.scalars(select(ModelMetric).where(ModelMetric.model_id == model.id))}
    for name, value in metrics.items():
        row = existing.get(name)
        if row is None:
            db.add(ModelMetric(model_id=model.id, name=name[:100], value=float(value), run_id=run_id))
        else:
            row.value, row.run_id = float(value), run_id
    db.flush()


def external_model(db: Session, name: str) -> RegisteredModel:
    """The registered model behind a model name in imported completions; an unknown name is
    registered as an external model (no weights here), so every completion links to the registry."""
    name = name.strip()[:200]
    model = db.scalar(select(RegisteredModel).where(RegisteredModel.name == name))
    if model is None:
        model = RegisteredModel(name=name, kind=ModelKind.external, description="completions imported from elsewhere")
        db.add(model)
        db.flush()
    return model


def get_model(db: Session, model_id: int) -> RegisteredModel:
    model = db.get(RegisteredModel, model_id)
    if model is None:
        raise NotFound(f"No model with id {model_id}.")
    return model


def find_model(db: Session, ref: str | int, field_name: str = "model") -> RegisteredModel:
    """A model by id or name (what the API, the CLI and forms send)."""
    model = None
    if isinstance(ref, int) or (isinstance(ref, str) and ref.strip().isdigit()):
        model = db.get(RegisteredModel, int(ref))
    if model is None and isinstance(ref, str):
        model = db.scalar(select(RegisteredModel).where(RegisteredModel.name == ref.strip()))
    if model is None:
        raise InvalidInput(f"No registered model {ref!r}: register it first (Models page or `rlhf models register`).", field=field_name)
    return model


def list_models(db: Session, kinds: Sequence[ModelKind] | None = None) -> Sequence[RegisteredModel]:
    q = select(RegisteredModel).order_by(RegisteredModel.id.desc())
    if kinds:
        q = q.where(RegisteredModel.kind.in_(list(kinds)))
    return db.scalars(q).all()


def metrics_of(db: Session, model_ids: Sequence[int]) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {i: {} for i in model_ids}
    if model_ids:
        for mid, name, value in db.execute(
            select(ModelMetric.model_id, ModelMetric.name, ModelMetric.value)
            .where(ModelMetric.model_id.in_(list(model_ids))).order_by(ModelMetric.name)
        ):
            out[mid][name] = value
    return out


@dataclass
class LineageNode:
    """One model with the run that made it and that run's inputs (parents and datasets)."""

    model: RegisteredModel
    metrics: dict[str, float]
    run: Run | None = None
    datasets: list[tuple[str, Dataset, str | None]] = field(default_factory=list)  # (role, dataset, sha256 checked)
    parents: list[tuple[str, LineageNode]] = field(default_factory=list)  # (role, node)


def lineage(db: Session, model: RegisteredModel, _path: frozenset[int] = frozenset()) -> LineageNode:
    """The model's ancestry: base -> SFT -> RM -> PPO, with the datasets each step saw. A model
    reached twice (PPO's policy and its RM both come from the SFT model) is shown under both."""
    path = _path | {model.id}  # the ancestors on this branch: guards against a cycle, nothing more
    node = LineageNode(model=model, metrics=metrics_of(db, [model.id])[model.id])
    if model.run_id is None:
        return node
    node.run = db.get(Run, model.run_id)
    for item in db.scalars(select(RunInput).where(RunInput.run_id == model.run_id).order_by(RunInput.id)):
        if item.dataset_id is not None:
            node.datasets.append((item.role, db.get(Dataset, item.dataset_id), item.sha256))
        elif item.model_id is not None and item.model_id not in path:
            node.parents.append((item.role, lineage(db, db.get(RegisteredModel, item.model_id), path)))
    return node


def children(db: Session, model: RegisteredModel) -> list[tuple[str, Run, RegisteredModel | None]]:
    """Runs launched from this model, and the model each made (None while it runs or if it failed)."""
    out = []
    for role, run in db.execute(
        select(RunInput.role, Run).join(Run, Run.id == RunInput.run_id).where(RunInput.model_id == model.id).order_by(Run.id)
    ):
        made = db.scalar(select(RegisteredModel).where(RegisteredModel.run_id == run.id))
        out.append((role, run, made))
    return out
