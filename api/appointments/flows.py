"""Appointment work with side effects (`do_*`): book, reschedule, cancel, join; each writes, commits, then tells
the other side. A slot is never double-booked: the database's partial unique index decides (see models.py)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from redis.asyncio import Redis
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from api.advisors import holds
from api.agents.models import Agent
from api.appointments import repository, service
from api.appointments.models import Appointment, AppointmentState, WorkSchedule
from api.appointments.schemas import AppointmentPublic
from api.audit.models import audit
from api.conversations import repository as conversations
from api.conversations import service as conversation_service
from api.conversations.delivery import Delivery
from api.conversations.flows import do_route_escalation
from api.conversations.models import Conversation, ConversationState, Direction, Escalation, Message, SenderKind
from api.db import saved_id
from api.errors import BadRequest, Conflict, NotPermitted, ResourceNotFound
from api.realtime import agent_channel, publish, publish_to_customer
from api.routing.flows import do_hand_over
from api.settings import Settings
from api.timeutil import utcnow

log = logging.getLogger(__name__)
SLOT_TAKEN = "这个时间刚被别人约走了，请换一个时间。"
MODE_NAMES = {"video": "视频", "chat": "文字"}


def rules_of(settings: Settings) -> service.SlotRules:
    return service.SlotRules(
        tz=ZoneInfo(settings.timezone),
        slot_minutes=settings.appointment_slot_minutes,
        booking_days=settings.appointment_booking_days,
        min_notice_minutes=settings.appointment_min_notice_minutes,
    )


def local_text(moment: datetime, tz: ZoneInfo) -> str:
    return moment.astimezone(tz).strftime("%m月%d日 %H:%M")


async def do_set_schedule(
    session: AsyncSession, *, actor: Agent, agent: Agent, periods: list[tuple[int, int, int]], slot_minutes: int
) -> None:
    """Replace an agent's weekly working periods (booked appointments stay: they were promised)."""
    assert agent.id is not None
    service.check_periods(periods, slot_minutes)
    await repository.clear_schedule(session, agent.id)
    session.add_all(
        WorkSchedule(agent_id=agent.id, weekday=weekday, start_minute=start, end_minute=end)
        for weekday, start, end in periods
    )
    audit(
        session,
        actor_kind="agent",
        actor_id=actor.id,
        action="schedule_set",
        subject=f"agent:{agent.id}",
        periods=[list(p) for p in periods],
    )
    await session.commit()


async def do_book(
    session: AsyncSession,
    redis: Redis,
    rules: service.SlotRules,
    *,
    customer_id: int,
    agents: list[Agent],
    skill_group: str,
    starts_at: datetime,
    mode: str,
    topic: str,
    booked_by: str,
    actor_id: int,
    conversation_id: int | None = None,
    delivery: Delivery | None = None,
) -> Appointment:
    """Book the slot at `starts_at` with the first of `agents` free then. Must be the unit of work's first write:
    a lost race rolls the session back and tries the next free agent, then answers 409."""
    starts_at = _utc(starts_at)
    slot = next((s for s in await service.free_slots(session, agents, rules) if s.starts_at == starts_at), None)
    if slot is None:
        raise Conflict("这个时间不可预约，请从可选时间中选择。", code="slot_unavailable")
    for agent_id in slot.agent_ids:
        appointment = Appointment(
            customer_id=customer_id,
            agent_id=agent_id,
            skill_group=skill_group,
            mode=mode,
            topic=topic.strip(),
            starts_at=slot.starts_at,
            ends_at=slot.ends_at,
            booked_by=booked_by,
            conversation_id=conversation_id,
        )
        session.add(appointment)
        try:
            await session.flush()
        except IntegrityError:
            await session.rollback()  # someone else got this agent's slot first: try the next agent
            continue
        audit(
            session,
            actor_kind=booked_by,
            actor_id=actor_id,
            action="appointment_book",
            subject=f"appointment:{appointment.id}",
            agent_id=agent_id,
            starts_at=slot.starts_at.isoformat(),
        )
        await session.commit()
        await _tell(session, redis, delivery, appointment, "booked", by=booked_by, tz=rules.tz)
        return appointment
    raise Conflict(SLOT_TAKEN, code="slot_taken")


