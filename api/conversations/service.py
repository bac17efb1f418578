"""Conversation record work: opening, reading, the queue, and rebuilding the live context from SQL."""

from __future__ import annotations

from sqlalchemy import case, func, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.conversations.cases import list_recent_cases
from api.conversations.models import Conversation, ConversationState, Escalation, Message, SenderKind
from api.customers.models import Customer
from api.errors import ResourceNotFound
from api.timeutil import utcnow
from bot.context import TRANSCRIPT_TAIL, ContextStore, ConversationContext, TranscriptLine

OPEN_STATES = (ConversationState.BOT, ConversationState.QUEUED, ConversationState.WITH_AGENT)


async def get_open(session: AsyncSession, customer_id: int) -> Conversation | None:
    statement = (
        select(Conversation)
        .where(Conversation.customer_id == customer_id, col(Conversation.state).in_(OPEN_STATES))
        .order_by(col(Conversation.id).desc())
    )
    return (await session.exec(statement)).first()


async def get_latest(session: AsyncSession, customer_id: int) -> Conversation | None:
    statement = (
        select(Conversation).where(Conversation.customer_id == customer_id).order_by(col(Conversation.id).desc())
    )
    return (await session.exec(statement)).first()


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
    session: AsyncSession, *, customer_id: int, channel: str, touch: bool = True
) -> tuple[Conversation, bool]:
    """`open_for_message`, and whether the conversation was started just now (it has no history yet)."""
    # One read for both cases: the latest open conversation, else the latest one (the new one links to it).
    is_open = case((col(Conversation.state).in_(OPEN_STATES), 0), else_=1)
    statement = (
        select(Conversation)
        .where(Conversation.customer_id == customer_id)
        .order_by(is_open, col(Conversation.id).desc())
    )
    conversation = (await session.exec(statement.limit(1))).first()
    if conversation is None or conversation.state not in OPEN_STATES:
        previous = conversation
        conversation = Conversation(
            customer_id=customer_id,
            current_channel=channel,
            channel_path=[channel],
            previous_conversation_id=previous.id if previous else None,
        )
        session.add(conversation)
        await session.flush()
        return conversation, True
    if conversation.current_channel != channel:
        conversation.current_channel = channel
        conversation.channel_path = [*conversation.channel_path, channel]
    if touch:
        conversation.updated_at = utcnow()
    return conversation, False


async def get_message_by_platform_id(session: AsyncSession, *, channel: str, platform_msg_id: str) -> Message | None:
    statement = select(Message).where(Message.channel == channel, Message.platform_msg_id == platform_msg_id)
    return (await session.exec(statement)).first()


async def list_replies_to(session: AsyncSession, message_id: int) -> list[Message]:
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


async def get_open_escalation(session: AsyncSession, conversation_id: int) -> Escalation | None:
    statement = (
        select(Escalation)
        .where(Escalation.conversation_id == conversation_id, col(Escalation.claimed_by).is_(None))
        .order_by(col(Escalation.id).desc())
    )
    return (await session.exec(statement)).first()


def _queued_escalations():
    return (
        select(Escalation, Conversation)
        .join(Conversation, col(Conversation.id) == Escalation.conversation_id)
        .where(col(Escalation.claimed_by).is_(None), Conversation.state == ConversationState.QUEUED)
    )


async def list_queue(
    session: AsyncSession, *, skill_groups: list[str] | None = None
) -> list[tuple[Escalation, Conversation]]:
    """Waiting escalations, most urgent first, then longest waiting."""
    statement = _queued_escalations().order_by(
        col(Escalation.priority).desc(), col(Escalation.queued_at), col(Escalation.id)
    )
    if skill_groups:
        statement = statement.where(col(Escalation.skill_group).in_(skill_groups))
    return list((await session.exec(statement)).all())


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


async def rebuild_context(
    session: AsyncSession, conversation: Conversation, *, case_days: int = 30
) -> ConversationContext:
    """The live context from the SQL record alone (used when Redis lost it, and when a conversation starts)."""
    customer = await session.get(Customer, conversation.customer_id)
    tail = (
        select(Message)
        .where(Message.conversation_id == conversation.id)
        .order_by(col(Message.id).desc())
        .limit(TRANSCRIPT_TAIL)
    )
    messages = list(reversed((await session.exec(tail)).all()))
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
    from api.video.models import IdentityCheck  # conversations must not import video at module level (cycle)

    verified = select(IdentityCheck.id).where(
        IdentityCheck.conversation_id == conversation.id, IdentityCheck.result == "verified"
    )
    if (await session.exec(verified.limit(1))).first() is not None:
        return "verified_by_video"
    return "wechat_linked" if customer and customer.unionid else "openid_only"


async def start_context(
    session: AsyncSession, conversation: Conversation, *, case_days: int = 30
) -> ConversationContext:
    """The context of a conversation started just now: what `rebuild_context` would find (no messages, no
    identity check yet) without asking for it — the customer row is usually in the session already. The
    customer's recent cases are read: a new conversation is where a follow-up about one usually starts."""
    customer = await session.get(Customer, conversation.customer_id)
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
        identity_status="wechat_linked" if customer and customer.unionid else "openid_only",
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


async def get_latest_escalation(session: AsyncSession, conversation_id: int) -> Escalation | None:
    statement = (
        select(Escalation).where(Escalation.conversation_id == conversation_id).order_by(col(Escalation.id).desc())
    )
    return (await session.exec(statement)).first()


async def online_agents_in(session: AsyncSession, skill_group: str) -> int:
    """How many agents are online with this skill (skills are a JSON list, so counted here)."""
    from api.agents.models import Agent  # conversations must not import agents at module level (cycle)

    agents = (await session.exec(select(Agent).where(Agent.presence == "online", Agent.active == True))).all()  # noqa: E712
    return sum(1 for agent in agents if skill_group in agent.skills)
