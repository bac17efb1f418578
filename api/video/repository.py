"""Queries about video calls, their events, recordings and what was settled in them. No commits here.

State changes are conditional UPDATEs (`WHERE state IN (...)`): of two workers racing to end, connect or
answer the same call, exactly one wins, and the loser sees it did not.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.video.models import (
    ACTIVE_STATES,
    CallEvent,
    CallState,
    IdentityCheck,
    Recording,
    RecordingStatus,
    RepaymentPlan,
    VideoCall,
)


async def active_call(session: AsyncSession, conversation_id: int) -> VideoCall | None:
    """The conversation's call still under way (requested, ringing or connected), the newest should there be two."""
    statement = (
        select(VideoCall)
        .where(VideoCall.conversation_id == conversation_id, col(VideoCall.state).in_(ACTIVE_STATES))
        .order_by(col(VideoCall.id).desc())
    )
    return (await session.exec(statement)).first()


async def list_calls(
    session: AsyncSession, *, conversation_id: int | None = None, states: Sequence[str] | None = None, limit: int = 50
) -> list[VideoCall]:
    statement = select(VideoCall).order_by(col(VideoCall.id).desc()).limit(limit)
    if conversation_id is not None:
        statement = statement.where(VideoCall.conversation_id == conversation_id)
    if states:
        statement = statement.where(col(VideoCall.state).in_(states))
    return list((await session.exec(statement)).all())


async def transition(
    session: AsyncSession, call: VideoCall, *, from_states: tuple[str, ...], extra=(), **values: Any
) -> bool:
    """Change the call only if it is still in one of `from_states` (and `extra` holds); True if we did."""
    result = await session.exec(
        update(VideoCall)
        .where(col(VideoCall.id) == call.id, col(VideoCall.state).in_(from_states), *extra)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    await session.refresh(call)
    return result.rowcount == 1


# The ids below are primary keys read from SQL (never NULL): `if ... is not None` only narrows their type.


async def ringing_past_deadline(session: AsyncSession, now: datetime) -> list[int]:
    """Calls still ringing whose ring deadline has passed."""
    statement = select(col(VideoCall.id)).where(
        col(VideoCall.state) == CallState.RINGING, col(VideoCall.ring_deadline) < now
    )
    return [call_id for call_id in (await session.exec(statement)).all() if call_id is not None]


async def requested_before(session: AsyncSession, before: datetime) -> list[int]:
    """Calls requested before `before` that never started ringing (the customer's media never came)."""
    statement = select(col(VideoCall.id)).where(
        col(VideoCall.state) == CallState.REQUESTED, col(VideoCall.created_at) < before
    )
    return [call_id for call_id in (await session.exec(statement)).all() if call_id is not None]


async def active_call_workers(session: AsyncSession) -> list[tuple[int, str]]:
    """(call id, media worker) of every call under way that a media worker holds."""
    statement = select(col(VideoCall.id), col(VideoCall.media_worker)).where(
        col(VideoCall.state).in_(ACTIVE_STATES), col(VideoCall.media_worker).is_not(None)
    )
    return [
        (call_id, worker)
        for call_id, worker in (await session.exec(statement)).all()
        if call_id is not None and worker is not None  # `media_worker IS NOT NULL` above
    ]


async def list_events(session: AsyncSession, call_id: int) -> list[CallEvent]:
    statement = select(CallEvent).where(CallEvent.call_id == call_id).order_by(col(CallEvent.id))
    return list((await session.exec(statement)).all())


async def list_recordings(
    session: AsyncSession,
    *,
    call_id: int | None = None,
    conversation_id: int | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[Recording]:
    statement = select(Recording).order_by(col(Recording.id).desc()).limit(limit)
    if call_id is not None:
        statement = statement.where(Recording.call_id == call_id)
    if conversation_id is not None:
        statement = statement.where(Recording.conversation_id == conversation_id)
    if status is not None:
        statement = statement.where(Recording.status == status)
    return list((await session.exec(statement)).all())


async def recordings_to_rewrap(session: AsyncSession, *, current_key: str) -> list[int]:
    """Finished recordings sealed with a master key other than `current_key`, oldest first."""
    statement = (
        select(col(Recording.id))
        .where(
            col(Recording.status) != RecordingStatus.RECORDING,
            col(Recording.key_id).is_not(None),
            Recording.key_id != current_key,
        )
        .order_by(col(Recording.id))
    )
    return [row_id for row_id in (await session.exec(statement)).all() if row_id is not None]


async def recordings_left_plain(session: AsyncSession) -> list[int]:
    """Finished recordings never sealed (a worker that died before finalizing, a seal that failed), oldest first."""
    statement = (
        select(col(Recording.id))
        .where(col(Recording.status) != RecordingStatus.RECORDING, col(Recording.key_id).is_(None))
        .order_by(col(Recording.id))
    )
    return [row_id for row_id in (await session.exec(statement)).all() if row_id is not None]


async def list_plans(session: AsyncSession, call_id: int) -> list[RepaymentPlan]:
    statement = select(RepaymentPlan).where(RepaymentPlan.call_id == call_id).order_by(col(RepaymentPlan.id))
    return list((await session.exec(statement)).all())


async def list_identity_checks(session: AsyncSession, call_id: int) -> list[IdentityCheck]:
    statement = select(IdentityCheck).where(IdentityCheck.call_id == call_id).order_by(col(IdentityCheck.id))
    return list((await session.exec(statement)).all())


async def live_calls_by_state(session: AsyncSession) -> dict[CallState, int]:
    """How many calls are under way in each active state (states with none are absent)."""
    statement = (
        select(VideoCall.state, func.count())
        .where(col(VideoCall.state).in_(ACTIVE_STATES))
        .group_by(col(VideoCall.state))
    )
    return {CallState(state): count for state, count in (await session.exec(statement)).all()}


async def recordings_by_status(session: AsyncSession) -> list[tuple[str, int]]:
    """How many recordings there are of each status."""
    statement = select(Recording.status, func.count()).group_by(col(Recording.status))
    return [(str(status), count) for status, count in (await session.exec(statement)).all()]