async def do_reschedule(
    session: AsyncSession,
    redis: Redis,
    delivery: Delivery,
    rules: service.SlotRules,
    *,
    appointment: Appointment,
    starts_at: datetime,
    by: str,
    actor_id: int,
) -> Appointment:
    """Move a booked appointment to another free slot of the same agent (409 if someone got it first)."""
    if appointment.state != AppointmentState.BOOKED:
        raise Conflict("只有尚未开始的预约可以改期。", code="not_booked")
    agent = await session.get(Agent, appointment.agent_id)
    assert agent is not None  # the appointment's foreign key
    starts_at = _utc(starts_at)
    slot = next((s for s in await service.free_slots(session, [agent], rules) if s.starts_at == starts_at), None)
    if slot is None:
        raise Conflict("这个时间不可预约，请从可选时间中选择。", code="slot_unavailable")
    previous = appointment.starts_at
    appointment.starts_at, appointment.ends_at = slot.starts_at, slot.ends_at
    appointment.reminder_state = appointment.reminded_at = None
    appointment.updated_at = utcnow()
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise Conflict(SLOT_TAKEN, code="slot_taken") from None
    audit(
        session,
        actor_kind=by,
        actor_id=actor_id,
        action="appointment_reschedule",
        subject=f"appointment:{appointment.id}",
        from_starts_at=previous.isoformat(),
        to_starts_at=slot.starts_at.isoformat(),
    )
    await session.commit()
    await _tell(session, redis, delivery, appointment, "rescheduled", by=by, tz=rules.tz)
    return appointment


async def do_cancel(
    session: AsyncSession,
    redis: Redis,
    delivery: Delivery,
    rules: service.SlotRules,
    *,
    appointment: Appointment,
    by: str,
    actor_id: int,
    reason: str | None,
) -> Appointment:
    """Cancel a booked appointment; its slot is free again at once."""
    if appointment.state != AppointmentState.BOOKED:
        raise Conflict("只有尚未开始的预约可以取消。", code="not_booked")
    appointment.state, appointment.holds_slot = AppointmentState.CANCELLED, False
    appointment.cancelled_by, appointment.cancel_reason, appointment.updated_at = by, reason, utcnow()
    audit(
        session,
        actor_kind=by,
        actor_id=actor_id,
        action="appointment_cancel",
        subject=f"appointment:{appointment.id}",
        reason=reason,
    )
    await session.commit()
    await _tell(session, redis, delivery, appointment, "cancelled", by=by, tz=rules.tz)
    return appointment


async def do_join(
    session: AsyncSession, redis: Redis, triage, settings: Settings, *, customer_id: int, appointment: Appointment
) -> Conversation:
    """The customer's one tap at the slot: their conversation is queued for the appointment's agent first
    (advisor-first routing), with the appointment on the handoff card. A repeated tap returns the same."""

    now = utcnow()
    if appointment.state == AppointmentState.JOINED and appointment.conversation_id:
        conversation = await session.get(Conversation, appointment.conversation_id)
        if conversation is not None and conversation.state != ConversationState.CLOSED:
            return conversation
    if appointment.state not in (AppointmentState.BOOKED, AppointmentState.JOINED):
        raise Conflict("这个预约已取消或已结束。", code="not_booked")
    if now < appointment.starts_at - timedelta(minutes=settings.appointment_join_early_minutes):
        raise Conflict("还没到预约时间，请在开始前几分钟再进入。", code="too_early")
    if now > appointment.ends_at:
        raise Conflict("预约时间已过，请重新预约。", code="too_late")
    agent = await session.get(Agent, appointment.agent_id)
    assert agent is not None  # the appointment's foreign key
    conversation = await conversation_service.open_for_message(session, customer_id=customer_id, channel="miniapp")
    appointment.state, appointment.joined_at = AppointmentState.JOINED, now
    appointment.conversation_id, appointment.updated_at = conversation.id, now
    tz = ZoneInfo(settings.timezone)
    card_note = {
        "id": appointment.id,
        "starts_at": appointment.starts_at.isoformat(),
        "mode": appointment.mode,
        "topic": appointment.topic,
        "agent_id": agent.id,
        "agent_name": agent.display_name,
    }
    summary = f"客户按预约（{local_text(appointment.starts_at, tz)}，{MODE_NAMES.get(appointment.mode, '')}）进入"
    if appointment.topic:
        summary += f"，预约事项：{appointment.topic}"
    route = conversation.state in (ConversationState.BOT, ConversationState.QUEUED)
    hand_over = conversation.state == ConversationState.WITH_AGENT and conversation.agent_id != agent.id
    if conversation.state == ConversationState.QUEUED:
        await _requeue_for_appointment(session, triage, conversation, appointment, card_note, summary)
    elif conversation.state == ConversationState.BOT:
        context = await conversation_service.rebuild_context(session, conversation)
        assert conversation.id is not None
        escalation = Escalation(
            conversation_id=conversation.id,
            reason="appointment",
            intent=conversation.intent,
            skill_group=appointment.skill_group,
            priority=1,
            mode=appointment.mode,
            handoff_card={
                "intent": conversation.intent,
                "slots": dict(conversation.slots),
                "mode": appointment.mode,
                "skill_group": appointment.skill_group,
                "reason": "appointment",
                "channel_path": list(conversation.channel_path),
                "identity_status": context.identity_status,
                "bot_said": [],
                "appointment": card_note,
                "summary": summary + "。",
            },
        )
        session.add(escalation)
        conversation.state = ConversationState.QUEUED
    text = f"您已按预约进入，正在为您接通客户经理{agent.display_name}，请稍候。"
    assert conversation.id is not None
    notice = Message(
        conversation_id=conversation.id,
        customer_id=customer_id,
        channel=conversation.current_channel,
        direction=Direction.OUT,
        sender_kind=SenderKind.SYSTEM,
        text=text,
    )
    session.add(notice)
    audit(
        session,
        actor_kind="customer",
        actor_id=customer_id,
        action="appointment_join",
        subject=f"appointment:{appointment.id}",
        conversation_id=conversation.id,
    )
    await session.commit()
    await triage.delivery.deliver(conversation, [notice])
    await triage.delivery.state_changed(conversation)
    await publish(
        redis, agent_channel(saved_id(agent)), {"type": "appointment_joined", "appointment_id": appointment.id}
    )
    if route:
        await do_route_escalation(session, redis, triage, conversation)
    elif hand_over and agent.presence == "online":
        await _hand_over(session, triage, conversation, agent)
    return conversation


