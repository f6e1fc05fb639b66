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


class SessionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: datetime
    last_seen_at: datetime
    user_agent: str
    client_ip: str
    current: bool = Field(False, description="The session this request came with")


class SessionsEnded(BaseModel):
    ended: int


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class PasswordChanged(BaseModel):
    other_sessions_ended: int


class PasswordReset(BaseModel):
    username: str
    password: str = Field(description="Generated; shown once: hand it to the user now")
