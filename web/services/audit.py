"""The audit log: who changed what, when, with secrets already redacted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from web.db import AuditEntry


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    kind: str,
    name: str,
    now: datetime,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Add one entry in the caller's transaction: it commits with the change."""
    session.add(
        AuditEntry(
            at=now,
            actor=actor,
            action=action,
            kind=kind,
            name=name,
            before=before,
            after=after,
        )
    )


@dataclass(frozen=True, slots=True)
class AuditFilter:
    actor: str | None = None
    action: str | None = None
    kind: str | None = None
    name: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def list_entries(
    session: Session, where: AuditFilter, *, limit: int, offset: int
) -> tuple[int, list[AuditEntry]]:
    """Matching entries, newest first, and how many match in all."""
    query = _filtered(select(AuditEntry), where)
    total = session.scalar(_filtered(select(func.count(AuditEntry.id)), where)) or 0
    page = query.order_by(AuditEntry.id.desc()).limit(limit).offset(offset)
    return total, list(session.scalars(page))


def _filtered(query: Select[Any], where: AuditFilter) -> Select[Any]:
    if where.actor is not None:
        query = query.where(AuditEntry.actor == where.actor)
    if where.action is not None:
        query = query.where(AuditEntry.action == where.action)
    if where.kind is not None:
        query = query.where(AuditEntry.kind == where.kind)
    if where.name is not None:
        query = query.where(AuditEntry.name == where.name)
    if where.since is not None:
        query = query.where(AuditEntry.at >= where.since)
    if where.until is not None:
        query = query.where(AuditEntry.at < where.until)
    return query
