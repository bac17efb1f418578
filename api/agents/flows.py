"""What agents do to the conversations they hold: reply, note, transfer, close; and their presence.
Each writes, commits, then emits."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from api.agents.models import Agent
from api.audit.models import audit
from api.conversations import repository as conversations
from api.conversations.delivery import Delivery
from api.conversations.models import Conversation, ConversationState, Direction, Escalation, Message, SenderKind
from api.delivery import repository as delivery_states
from api.errors import BadRequest, Conflict, NotPermitted, ResourceNotFound
from api.realtime import AGENTS_CHANNEL, publish
from api.routing.engine import RoutingEngine
from api.routing.flows import do_assign_waiting, do_hand_over, do_requeue, ensure_built, snapshot_of
from api.timeutil import utcnow

DISPOSITIONS = ("resolved", "follow_up", "customer_left", "transferred_out", "invalid")
PRESENCES = ("online", "away", "offline")


async def get_for_agent(session: AsyncSession, *, agent: Agent, conversation_id: int) -> Conversation:
    """A conversation this agent may read: queued ones (to decide to claim), their own, or any for supervisors."""
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None:
        raise ResourceNotFound("conversation not found")
    if conversation.state == ConversationState.QUEUED or conversation.agent_id == agent.id:
        return conversation
    if agent.role in ("supervisor", "admin"):
        return conversation
    raise NotPermitted("this conversation belongs to another agent")


async def _held(session: AsyncSession, agent: Agent, conversation_id: int) -> Conversation:
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None:
        raise ResourceNotFound("conversation not found")
    if conversation.agent_id != agent.id or conversation.state != ConversationState.WITH_AGENT:
        raise NotPermitted("claim the conversation before acting on it")
    return conversation


async def do_send_agent_reply(
    session: AsyncSession, delivery: Delivery, *, agent: Agent, conversation_id: int, text: str
) -> Message:
    """Store the agent's reply and deliver it on the customer's current channel."""
    conversation = await _held(session, agent, conversation_id)
    assert conversation.id is not None
    reply = Message(
        conversation_id=conversation.id,
        customer_id=conversation.customer_id,
        channel=conversation.current_channel,
        direction=Direction.OUT,
        sender_kind=SenderKind.AGENT,
        agent_id=agent.id,
        text=text,
    )
    session.add(reply)
    await session.flush()
    delivery_states.create(session, reply)  # pending until it reaches the customer, in the same commit
    now = conversation.updated_at = utcnow()
    escalation = await conversations.latest_escalation(session, conversation.id)
    if escalation is not None and escalation.first_response_at is None:
        escalation.first_response_at = now
    await session.commit()
    await delivery.deliver(conversation, [reply])
    return reply


async def do_show_typing(session: AsyncSession, delivery: Delivery, *, agent: Agent, conversation_id: int) -> None:
    """The agent is writing: the customer sees "typing…" on their channel (within WeChat's rules there)."""
    conversation = await _held(session, agent, conversation_id)
    await delivery.typing(conversation)


async def do_add_note(session: AsyncSession, *, agent: Agent, conversation_id: int, text: str) -> Message:
    """An internal note: in the record and the console, never sent to the customer."""
    conversation = await get_for_agent(session, agent=agent, conversation_id=conversation_id)
    assert conversation.id is not None
    note = Message(
        conversation_id=conversation.id,
        customer_id=conversation.customer_id,
        channel=conversation.current_channel,
        direction=Direction.OUT,
        sender_kind=SenderKind.AGENT,
        agent_id=agent.id,
        text=text,
        internal=True,
        kind="note",
    )
    session.add(note)
    await session.commit()
    return note


async def do_transfer(
    session: AsyncSession,
    routing: RoutingEngine,
    delivery: Delivery,
    *,
    agent: Agent,
    conversation_id: int,
    to_group: str | None,
    to_agent_id: int | None,
) -> Conversation:
    """Hand the conversation to another group's queue (at its head) or straight to a named agent."""
    assert agent.id is not None
    conversation = await _held(session, agent, conversation_id)
    assert conversation.id is not None
    escalation = await conversations.latest_escalation(session, conversation.id)
    if to_agent_id is not None:
        return await _transfer_to_agent(session, routing, delivery, agent, conversation, to_agent_id)
    if not to_group:
        raise BadRequest("name a skill group or an agent to transfer to", code="transfer_target_missing")
    card = dict(escalation.handoff_card) if escalation else {}
    card["transferred_from"] = agent.display_name
    new = Escalation(
        conversation_id=conversation.id,
        reason="transfer",
        intent=conversation.intent,
        skill_group=to_group,
        priority=escalation.priority if escalation else 0,
        mode=escalation.mode if escalation else "text",
        handoff_card=card,
        queued_at=escalation.created_at if escalation else utcnow(),
    )
    session.add(new)
    conversation.state = ConversationState.QUEUED
    conversation.agent_id = None
    notice = _system_message(conversation, "正在为您转接更合适的客服，您之前说的内容都会一并转过去，请稍候。")
    session.add(notice)
    audit(
        session,
        actor_kind="agent",
        actor_id=agent.id,
        action="transfer",
        subject=f"conversation:{conversation.id}",
        to_group=to_group,
    )
    await session.commit()
    await routing.release(agent.id)
    assert new.id is not None
    await routing.enqueue(new.id, new.skill_group, new.priority, new.queued_at)
    await delivery.deliver(conversation, [notice])
    await delivery.state_changed(conversation)
    await publish(routing.redis, AGENTS_CHANNEL, {"type": "queue_changed", "conversation_id": conversation.id})
    await do_assign_waiting(session, routing, delivery, to_group)
    return conversation


async def _transfer_to_agent(session, routing, delivery, agent, conversation, to_agent_id) -> Conversation:
    target = await session.get(Agent, to_agent_id)
    if target is None or not target.active:
        raise ResourceNotFound("no such agent")
    if target.presence != "online":
        raise Conflict(f"{target.display_name} is not online", code="agent_not_online")
    await do_hand_over(
        session,
        routing,
        delivery,
        conversation=conversation,
        to_agent=target,
        actor_id=agent.id,
        text=f"已为您转接至客服{target.display_name}，您之前说的内容都已保留。",
        action="transfer",
        reason="transfer",
        new_first_response=True,
    )
    return conversation


async def do_close(
    session: AsyncSession,
    routing: RoutingEngine,
    delivery: Delivery,
    *,
    agent: Agent,
    conversation_id: int,
    disposition: str,
) -> Conversation:
    """Close with a disposition; the customer's next message starts a new conversation with the bot."""
    assert agent.id is not None
    if disposition not in DISPOSITIONS:
        raise BadRequest(f"disposition must be one of {', '.join(DISPOSITIONS)}", code="bad_disposition")
    conversation = await _held(session, agent, conversation_id)
    conversation.state = ConversationState.CLOSED
    conversation.disposition = disposition
    conversation.closed_at = conversation.updated_at = utcnow()
    goodbye = _system_message(
        conversation,
        "本次服务已结束，感谢您的耐心。请为本次服务打分：1（很不满意）到 5（很满意）。",
        payload={"type": "csat_request"},
    )
    session.add(goodbye)
    audit(
        session,
        actor_kind="agent",
        actor_id=agent.id,
        action="close",
        subject=f"conversation:{conversation.id}",
        disposition=disposition,
    )
    await session.commit()
    await routing.release(agent.id)
    await delivery.deliver(conversation, [goodbye])
    await delivery.state_changed(conversation)
    await do_assign_waiting_for_agent(session, routing, delivery, agent)
    return conversation


async def do_set_presence(
    session: AsyncSession, routing: RoutingEngine, delivery: Delivery, *, agent: Agent, presence: str
) -> Agent:
    """Online agents take new conversations; going offline hands theirs back to the queue."""
    if presence not in PRESENCES:
        raise BadRequest(f"presence must be one of {', '.join(PRESENCES)}", code="bad_presence")
    await ensure_built(session, routing)
    agent.presence = presence
    audit(
        session,
        actor_kind="agent",
        actor_id=agent.id,
        action="presence",
        subject=f"agent:{agent.id}",
        presence=presence,
    )
    await session.commit()
    await routing.set_agent(snapshot_of(agent))
    if presence == "offline":
        assert agent.id is not None
        for conversation in await conversations.held_by(session, agent.id):
            await do_requeue(session, routing, delivery, conversation=conversation, reason="agent_offline")
    if presence == "online":
        await do_assign_waiting_for_agent(session, routing, delivery, agent)
    await publish(routing.redis, AGENTS_CHANNEL, {"type": "presence", "agent_id": agent.id, "presence": presence})
    return agent


async def do_assign_waiting_for_agent(
    session: AsyncSession, routing: RoutingEngine, delivery: Delivery, agent: Agent
) -> None:
    for group in agent.skills:
        await do_assign_waiting(session, routing, delivery, group)


def _system_message(conversation: Conversation, text: str, payload: dict | None = None) -> Message:
    assert conversation.id is not None
    return Message(
        conversation_id=conversation.id,
        customer_id=conversation.customer_id,
        channel=conversation.current_channel,
        direction=Direction.OUT,
        sender_kind=SenderKind.SYSTEM,
        text=text,
        payload=payload,
    )
