"""Queries about conversations, their messages and escalations. No commits here."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, func, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.conversations.models import Conversation, ConversationState, Escalation, Message, SenderKind
from api.video.models import IdentityCheck

OPEN_STATES = (ConversationState.BOT, ConversationState.QUEUED, ConversationState.WITH_AGENT)


async def open_conversation(session: AsyncSession, customer_id: int) -> Conversation | None:
    statement = (
        select(Conversation)
        .where(Conversation.customer_id == customer_id, col(Conversation.state).in_(OPEN_STATES))
        .order_by(col(Conversation.id).desc())
    )
    return (await session.exec(statement)).first()


async def latest_conversation(session: AsyncSession, customer_id: int) -> Conversation | None:
    statement = (
        select(Conversation).where(Conversation.customer_id == customer_id).order_by(col(Conversation.id).desc())
    )
    return (await session.exec(statement)).first()


async def open_else_latest_conversation(session: AsyncSession, customer_id: int) -> Conversation | None:
    """The latest open conversation, else the latest one (one read for both cases)."""
    is_open = case((col(Conversation.state).in_(OPEN_STATES), 0), else_=1)
    statement = (
        select(Conversation)
        .where(Conversation.customer_id == customer_id)
        .order_by(is_open, col(Conversation.id).desc())
    )
    return (await session.exec(statement.limit(1))).first()


async def held_by(session: AsyncSession, agent_id: int, *, newest_first: bool = False) -> list[Conversation]:
    """The conversations this agent holds now (`newest_first`: most recently updated first)."""
    statement = select(Conversation).where(
        Conversation.agent_id == agent_id, Conversation.state == ConversationState.WITH_AGENT
    )
    if newest_first:
        statement = statement.order_by(col(Conversation.updated_at).desc())
    return list((await session.exec(statement)).all())


async def held_count_by_agent(session: AsyncSession) -> dict[int | None, int]:
    """agent id → how many conversations they hold now (the load SQL knows of)."""
    statement = (
        select(Conversation.agent_id, func.count())
        .where(Conversation.state == ConversationState.WITH_AGENT)
        .group_by(col(Conversation.agent_id))
    )
    return dict((await session.exec(statement)).all())


async def opened_since(session: AsyncSession, since: datetime) -> list[Conversation]:
    statement = select(Conversation).where(col(Conversation.created_at) >= since)
    return list((await session.exec(statement)).all())


async def escalated_since(session: AsyncSession, since: datetime) -> list[Escalation]:
    statement = select(Escalation).where(col(Escalation.created_at) >= since)
    return list((await session.exec(statement)).all())


async def recent_cases(
    session: AsyncSession, *, customer_id: int, since: datetime, limit: int, exclude_conversation_id: int | None
) -> list[Conversation]:
    """Newest first: the customer's conversations since `since` with a business intent or an escalation."""
    escalated = select(Escalation.conversation_id).where(Escalation.conversation_id == Conversation.id).exists()
    statement = (
        select(Conversation)
        .where(Conversation.customer_id == customer_id, col(Conversation.created_at) >= since)
        .where((col(Conversation.intent).is_not(None)) | escalated)
        .order_by(col(Conversation.id).desc())
        .limit(limit)
    )
    if exclude_conversation_id is not None:
        statement = statement.where(col(Conversation.id) != exclude_conversation_id)
    return list((await session.exec(statement)).all())


async def message_by_platform_id(session: AsyncSession, *, channel: str, platform_msg_id: str) -> Message | None:
    statement = select(Message).where(Message.channel == channel, Message.platform_msg_id == platform_msg_id)
    return (await session.exec(statement)).first()


async def replies_to(session: AsyncSession, message_id: int) -> list[Message]:
    statement = select(Message).where(Message.in_reply_to == message_id).order_by(col(Message.id))
    return list((await session.exec(statement)).all())


async def list_messages(
    session: AsyncSession,
    *,
    conversation_id: int | None = None,
    customer_id: int | None = None,
    after_id: int = 0,
    include_internal: bool = False,
) -> list[Message]:
    """Oldest first; by conversation, or everything of one customer. Internal notes only when asked."""
    statement = select(Message).where(col(Message.id) > after_id).order_by(col(Message.id))
    if not include_internal:
        statement = statement.where(col(Message.internal).is_(False))
    if conversation_id is not None:
        statement = statement.where(Message.conversation_id == conversation_id)
    if customer_id is not None:
        statement = statement.where(Message.customer_id == customer_id)
    return list((await session.exec(statement)).all())


