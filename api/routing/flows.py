"""Queue work with side effects: enqueue, assign (automatic or a manual claim), requeue.

Redis decides who gets what (atomically, see engine.py); SQL records it; events go out after commit.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from api.advisors import holds
from api.agents import repository as agents_repository
from api.agents.models import Agent
from api.audit.models import audit
from api.conversations import repository as conversations
from api.conversations.delivery import Delivery
from api.conversations.models import Conversation, ConversationState, Direction, Escalation, Message, SenderKind
from api.db import saved_id
from api.errors import Conflict, ResourceNotFound
from api.health.instruments import QUEUE_WAIT
from api.realtime import AGENTS_CHANNEL, agent_channel, publish
from api.routing import repository
from api.routing.engine import AgentSnapshot, RoutingEngine, WaitingSnapshot
from api.timeutil import as_utc, utcnow

log = logging.getLogger(__name__)

# A requeued conversation goes to the head of its priority class: it sorts before every real queue time.
HEAD_OF_QUEUE = datetime(2000, 1, 1, tzinfo=UTC)


async def ensure_built(session: AsyncSession, routing: RoutingEngine) -> None:
    """Rebuild the Redis side from SQL when it is missing (first start, or Redis lost its data)."""
    if await routing.is_built():
        return
    async with routing.redis.lock("yt:lock:routing-rebuild", timeout=30, blocking_timeout=30):
        if await routing.is_built():
            return
        agents = await agents_repository.list_active(session)
        loads = await conversations.held_count_by_agent(session)
        waiting = await conversations.all_waiting_escalations(session)
        await routing.rebuild(
            [
                AgentSnapshot(saved_id(a), list(a.skills), a.capacity, a.presence, int(loads.get(saved_id(a), 0)))
                for a in agents
            ],
            [WaitingSnapshot(saved_id(e), e.skill_group, e.priority, e.queued_at) for e in waiting],
        )
        log.info("routing rebuilt from SQL: %d agents, %d waiting", len(agents), len(waiting))


def snapshot_of(agent: Agent) -> AgentSnapshot:
    """What Redis needs of an agent (its load is Redis's own counter)."""
    assert agent.id is not None
    return AgentSnapshot(agent.id, list(agent.skills), agent.capacity, agent.presence, 0)


async def do_assign_waiting(session: AsyncSession, routing: RoutingEngine, delivery: Delivery, group: str) -> list[int]:
    """Give the group's waiting customers to free online agents; returns the conversation ids assigned."""
    await ensure_built(session, routing)
    assigned = []
    while (pair := await routing.assign_next(group)) is not None:
        escalation_id, agent_id = pair
        escalation = await session.get(Escalation, escalation_id)
        agent = await session.get(Agent, agent_id)
        if (
            escalation is None
            or agent is None
            or not await _record_assignment(session, delivery, escalation, agent, how="assign")
        ):
            await routing.release(agent_id)
            continue
        assigned.append(escalation.conversation_id)
    return assigned


async def do_claim(
    session: AsyncSession, routing: RoutingEngine, delivery: Delivery, *, agent: Agent, conversation_id: int
) -> Conversation:
    """An agent takes a waiting conversation by hand; exactly one of several racing agents wins."""
    assert agent.id is not None
    await ensure_built(session, routing)
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None:
        raise ResourceNotFound("conversation not found")
    escalation = await conversations.open_escalation(session, conversation_id)
    if escalation is None or conversation.state != ConversationState.QUEUED:
        raise Conflict("this conversation is not waiting in the queue", code="not_queued")
    await routing.set_agent(snapshot_of(agent))
    assert escalation.id is not None
    if await holds.take(routing.redis, escalation.id):
        # Held for the customer's advisor: a person may still take it by hand (or by answering its call).
        await routing.enqueue(escalation.id, escalation.skill_group, escalation.priority, escalation.queued_at)
    outcome = await routing.claim(escalation.id, escalation.skill_group, agent.id)
    if outcome == "full":
        raise Conflict("you are at full capacity", code="agent_at_capacity")
    if outcome != "ok":
        raise Conflict("another agent took this conversation first", code="already_claimed")
    if not await _record_assignment(session, delivery, escalation, agent, how="claim"):
        await routing.release(agent.id)
        raise Conflict("another agent took this conversation first", code="already_claimed")
    return conversation


async def do_assign_to(
    session: AsyncSession,
    routing: RoutingEngine,
    delivery: Delivery,
    *,
    escalation: Escalation,
    agent: Agent,
    how: str,
    capacity_claimed: bool = False,
) -> bool:
    """Give one waiting escalation that sits in no group queue (held for an advisor) to `agent`: capacity is
    checked in Redis (unless the caller already claimed it), SQL's conditional update guards the rest.
    False if the agent is full or someone else took it."""
    assert agent.id is not None
    assert escalation.id is not None
    await ensure_built(session, routing)
    if not capacity_claimed and (
        await routing.claim(escalation.id, escalation.skill_group, agent.id, must_be_queued=False) != "ok"
    ):
        return False
    if await _record_assignment(session, delivery, escalation, agent, how=how):
        return True
    await routing.release(agent.id)
    return False


async def do_take_over(
    session: AsyncSession, routing: RoutingEngine, delivery: Delivery, *, agent: Agent, conversation: Conversation
) -> None:
    """A video agent answers the call of a conversation held by an agent who can't do video: it moves to them,
    committed with whatever the caller has pending (their answer to the call), or rolled back with it."""
    assert agent.id is not None
    await do_hand_over(
        session,
        routing,
        delivery,
        conversation=conversation,
        to_agent=agent,
        actor_id=agent.id,
        text=f"视频客服{agent.display_name}已接手，您之前说的内容都已保留。",
        action="video_take_over",
        reason="video_take_over",
    )


async def do_hand_over(
    session: AsyncSession,
    routing: RoutingEngine,
    delivery: Delivery,
    *,
    conversation: Conversation,
    to_agent: Agent,
    actor_id: int,
    text: str,
    action: str,
    reason: str,
    new_first_response: bool = False,
) -> None:
    """Move a conversation an agent holds straight to `to_agent` (capacity checked in Redis), tell the customer,
    free the previous holder. `new_first_response`: the new agent has yet to answer (a transfer)."""
    assert to_agent.id is not None
    assert conversation.id is not None
    escalation = await conversations.latest_escalation(session, conversation.id)
    previous = conversation.agent_id
    await ensure_built(session, routing)
    await routing.set_agent(snapshot_of(to_agent))
    if escalation is None:
        raise Conflict(f"{to_agent.display_name} is at full capacity", code="agent_at_capacity")
    assert escalation.id is not None
    if await routing.claim(escalation.id, escalation.skill_group, to_agent.id, must_be_queued=False) != "ok":
        raise Conflict(f"{to_agent.display_name} is at full capacity", code="agent_at_capacity")
    now = utcnow()
    escalation.claimed_by, escalation.claimed_at = to_agent.id, now
    if new_first_response:
        escalation.first_response_at = None
    conversation.agent_id, conversation.updated_at = to_agent.id, now
    notice = Message(
        conversation_id=conversation.id,
        customer_id=conversation.customer_id,
        channel=conversation.current_channel,
        direction=Direction.OUT,
        sender_kind=SenderKind.SYSTEM,
        text=text,
    )
    session.add(notice)
    audit(
        session,
        actor_kind="agent",
        actor_id=actor_id,
        action=action,
        subject=f"conversation:{conversation.id}",
        from_agent=previous,
        to_agent=to_agent.id,
    )
    try:
        await session.commit()
    except Exception:
        await routing.release(to_agent.id)  # the claim in Redis must not outlive a failed commit
        raise
    if previous is not None:
        await routing.release(previous)
        await publish(
            routing.redis,
            agent_channel(previous),
            {"type": "conversation_removed", "conversation_id": conversation.id, "reason": reason},
        )
    await delivery.deliver(conversation, [notice])
    await publish(routing.redis, agent_channel(to_agent.id), {"type": "assigned", "conversation_id": conversation.id})


async def do_requeue(
    session: AsyncSession, routing: RoutingEngine, delivery: Delivery, *, conversation: Conversation, reason: str
) -> None:
    """Put a conversation back at the head of its group's queue, history kept, and tell the customer."""
    assert conversation.id is not None
    escalation = await conversations.latest_escalation(session, conversation.id)
    agent_id = conversation.agent_id
    if escalation is None or conversation.state != ConversationState.WITH_AGENT:
        return
    escalation.claimed_by = escalation.claimed_at = escalation.first_response_at = None
    escalation.requeue_count += 1
    escalation.queued_at = HEAD_OF_QUEUE
    conversation.state = ConversationState.QUEUED
    conversation.agent_id = None
    notice = Message(
        conversation_id=conversation.id,
        customer_id=conversation.customer_id,
        channel=conversation.current_channel,
        direction=Direction.OUT,
        sender_kind=SenderKind.SYSTEM,
        text="抱歉让您久等，正在为您优先安排其他客服，您之前说的内容都已保留。",
    )
    session.add(notice)
    audit(
        session,
        actor_kind="system",
        actor_id=None,
        action="requeue",
        subject=f"conversation:{conversation.id}",
        reason=reason,
        agent_id=agent_id,
    )
    await session.commit()
    if agent_id is not None:
        await routing.release(agent_id)
        await publish(
            routing.redis,
            agent_channel(agent_id),
            {"type": "conversation_removed", "conversation_id": conversation.id, "reason": reason},
        )
    assert escalation.id is not None
    await routing.enqueue(escalation.id, escalation.skill_group, escalation.priority, escalation.queued_at)
    await delivery.deliver(conversation, [notice])
    await delivery.state_changed(conversation)
    await publish(routing.redis, AGENTS_CHANNEL, {"type": "queue_changed", "conversation_id": conversation.id})


async def _record_assignment(
    session: AsyncSession, delivery: Delivery, escalation: Escalation, agent: Agent, *, how: str
) -> bool:
    """Write the assignment; the conditional update is SQL's own guard against a double claim."""
    assert agent.id is not None
    now = utcnow()
    claimed = await repository.claim_escalation(session, escalation.id, agent_id=agent.id, now=now)
    conversation = await session.get(Conversation, escalation.conversation_id)
    if not claimed or conversation is None or conversation.state != ConversationState.QUEUED:
        await session.rollback()
        return False
    conversation.state = ConversationState.WITH_AGENT
    conversation.agent_id = agent.id
    conversation.updated_at = now
    if escalation.queued_at.year > HEAD_OF_QUEUE.year:  # a requeued customer's wait is not known here
        waited = (now - as_utc(escalation.queued_at)).total_seconds()
        QUEUE_WAIT.labels(escalation.skill_group).observe(max(0.0, waited))
    assert conversation.id is not None
    greeting = Message(
        conversation_id=conversation.id,
        customer_id=conversation.customer_id,
        channel=conversation.current_channel,
        direction=Direction.OUT,
        sender_kind=SenderKind.SYSTEM,
        text=f"人工客服{agent.display_name}已接入，您之前说的内容客服都能看到，无需重复。",
    )
    session.add(greeting)
    audit(session, actor_kind="agent", actor_id=agent.id, action=how, subject=f"conversation:{conversation.id}")
    await session.commit()
    await delivery.deliver(conversation, [greeting])
    await delivery.state_changed(conversation)
    await publish(delivery.redis, agent_channel(agent.id), {"type": "assigned", "conversation_id": conversation.id})
    await publish(delivery.redis, AGENTS_CHANNEL, {"type": "queue_changed", "conversation_id": conversation.id})
    return True
