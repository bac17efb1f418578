"""Case memory from the record: a customer's conversations of the last days that had business in them."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.conversations.models import Conversation, Escalation, Message, SenderKind
from api.masking import mask_sensitive
from api.timeutil import utcnow
from bot.cases import CaseSummary
from bot.policy import SMALL_TALK
from bot.scenarios import load_catalog

MAX_CASES = 5
AGENT_SAID_CHARS = 60


async def list_recent_cases(
    session: AsyncSession, *, customer_id: int, days: int, exclude_conversation_id: int | None = None
) -> list[CaseSummary]:
    """Newest first: earlier conversations with a business intent or a hand-over to a person."""
    since = utcnow() - timedelta(days=days)
    escalated = select(Escalation.conversation_id).where(Escalation.conversation_id == Conversation.id).exists()
    statement = (
        select(Conversation)
        .where(Conversation.customer_id == customer_id, col(Conversation.created_at) >= since)
        .where((col(Conversation.intent).is_not(None)) | escalated)
        .order_by(col(Conversation.id).desc())
        .limit(MAX_CASES + 1)
    )
    if exclude_conversation_id is not None:
        statement = statement.where(col(Conversation.id) != exclude_conversation_id)
    catalog = load_catalog()
    result = []
    for conversation in (await session.exec(statement)).all():
        if conversation.intent in SMALL_TALK or conversation.intent == "case_status":
            continue
        scenario = catalog.get(conversation.intent or "")
        assert conversation.id is not None
        result.append(
            CaseSummary(
                conversation_id=conversation.id,
                intent=conversation.intent,
                title=scenario.title if scenario else None,
                state=conversation.state,
                disposition=conversation.disposition,
                slots=dict(conversation.slots),
                opened_at=conversation.created_at,
                closed_at=conversation.closed_at,
                agent_said=await _agent_said(session, conversation.id),
            )
        )
    return result[:MAX_CASES]


async def _agent_said(session: AsyncSession, conversation_id: int) -> str | None:
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
    text = (await session.exec(statement)).first()
    return mask_sensitive(text)[:AGENT_SAID_CHARS] if text else None
