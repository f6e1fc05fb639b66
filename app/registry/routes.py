"""JSON API of the model registry (admins register; researchers and admins read)."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import RequireRole, SessionDep, SettingsDep
from app.registry import service
from app.registry.schemas import DatasetRef, LineageOut, ModelOut, ModelRegister
from app.users.models import Role

router = APIRouter(prefix="/api/models", tags=["models"])
Admin = RequireRole(Role.admin)
Watcher = RequireRole(Role.admin, Role.researcher)


def lineage_out(node: service.LineageNode) -> LineageOut:
    return LineageOut(
        model=ModelOut.model_validate(node.model), metrics=node.metrics, run_id=node.run.id if node.run else None,
        datasets=[DatasetRef(role=role, id=d.id, name=d.name, kind=d.kind.value, sha256=d.sha256, checked_sha256=checked)
                  for role, d, checked in node.datasets],
        parents=[(role, lineage_out(p)) for role, p in node.parents],
    )


@router.get("", response_model=list[ModelOut])
def list_models(db: SessionDep, user: Watcher):
    return service.list_models(db)


@router.post("", response_model=ModelOut, status_code=201)
def register_model(body: ModelRegister, db: SessionDep, settings: SettingsDep, admin: Admin):
    return service.register_model(db, settings, name=body.name, path=body.path, kind=body.kind,
                                  description=body.description, actor=admin)


@router.get("/{model_id}", response_model=LineageOut)
def get_model(model_id: int, db: SessionDep, user: Watcher):
    """The model with its metrics and its whole lineage (parents, runs, datasets with sha256)."""
    return lineage_out(service.lineage(db, service.get_model(db, model_id)))
