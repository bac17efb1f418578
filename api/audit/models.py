"""The audit trail: who did what to which record, kept in SQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column
from sqlmodel import Field, SQLModel

from api.defaults import empty_dict
from api.timeutil import utcnow


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    actor_kind: str = Field(max_length=16)
    actor_id: int | None = None
    action: str = Field(max_length=64, index=True)
    subject: str = Field(max_length=128)
    detail: dict[str, Any] = Field(default_factory=empty_dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, index=True)
    # Tamper evidence (api/audit/chain.py): the row's place in the chain, the previous row's hash and its own,
    # set when the unit of work commits.
    chain_seq: int | None = Field(default=None, sa_column=Column(BigInteger, unique=True, nullable=True))
    prev_hash: str | None = Field(default=None, max_length=64)
    row_hash: str | None = Field(default=None, max_length=64)


def audit(session, *, actor_kind: str, actor_id: int | None, action: str, subject: str, **detail: Any) -> None:
    """Add an audit row to the caller's unit of work (committed with it)."""
    session.add(AuditEvent(actor_kind=actor_kind, actor_id=actor_id, action=action, subject=subject, detail=detail))


# Every session that can write an audit row appends it to the tamper-evident chain (hooks registered on import).
from api.audit import chain as _chain  # noqa: E402, F401
