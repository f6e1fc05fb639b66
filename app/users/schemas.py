"""Wire schemas of the accounts API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.users.models import LabelerGroup, Role


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    role: Role
    labeler_group: LabelerGroup
    active: bool
    created_at: datetime


class UserCreate(BaseModel):
    username: str = Field(min_length=2, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    role: Role
    labeler_group: LabelerGroup = LabelerGroup.train


class UserUpdate(BaseModel):
    role: Role | None = None
    labeler_group: LabelerGroup | None = None
    active: bool | None = None


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)


class TokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="Shown once; store it now")
