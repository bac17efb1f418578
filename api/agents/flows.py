"""What agents do to conversations: claim from the queue and reply. Each writes, commits, then emits."""

from __future__ import annotations

from redis.asyncio import Redis
from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.agents.models import Agent
from api.audit.models import audit
from api.conversations import service
from api.conversations.models import Conversation, ConversationState, Direction, Escalation, Message, SenderKind
from api.conversations.delivery import Delivery
from api.errors import Conflict, NotPermitted, ResourceNotFound
from api.realtime import AGENTS_CHANNEL, publish
from api.timeutil import utcnow


async def active_load(session: AsyncSession, agent_id: int) -> int:
    statement = select(func.count()).select_from(Conversation).where(
        Conversation.agent_id == agent_id, Conversation.state == ConversationState.WITH_AGENT
    )
    return int((await session.exec(statement)).one())


async def do_claim(session: AsyncSession, redis: Redis, delivery: Delivery, *, agent: Agent, conversation_id: int) -> Conversation:
    """Take a queued conversation; exactly one agent wins when several claim at once."""
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None:
        raise ResourceNotFound("conversation not found")
    escalation = await service.get_open_escalation(session, conversation_id)
    if escalation is None or conversation.state != ConversationState.QUEUED:
        raise Conflict("this conversation is not waiting in the queue", code="not_queued")
    if await active_load(session, agent.id) >= agent.capacity:
        raise Conflict("you are at full capacity", code="agent_at_capacity")
    now = utcnow()
    claimed = await session.exec(
        update(Escalation)
        .where(col(Escalation.id) == escalation.id, col(Escalation.claimed_by).is_(None))
        .values(claimed_by=agent.id, claimed_at=now)
    )
    if claimed.rowcount != 1:
        raise Conflict("another agent claimed this conversation first", code="already_claimed")
    conversation.state = ConversationState.WITH_AGENT
    conversation.agent_id = agent.id
    conversation.updated_at = now
    greeting = Message(
        conversation_id=conversation.id, customer_id=conversation.customer_id, channel=conversation.current_channel,
        direction=Direction.OUT, sender_kind=SenderKind.SYSTEM,
        text=f"人工客服{agent.display_name}已接入，您之前说的内容客服都能看到，无需重复。",
    )
    session.add(greeting)
    audit(session, actor_kind="agent", actor_id=agent.id, action="claim", subject=f"conversation:{conversation.id}")
    await session.commit()
    await delivery.deliver(conversation, [greeting])
    await delivery.state_changed(conversation)
    await publish(redis, AGENTS_CHANNEL, {"type": "queue_changed", "conversation_id": conversation.id})
    return conversation


async def get_for_agent(session: AsyncSession, *, agent: Agent, conversation_id: int) -> Conversation:
    """A conversation this agent may read: queued ones (to decide to claim) or their own."""
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None:
        raise ResourceNotFound("conversation not found")
    if conversation.state == ConversationState.QUEUED or conversation.agent_id == agent.id:
        return conversation
    if agent.role in ("supervisor", "admin"):
        return conversation
    raise NotPermitted("this conversation belongs to another agent")


async def do_send_agent_reply(session: AsyncSession, delivery: Delivery, *, agent: Agent, conversation_id: int, text: str) -> Message:
    """Store the agent's reply and deliver it on the customer's current channel."""
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None:
        raise ResourceNotFound("conversation not found")
    if conversation.agent_id != agent.id or conversation.state != ConversationState.WITH_AGENT:
        raise NotPermitted("claim the conversation before replying")
    reply = Message(
        conversation_id=conversation.id, customer_id=conversation.customer_id, channel=conversation.current_channel,
        direction=Direction.OUT, sender_kind=SenderKind.AGENT, agent_id=agent.id, text=text,
    )
    session.add(reply)
    conversation.updated_at = utcnow()
    await session.commit()
    await delivery.deliver(conversation, [reply])
    return reply
