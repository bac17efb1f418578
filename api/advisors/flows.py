"""Advisor work with side effects: assign/reassign (audited), advisor-first routing of a conversation and of
its video call, and the sweep that hands what the advisor didn't take in time to the group."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from api.advisors import holds, repository, service
from api.advisors.models import AdvisorAssignment
from api.agents.models import Agent
from api.audit.models import audit
from api.conversations.delivery import Delivery
from api.conversations.models import Conversation, ConversationState, Escalation
from api.customers.models import Customer
from api.errors import BadRequest, ResourceNotFound
from api.realtime import AGENTS_CHANNEL, agent_channel, publish
from api.routing.engine import RoutingEngine
from api.routing.flows import do_assign_to, do_assign_waiting
from api.timeutil import utcnow
from api.video import repository as video_repo
from api.video import service as video_service
from api.video.models import CallState, VideoCall

log = logging.getLogger(__name__)


async def do_assign_advisor(
    session: AsyncSession, *, supervisor: Agent, customer_id: int, agent_id: int
) -> AdvisorAssignment:
    """Give a customer a named advisor, or move them to another one; the audit trail keeps who had them."""
    if await session.get(Customer, customer_id) is None:
        raise ResourceNotFound("customer not found")
    agent = await session.get(Agent, agent_id)
    if agent is None or not agent.active:
        raise ResourceNotFound("no such agent")
    if agent.role not in ("agent", "supervisor"):
        raise BadRequest("an advisor is an agent who serves customers", code="not_an_advisor")
    assignment = await repository.get_for_customer(session, customer_id)
    previous = assignment.agent_id if assignment else None
    if assignment is None:
        assignment = AdvisorAssignment(customer_id=customer_id, agent_id=agent_id, assigned_by=supervisor.id)
        session.add(assignment)
    else:
        assignment.agent_id, assignment.assigned_by, assignment.assigned_at = agent_id, supervisor.id, utcnow()
    audit(
        session,
        actor_kind="agent",
        actor_id=supervisor.id,
        action="advisor_assign" if previous is None else "advisor_reassign",
        subject=f"customer:{customer_id}",
        from_agent=previous,
        to_agent=agent_id,
    )
    await session.commit()
    return assignment


async def do_remove_advisor(session: AsyncSession, *, supervisor: Agent, customer_id: int) -> None:
    assignment = await repository.get_for_customer(session, customer_id)
    if assignment is None:
        raise ResourceNotFound("this customer has no advisor")
    audit(
        session,
        actor_kind="agent",
        actor_id=supervisor.id,
        action="advisor_remove",
        subject=f"customer:{customer_id}",
        from_agent=assignment.agent_id,
    )
    await session.delete(assignment)
    await session.commit()


async def do_route_advisor_first(
    session: AsyncSession,
    routing: RoutingEngine,
    delivery: Delivery,
    *,
    conversation: Conversation,
    escalation: Escalation,
    waits_by_group: dict[str, int],
    default_wait_s: int,
) -> bool:
    """A freshly queued escalation goes to the customer's advisor (or their appointment's agent) when they are
    online: at once if they have room, else held for them for the group's wait. False: route to the group."""
    assert conversation.id is not None
    assert escalation.id is not None
    preferred = await service.preferred_agent(
        session, customer_id=conversation.customer_id, conversation_id=conversation.id
    )
    if preferred is None:
        return False
    agent, why = preferred
    card = dict(escalation.handoff_card)
    summary = card.get("summary", "")
    if agent.presence != "online":
        note = service.advisor_card(agent, why, first_until=None, online=False)
        escalation.handoff_card = {**card, "advisor": note, "summary": f"{summary} {note['note']}。".strip()}
        await session.commit()
        return False
    wait_s = service.wait_for_group(waits_by_group, default_wait_s, escalation.skill_group)
    direct = service.advisor_card(agent, why, first_until=None, online=True)
    escalation.handoff_card = {**card, "advisor": direct, "summary": f"{summary} {direct['note']}。".strip()}
    await session.flush()
    if await do_assign_to(session, routing, delivery, escalation=escalation, agent=agent, how=f"{why}_first"):
        return True
    if wait_s <= 0:
        await session.refresh(escalation)
        escalation.handoff_card = card
        await session.commit()
        return False
    until = utcnow() + timedelta(seconds=wait_s)
    held = service.advisor_card(agent, why, first_until=until, online=True)
    escalation.handoff_card = {**card, "advisor": held, "summary": f"{summary} {held['note']}。".strip()}
    await session.commit()
    assert agent.id is not None
    await holds.hold(routing.redis, escalation.id, agent.id, until)
    await publish(routing.redis, agent_channel(agent.id), {"type": "queue_changed", "conversation_id": conversation.id})
    return True