async def _hand_over(session: AsyncSession, triage, conversation: Conversation, agent: Agent) -> None:
    """The customer is with another agent when their appointment starts: it moves to the appointment's agent
    if they have room (otherwise the current agent keeps it, and the card shows the appointment)."""
    assert agent.id is not None

    try:
        await do_hand_over(
            session,
            triage.routing,
            triage.delivery,
            conversation=conversation,
            to_agent=agent,
            actor_id=agent.id,
            text=f"您预约的客户经理{agent.display_name}已接手，您之前说的内容都已保留。",
            action="appointment_hand_over",
            reason="appointment",
            new_first_response=True,
        )
    except Conflict:
        log.info("appointment agent %s is full: conversation %s stays with its agent", agent.id, conversation.id)


async def _requeue_for_appointment(
    session: AsyncSession, triage, conversation: Conversation, appointment: Appointment, note: dict, summary: str
) -> None:
    """A customer already waiting joins by appointment: their escalation leaves its queue (or hold) and is
    routed again, for the appointment's agent first, with the appointment on its card."""
    assert conversation.id is not None

    escalation = await conversations.open_escalation(session, conversation.id)
    if escalation is None:
        return
    assert escalation.id is not None
    await holds.take(triage.routing.redis, escalation.id)
    await triage.routing.remove(escalation.id, escalation.skill_group)
    card = dict(escalation.handoff_card)
    escalation.skill_group, escalation.mode = appointment.skill_group, appointment.mode
    escalation.priority = max(escalation.priority, 1)
    escalation.handoff_card = {
        **card,
        "mode": appointment.mode,
        "skill_group": appointment.skill_group,
        "appointment": note,
        "summary": f"{summary}。{card.get('summary', '')}",
    }


async def _tell(
    session: AsyncSession,
    redis: Redis,
    delivery: Delivery | None,
    appointment: Appointment,
    change: str,
    *,
    by: str,
    tz: ZoneInfo,
) -> None:
    """The other side hears of it: the agent in the console, the customer on their pages (and, when the agent
    changed it, in their open conversation)."""
    agent = await session.get(Agent, appointment.agent_id)
    assert agent is not None  # the appointment's foreign key
    public = AppointmentPublic.of(appointment, agent.display_name if agent else None).model_dump(mode="json")
    await publish(
        redis,
        agent_channel(appointment.agent_id),
        {"type": "appointment_changed", "change": change, "by": by, "appointment": public},
    )
    await publish_to_customer(
        redis, appointment.customer_id, {"type": "appointment", "change": change, "appointment": public}
    )
    if by != "agent" or delivery is None:
        return
    conversation = await conversations.open_conversation(session, appointment.customer_id)
    if conversation is None:
        return
    words = {"rescheduled": "已改到", "cancelled": "已取消", "booked": "已预约"}[change]
    text = f"客户经理{agent.display_name}{words}您的预约：{local_text(appointment.starts_at, tz)}。"
    assert conversation.id is not None
    message = Message(
        conversation_id=conversation.id,
        customer_id=conversation.customer_id,
        channel=conversation.current_channel,
        direction=Direction.OUT,
        sender_kind=SenderKind.SYSTEM,
        text=text,
        payload={"type": "appointment", "appointment_id": appointment.id},
    )
    session.add(message)
    await session.commit()
    await delivery.deliver(conversation, [message])


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise BadRequest("starts_at needs a time zone (e.g. 2026-12-02T09:00:00+08:00)", code="naive_time")
    return moment.astimezone(ZoneInfo("UTC"))


def check_owner(
    appointment: Appointment | None, *, customer_id: int | None = None, agent: Agent | None = None
) -> Appointment:
    """The customer's own appointment, or one an agent may change (theirs; any for supervisors)."""
    if appointment is None:
        raise ResourceNotFound("appointment not found")
    if customer_id is not None and appointment.customer_id != customer_id:
        raise ResourceNotFound("appointment not found")
    if agent is not None and appointment.agent_id != agent.id and agent.role not in ("supervisor", "admin"):
        raise NotPermitted("this appointment belongs to another agent")
    return appointment
