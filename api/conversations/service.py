"""Conversation work: opening one for a message, and the live context rebuilt from SQL (queries: repository.py)."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from api.conversations import repository
from api.conversations.cases import list_recent_cases
from api.conversations.models import Conversation, SenderKind
from api.conversations.repository import OPEN_STATES
from api.customers import service as customers
from api.customers.models import Customer
from api.errors import ResourceNotFound
from api.timeutil import utcnow
from bot.context import TRANSCRIPT_TAIL, ContextStore, ConversationContext, TranscriptLine


async def get_for_customer(session: AsyncSession, *, customer_id: int, conversation_id: int) -> Conversation:
    """A conversation the customer owns; someone else's looks exactly like a missing one."""
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None or conversation.customer_id != customer_id:
        raise ResourceNotFound("conversation not found")
    return conversation


async def open_for_message(
    session: AsyncSession, *, customer_id: int, channel: str, touch: bool = True
) -> Conversation:
    """The customer's open conversation (switching its channel if needed), or a new one linked to the last.

    ``touch=False`` leaves ``updated_at`` to the caller (the bot's answer sets it in its own write)."""
    conversation, _ = await open_or_start(session, customer_id=customer_id, channel=channel, touch=touch)
    return conversation


async def open_or_start(
    session: AsyncSession, *, customer_id: int, channel: str, touch: bool = True, save_new: bool = True
) -> tuple[Conversation, Customer | None]:
    """`open_for_message`, and the customer when the conversation was started just now (it has no history yet;
    `start_context` reads the row it was started with).

    ``save_new=False``: a conversation started now is not written (nor added to the session): its first message
    brings it along (`Message.conversation`), in the same flush; its `id` is None until then."""
    # The latest open conversation, else the latest one (the new one links to it).
    conversation = await repository.open_else_latest_conversation(session, customer_id)
    if conversation is None or conversation.state not in OPEN_STATES:
        # A conversation proves its customer (a foreign key; customers are never deleted), so a later turn reads
        # no customer row: only a conversation's start does. A token whose customer is gone gets a 401 here.
        customer = await customers.existing(session, customer_id)
        previous = conversation
        conversation = Conversation(
            customer_id=customer_id,
            current_channel=channel,
            channel_path=[channel],
            previous_conversation_id=previous.id if previous else None,
        )
        if save_new:
            session.add(conversation)
            await session.flush()
        return conversation, customer
    if conversation.current_channel != channel:
        conversation.current_channel = channel
        conversation.channel_path = [*conversation.channel_path, channel]
    if touch:
        conversation.updated_at = utcnow()
    return conversation, None


async def rebuild_context(
    session: AsyncSession, conversation: Conversation, *, case_days: int = 30
) -> ConversationContext:
    """The live context from the SQL record alone (used when Redis lost it, and when a conversation starts)."""
    customer = await session.get(Customer, conversation.customer_id)
    assert conversation.id is not None
    messages = await repository.transcript_tail(session, conversation.id, limit=TRANSCRIPT_TAIL)
    return ConversationContext(
        conversation_id=conversation.id,
        customer_id=conversation.customer_id,
        state=conversation.state,
        current_channel=conversation.current_channel,
        channel_path=list(conversation.channel_path),
        intent=conversation.intent,
        confidence=conversation.intent_confidence,
        slots=dict(conversation.slots),
        low_confidence_turns=conversation.low_confidence_turns,
        identity_status=await _identity_status(session, conversation, customer),
        bot_said=[m.text for m in messages if m.sender_kind == SenderKind.BOT][-5:],
        transcript=[TranscriptLine(sender_kind=m.sender_kind, channel=m.channel, text=m.text) for m in messages],
        recent_cases=await list_recent_cases(
            session, customer_id=conversation.customer_id, days=case_days, exclude_conversation_id=conversation.id
        ),
    )


async def _identity_status(session: AsyncSession, conversation: Conversation, customer: Customer | None) -> str:
    """A face-to-face check in a video call outranks what WeChat tells us; it is on record, not only in Redis."""
    assert conversation.id is not None
    if await repository.verified_by_video(session, conversation.id):
        return "verified_by_video"
    return "wechat_linked" if customer and customer.unionid else "openid_only"


async def start_context(
    session: AsyncSession, conversation: Conversation, customer: Customer, *, case_days: int = 30
) -> ConversationContext:
    """The context of a conversation started just now (for `customer`, read as it started): what
    `rebuild_context` would find (no messages, no identity check yet) without asking for it. The customer's
    recent cases are read: a new conversation is where a follow-up about one usually starts. One not written yet
    has id 0 here, until its turn writes it (flows.do_receive_customer_message sets it then)."""
    return ConversationContext(
        conversation_id=conversation.id or 0,
        customer_id=conversation.customer_id,
        state=conversation.state,
        current_channel=conversation.current_channel,
        channel_path=list(conversation.channel_path),
        intent=conversation.intent,
        confidence=conversation.intent_confidence,
        slots=dict(conversation.slots),
        low_confidence_turns=conversation.low_confidence_turns,
        identity_status="wechat_linked" if customer.unionid else "openid_only",
        recent_cases=await list_recent_cases(
            session, customer_id=conversation.customer_id, days=case_days, exclude_conversation_id=conversation.id
        ),
    )


async def load_context(
    session: AsyncSession, store: ContextStore, conversation: Conversation, *, case_days: int = 30
) -> ConversationContext:
    """The Redis hot copy when present and current, otherwise rebuilt from SQL."""
    assert conversation.id is not None
    context = await store.get(conversation.id)
    if context is None:
        return await rebuild_context(session, conversation, case_days=case_days)
    context.state = conversation.state
    context.current_channel = conversation.current_channel
    context.channel_path = list(conversation.channel_path)
    return context