async def nothing_after(session: AsyncSession, conversation_id: int, message_id: int) -> bool:
    """Whether nothing was written in the conversation after this message."""
    statement = (
        select(Message.id).where(Message.conversation_id == conversation_id, col(Message.id) > message_id).limit(1)
    )
    return (await session.exec(statement)).first() is None


async def transcript_tail(session: AsyncSession, conversation_id: int, *, limit: int) -> list[Message]:
    """The conversation's last `limit` messages (internal notes too), oldest first."""
    statement = (
        select(Message).where(Message.conversation_id == conversation_id).order_by(col(Message.id).desc()).limit(limit)
    )
    return list(reversed((await session.exec(statement)).all()))


async def last_public_messages(session: AsyncSession, conversation_id: int, *, limit: int) -> list[Message]:
    """The conversation's last `limit` messages the customer saw (no internal notes), oldest first."""
    statement = (
        select(Message)
        .where(Message.conversation_id == conversation_id, col(Message.internal).is_(False))
        .order_by(col(Message.id).desc())
        .limit(limit)
    )
    return list(reversed((await session.exec(statement)).all()))


async def last_agent_words(session: AsyncSession, conversation_id: int) -> str | None:
    """The text of the last agent reply the customer saw in this conversation."""
    statement = (
        select(Message.text)
        .where(
            Message.conversation_id == conversation_id,
            Message.sender_kind == SenderKind.AGENT,
            col(Message.internal).is_(False),
        )
        .order_by(col(Message.id).desc())
        .limit(1)
    )
    return (await session.exec(statement)).first()


async def verified_by_video(session: AsyncSession, conversation_id: int) -> bool:
    """A face-to-face identity check in one of the conversation's video calls succeeded."""

    verified = select(IdentityCheck.id).where(
        IdentityCheck.conversation_id == conversation_id, IdentityCheck.result == "verified"
    )
    return (await session.exec(verified.limit(1))).first() is not None


async def latest_escalation(session: AsyncSession, conversation_id: int) -> Escalation | None:
    statement = (
        select(Escalation).where(Escalation.conversation_id == conversation_id).order_by(col(Escalation.id).desc())
    )
    return (await session.exec(statement)).first()


async def open_escalation(session: AsyncSession, conversation_id: int) -> Escalation | None:
    """The conversation's latest escalation no agent has claimed yet."""
    statement = (
        select(Escalation)
        .where(Escalation.conversation_id == conversation_id, col(Escalation.claimed_by).is_(None))
        .order_by(col(Escalation.id).desc())
    )
    return (await session.exec(statement)).first()


def _waiting(*entities):
    """Unclaimed escalations of conversations still queued."""
    return (
        select(*entities)
        .join(Conversation, col(Conversation.id) == Escalation.conversation_id)
        .where(col(Escalation.claimed_by).is_(None), Conversation.state == ConversationState.QUEUED)
    )


async def waiting_escalations(
    session: AsyncSession, *, skill_groups: list[str] | None = None
) -> list[tuple[Escalation, Conversation]]:
    """Waiting escalations, most urgent first, then longest waiting."""
    statement = _waiting(Escalation, Conversation).order_by(
        col(Escalation.priority).desc(), col(Escalation.queued_at), col(Escalation.id)
    )
    if skill_groups:
        statement = statement.where(col(Escalation.skill_group).in_(skill_groups))
    return list((await session.exec(statement)).all())


async def all_waiting_escalations(session: AsyncSession) -> list[Escalation]:
    """Every waiting escalation, in no particular order (to rebuild the Redis queues)."""
    return list((await session.exec(_waiting(Escalation))).all())


async def queue_position(session: AsyncSession, escalation: Escalation) -> int:
    """1-based place in its skill group's queue."""
    ahead = (
        select(func.count())
        .select_from(Escalation)
        .join(Conversation, col(Conversation.id) == Escalation.conversation_id)
        .where(
            col(Escalation.claimed_by).is_(None),
            Conversation.state == ConversationState.QUEUED,
            Escalation.skill_group == escalation.skill_group,
            col(Escalation.id) != escalation.id,
            or_(
                col(Escalation.priority) > escalation.priority,
                (col(Escalation.priority) == escalation.priority) & (col(Escalation.queued_at) < escalation.queued_at),
                (col(Escalation.priority) == escalation.priority)
                & (col(Escalation.queued_at) == escalation.queued_at)
                & (col(Escalation.id) < escalation.id),
            ),
        )
    )
    return int((await session.exec(ahead)).one()) + 1
