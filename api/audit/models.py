"""The audit trail: who did what to which record, kept in SQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from api.timeutil import utcnow


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    actor_kind: str = Field(max_length=16)
    actor_id: int | None = None
    action: str = Field(max_length=64, index=True)
    subject: str = Field(max_length=128)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, index=True)


def audit(session, *, actor_kind: str, actor_id: int | None, action: str, subject: str, **detail: Any) -> None:
    """Add an audit row to the caller's unit of work (committed with it)."""
    session.add(AuditEvent(actor_kind=actor_kind, actor_id=actor_id, action=action, subject=subject, detail=detail))