async def sweep_held(session: AsyncSession, routing: RoutingEngine, delivery: Delivery, *, limit: int) -> None:
    """Each held escalation: to its advisor once they have room, or to the group queue when the wait is over
    (or the advisor left). Bounded per tick; the one who ends a hold decides (see holds.take)."""
    now = utcnow()
    for escalation_id, agent_id, deadline in await holds.list_held(routing.redis, limit):
        escalation = await session.get(Escalation, escalation_id)
        conversation = await session.get(Conversation, escalation.conversation_id) if escalation else None
        if (
            escalation is None
            or escalation.claimed_by is not None
            or conversation is None  # the escalation's foreign key says it exists
            or conversation.state != ConversationState.QUEUED
        ):
            await holds.take(routing.redis, escalation_id)
            continue
        agent = await session.get(Agent, agent_id)
        available = agent is not None and agent.active and agent.presence == "online"
        assert escalation.id is not None
        if (
            available
            and await routing.claim(escalation.id, escalation.skill_group, agent_id, must_be_queued=False) == "ok"
        ):
            assert agent is not None  # available
            if not await holds.take(routing.redis, escalation_id):
                await routing.release(agent_id)  # someone claimed it by hand meanwhile
                continue
            if not await do_assign_to(
                session,
                routing,
                delivery,
                escalation=escalation,
                agent=agent,
                how="advisor_first",
                capacity_claimed=True,
            ):
                log.info("held escalation %s was taken elsewhere", escalation_id)
            continue
        if (deadline <= now or not available) and await holds.take(routing.redis, escalation_id):
            audit(
                session,
                actor_kind="system",
                actor_id=None,
                action="advisor_wait_over",
                subject=f"conversation:{conversation.id}",
                agent_id=agent_id,
                reason="wait_over" if available else "advisor_unavailable",
            )
            await session.commit()
            assert escalation.id is not None
            await routing.enqueue(escalation.id, escalation.skill_group, escalation.priority, escalation.queued_at)
            await publish(routing.redis, AGENTS_CHANNEL, {"type": "queue_changed", "conversation_id": conversation.id})
            await do_assign_waiting(session, routing, delivery, escalation.skill_group)


async def preferred_video_agent(session: AsyncSession, conversation: Conversation) -> int | None:
    """The agent a queued customer's video call rings first: their appointment's agent or advisor, if online
    and a video agent."""
    assert conversation.id is not None
    preferred = await service.preferred_agent(
        session, customer_id=conversation.customer_id, conversation_id=conversation.id
    )
    if preferred is None:
        return None
    agent, _ = preferred
    return agent.id if agent.presence == "online" and agent.video_capable else None


async def sweep_call_preferences(
    session: AsyncSession, routing: RoutingEngine, *, waits_by_group: dict[str, int], default_wait_s: int, limit: int
) -> None:
    """A call ringing only the customer's advisor moves on: to whoever took the conversation meanwhile (the
    group after the advisor's wait, or a claim), or to the whole group once the group's wait is over."""
    now = utcnow()
    for call, conversation in await repository.calls_ringing_an_advisor(session, limit=limit):
        advisor = call.rung_agent_id
        if conversation.state == ConversationState.WITH_AGENT:
            if conversation.agent_id == advisor:
                continue  # the holder is rung: the ordinary case
            holder = await session.get(Agent, conversation.agent_id)
            rung = holder.id if holder is not None and holder.video_capable else None
        else:
            wait_s = service.wait_for_group(waits_by_group, default_wait_s, call.skill_group)
            if call.ringing_at is None or call.ringing_at + timedelta(seconds=wait_s) > now:
                continue
            rung = None
        if not await video_repo.transition(
            session,
            call,
            from_states=(CallState.RINGING,),
            extra=(col(VideoCall.rung_agent_id) == advisor, col(VideoCall.agent_id).is_(None)),
            rung_agent_id=rung,
        ):
            continue
        video_service.add_event(session, call, "ringing_moved", advisor_id=advisor, rung_agent_id=rung)
        await session.commit()
        escalation = await session.get(Escalation, call.escalation_id) if call.escalation_id else None
        event = {
            "type": "call_ringing",
            "call_id": call.id,
            "conversation_id": conversation.id,
            "state": call.state,
            "skill_group": call.skill_group,
            "rung_agent_id": rung,
            "agent_id": None,
            "summary": escalation.handoff_card.get("summary", "") if escalation else "",
        }
        await publish(routing.redis, AGENTS_CHANNEL, event)
        if rung is not None:
            await publish(routing.redis, agent_channel(rung), event)
