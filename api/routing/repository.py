"""Queries of the routing: who got what, and assignments nobody answered. No commits here."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.conversations.models import Conversation, ConversationState, Escalation


async def claim_escalation(session: AsyncSession, escalation_id: int | None, *, agent_id: int, now: datetime) -> bool:
    """Mark a waiting escalation claimed by `agent_id`; a conditional update, so of two racing claims one wins."""
    claimed = await session.exec(
        update(Escalation)
        .where(col(Escalation.id) == escalation_id, col(Escalation.claimed_by).is_(None))
        .values(claimed_by=agent_id, claimed_at=now)
    )
    return claimed.rowcount == 1


async def unanswered_assignments(session: AsyncSession, *, claimed_before: datetime) -> list[Conversation]:
    """Conversations still with the agent who claimed them before `claimed_before` and hasn't answered yet."""
    statement = (
        select(Conversation)
        .join(Escalation, col(Escalation.conversation_id) == Conversation.id)
        .where(
            Conversation.state == ConversationState.WITH_AGENT,
            col(Escalation.claimed_by) == Conversation.agent_id,
            col(Escalation.first_response_at).is_(None),
            col(Escalation.claimed_at) < claimed_before,
        )
    )
    return list((await session.exec(statement)).all())
