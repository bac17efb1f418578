"""The record's side of a customer's turn (flows.do_receive_customer_message): the parse awaited with no SQL
connection held, a retry told by its platform id, and a message kept (and answered later) when its answer could not
be written. Nothing here commits an answer: flows.py does, then emits."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from api.conversations import repository, service
from api.conversations.models import Conversation, ConversationState, Message, SenderKind
from api.conversations.turns import EarlyParse
from bot.context import ContextStore, ConversationContext
from bot.nlu import NluParse, NluUnavailable

log = logging.getLogger(__name__)


@dataclass
class Received:
    """The stored inbound message, what was sent back, and whether it was a retry of one already handled."""

    message: Message
    conversation: Conversation
    replies: list[Message] = field(default_factory=list)
    duplicate: bool = False


async def already_received(session: AsyncSession, channel: str, platform_msg_id: str | None) -> Received | None:
    """The message stored earlier under this platform id, with what was answered to it."""
    if not platform_msg_id:
        return None
    existing = await repository.message_by_platform_id(session, channel=channel, platform_msg_id=platform_msg_id)
    if existing is None:
        return None
    conversation = await session.get(Conversation, existing.conversation_id)
    assert conversation is not None  # the message's foreign key
    assert existing.id is not None
    replies = await repository.replies_to(session, existing.id)
    return Received(existing, conversation, replies, duplicate=True)


async def stored_before(session: AsyncSession, channel: str, platform_msg_id: str | None) -> Received | None:
    """After a write failed on the unique platform id: the message stored before, answered from the record."""
    await session.rollback()
    return await already_received(session, channel, platform_msg_id)


async def unanswered(session: AsyncSession, received: Received) -> bool:
    """A text the bot was to answer and did not: stored alone by a turn whose answer could not be written
    (`keep_alone`), nothing said after it, its conversation still with the bot. Its retry answers it then: processed
    once means answered once, not "stored, and never answered"."""
    message = received.message
    if received.replies or message.kind != "text" or received.conversation.state != ConversationState.BOT:
        return False
    assert message.id is not None
    return await repository.nothing_after(session, message.conversation_id, message.id)


async def context_again(
    session: AsyncSession, store: ContextStore, conversation: Conversation, message: Message, *, case_days: int
) -> ConversationContext:
    """The context to answer a message stored alone: the failed turn never kept its copy, so the customer's words
    are remembered here, unless a rebuild from SQL read them with the message."""
    context = await service.load_context(session, store, conversation, case_days=case_days)
    last = context.transcript[-1] if context.transcript else None
    if last is None or last.sender_kind != SenderKind.CUSTOMER or last.text != message.text:
        context.remember(sender_kind=SenderKind.CUSTOMER, channel=message.channel, text=message.text)
    return context


async def keep_alone(
    session: AsyncSession, customer_id: int, channel: str, row: Callable[[Conversation], Message]
) -> None:
    """The answer could not be written: the customer's message is, alone, so the record does not lose it (the
    request still fails; its retry answers it then, see `unanswered`, or the agent sees it)."""
    try:
        await session.rollback()
        session.add(row(await service.open_for_message(session, customer_id=customer_id, channel=channel)))
        await session.commit()
    except IntegrityError:  # it was stored after all (a retry's turn, between)
        await session.rollback()
    except Exception:
        log.exception("customer %s: the message could not be stored alone either", customer_id)
        await session.rollback()


async def parse_for_bot(
    session: AsyncSession, early: EarlyParse | None, text: str, *, video_tap: bool
) -> NluParse | NluUnavailable:
    """The text's parse, or why there is none. Nothing is written yet: while Rasa works, the request's SQL
    connection goes back to the pool (a Rasa that hangs must not hold the pool for its timeout)."""
    if video_tap:  # the tap is the request: no NLU guess can make it mean anything else
        return NluParse(text, "request_video", 1.0)
    assert early is not None  # every text the bot answers has its parse asked for
    if not early.ready():
        await session.commit()
    try:
        return await early.result()
    except NluUnavailable as exc:
        return exc
