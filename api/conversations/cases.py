"""Case memory from the record: a customer's conversations of the last days that had business in them."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from api.conversations import repository
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
    conversations = await repository.recent_cases(
        session,
        customer_id=customer_id,
        since=since,
        limit=MAX_CASES + 1,
        exclude_conversation_id=exclude_conversation_id,
    )
    catalog = load_catalog()
    result = []
    for conversation in conversations:
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
    text = await repository.last_agent_words(session, conversation_id)
    return mask_sensitive(text)[:AGENT_SAID_CHARS] if text else None
