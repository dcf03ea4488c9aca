"""API schemas, split so no response model has a field that can hold a secret.

Create and update bodies accept passwords as ``SecretStr``; the public models
say only whether a secret is set (``password_set``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from web.services.users import Role

Username = str


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginRequest(_Body):
    username: str = Field(min_length=1, max_length=64)
    password: SecretStr = Field(max_length=1024)


class SessionToken(BaseModel):
    access_token: str
    """Shown once; send it as ``Authorization: Bearer <token>``."""
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime


class UserCreate(_Body):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    password: SecretStr = Field(max_length=1024)
    role: Role


class UserUpdate(_Body):
    password: SecretStr | None = Field(default=None, max_length=1024)
    role: Role | None = None


class UserPublic(BaseModel):
    username: str
    role: Role
    created_at: datetime
    password_set: bool = True


class ApiTokenCreate(_Body):
    label: str = Field(default="", max_length=128)


class ApiTokenPublic(BaseModel):
    id: int
    label: str
    created_at: datetime
    expires_at: datetime | None


class ApiTokenCreated(ApiTokenPublic):
    token: str
    """Shown once; only its SHA-256 is stored."""


class ObjectPublic(BaseModel):
    """A configuration object with the reconciler's view of it."""

    kind: str
    name: str
    node: str
    """Empty when every node shares the object."""
    revision: int
    desired_revision: int
    applied_revision: int
    state: Literal["pending", "applied", "failed"]
    reason: str
    updated_at: datetime
    document: dict[str, Any]
    """The object's fields; each secret appears only as ``<field>_set: true``."""


class AuditPublic(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    kind: str
    name: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditPage(BaseModel):
    total: int
    items: list[AuditPublic]
