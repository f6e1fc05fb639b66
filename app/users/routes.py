"""JSON API for accounts: /api/me, /api/users, /api/tokens."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import CurrentUser, RequireRole, SessionDep
from app.users import service
from app.users.models import Role
from app.users.schemas import TokenCreate, TokenCreated, TokenOut, UserCreate, UserOut, UserUpdate

router = APIRouter(prefix="/api", tags=["accounts"])
Admin = RequireRole(Role.admin)


@router.get("/me", response_model=UserOut)
def me(user: CurrentUser):
    return user


@router.get("/users", response_model=list[UserOut])
def list_users(db: SessionDep, admin: Admin):
    return service.list_users(db)


@router.post("/users", response_model=UserOut, status_code=201)
def create_user(body: UserCreate, db: SessionDep, admin: Admin):
    return service.create_user(
        db, username=body.username, password=body.password, role=body.role,
        labeler_group=body.labeler_group, actor=admin,
    )


@router.patch("/users/{user_id}", response_model=UserOut)
def update_user(user_id: int, body: UserUpdate, db: SessionDep, admin: Admin):
    user = service.get_user(db, user_id)
    if body.role is not None:
        user = service.change_role(db, user_id, body.role, actor=admin)
    if body.labeler_group is not None:
        user = service.change_group(db, user_id, body.labeler_group, actor=admin)
    if body.active is not None:
        user = service.set_active(db, user_id, body.active, actor=admin)
    return user


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(db: SessionDep, user: CurrentUser):
    return service.list_tokens(db, user)


@router.post("/tokens", response_model=TokenCreated, status_code=201)
def create_token(body: TokenCreate, db: SessionDep, user: RequireRole(Role.admin, Role.researcher)):
    row, token = service.create_token(db, user, body.name)
    return TokenCreated(token=token, **TokenOut.model_validate(row).model_dump())


@router.delete("/tokens/{token_id}", response_model=TokenOut)
def revoke_token(token_id: int, db: SessionDep, user: CurrentUser):
    return service.revoke_token(db, token_id, actor=user)
