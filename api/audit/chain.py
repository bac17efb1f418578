"""Tamper evidence for the audit trail: each row carries the hash of the previous one.

row_hash = SHA-256(prev_hash ‖ canonical(row)), where canonical(row) is sorted-key compact JSON of the row's
place in the chain and its content. Editing a row breaks its own hash; deleting one leaves a gap in
`chain_seq`; re-computing every later hash to hide an edit changes the head, which `python -m api.audit.verify`
prints so it can be noted elsewhere (a ticket, the daily report) and checked later with `--expect-head`.

The chain is appended when a unit of work commits (a `before_commit` hook on every Session, so the 35
`audit(...)` call sites don't change): the session's new audit rows are flushed, the chain's tail is read
under a lock, and each row gets the next place. The lock makes appends from every worker take turns:
PostgreSQL's transaction-scoped advisory lock (released by the commit), SQLite's single writer (the flush
above has taken the write lock). It is held only from the hook to the end of the commit.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, select, text
from sqlalchemy.orm import Session
from sqlmodel import col

from api.audit.models import AuditEvent
from api.timeutil import as_utc

GENESIS = "0" * 64
# pg_advisory_xact_lock key: the first 8 bytes of SHA-256("yunting.audit_chain"), as a signed bigint.
ADVISORY_LOCK_KEY = int.from_bytes(hashlib.sha256(b"yunting.audit_chain").digest()[:8], "big", signed=True)
_PENDING = "yunting_audit_pending"


def canonical(
    *,
    chain_seq: int,
    actor_kind: str,
    actor_id: int | None,
    action: str,
    subject: str,
    detail: dict[str, Any],
    created_at: datetime,
) -> bytes:
    """The bytes a row's hash covers; the same whichever database and driver stored and read it."""
    created_at = as_utc(created_at)  # SQLite hands back naive UTC
    return json.dumps(
        {
            "seq": chain_seq,
            "actor_kind": actor_kind,
            "actor_id": actor_id,
            "action": action,
            "subject": subject,
            # through JSON once, as the column stores it (tuples become lists, keys strings)
            "detail": json.loads(json.dumps(detail)),
            "created_at": created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def row_hash(prev_hash: str, content: bytes) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + content).hexdigest()


def hash_of(row: Any, chain_seq: int, prev_hash: str) -> str:
    """The hash a row (ORM object or Core row with the audit columns) must carry at `chain_seq`."""
    return row_hash(
        prev_hash,
        canonical(
            chain_seq=chain_seq,
            actor_kind=row.actor_kind,
            actor_id=row.actor_id,
            action=row.action,
            subject=row.subject,
            detail=row.detail,
            created_at=row.created_at,
        ),
    )


def _lock_and_read_tail(session: Session) -> tuple[int, str]:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
    tail = session.execute(
        select(col(AuditEvent.chain_seq), col(AuditEvent.row_hash))
        .where(col(AuditEvent.chain_seq).is_not(None))
        .order_by(col(AuditEvent.chain_seq).desc())
        .limit(1)
    ).first()
    if tail is None:
        return (0, GENESIS)
    seq, row_hash = tail
    assert seq is not None and row_hash is not None  # only chained rows are read
    return (seq, row_hash)


@event.listens_for(Session, "before_flush")
def _collect_new_rows(session: Session, _context, _instances) -> None:
    for obj in session.new:
        if isinstance(obj, AuditEvent):
            session.info.setdefault(_PENDING, []).append(obj)


@event.listens_for(Session, "before_commit")
def _append_to_chain(session: Session) -> None:
    session.flush()  # the new rows in (SQLite: this takes the write lock), collected by the hook above
    pending = [row for row in session.info.pop(_PENDING, []) if row.chain_seq is None]
    if not pending:
        return
    seq, prev = _lock_and_read_tail(session)
    for row in sorted(pending, key=lambda r: r.id):
        seq += 1
        row.chain_seq, row.prev_hash = seq, prev
        row.row_hash = prev = hash_of(row, seq, prev)
    # the commit that follows flushes these values and releases the lock


@event.listens_for(Session, "after_rollback")
def _forget_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)
