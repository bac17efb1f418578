"""Appointments over HTTP: the customer's booking page (/miniapp/appointments…), the agent's schedule and day
(/agents/…), the supervisor's day per group (/supervisor/appointments/day). Thin: the work is in flows."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query

from api.advisors import repository as advisors
from api.agents.flows import get_for_agent
from api.agents.models import Agent
from api.appointments import flows, repository, service
from api.appointments.day import agent_days
from api.appointments.models import Appointment
from api.appointments.schemas import (
    AdvisorPublic,
    AgentBookRequest,
    AppointmentPublic,
    BookRequest,
    CancelRequest,
    Day,
    Joined,
    Period,
    RescheduleRequest,
    SchedulePublic,
    ScheduleUpdate,
    SlotPublic,
    Slots,
)
from api.bounds import RecordId
from api.db import saved_id
from api.deps import (
    CurrentAgent,
    CurrentCustomer,
    DeliveryDep,
    RedisDep,
    SessionDep,
    SettingsDep,
    Supervisor,
    TriageDep,
)
from api.errors import BadRequest, ResourceNotFound
from api.timeutil import utcnow

router = APIRouter(tags=["appointments"])
GROUP_PATTERN = "^(cards|loans|accounts|wealth|general)$"


# ---- the customer ----


@router.get("/miniapp/appointments/slots", response_model=Slots)
async def slots(
    customer: CurrentCustomer,
    session: SessionDep,
    settings: SettingsDep,
    with_: str = Query("advisor", alias="with", pattern="^(advisor|group)$"),
    group: str = Query("general", pattern=GROUP_PATTERN),
):
    """Free slots with the customer's advisor (`with=advisor`, when they have one) or any agent of a group."""
    assert customer.id is not None
    advisor = await advisors.get_advisor(session, customer.id)
    rules = flows.rules_of(settings)
    if with_ == "advisor" and advisor is not None:
        found = await service.free_slots(session, [advisor], rules)
        mine = AdvisorPublic(agent_id=saved_id(advisor), display_name=advisor.display_name)
        return Slots(advisor=mine, skill_group=None, timezone=settings.timezone, slots=_slots(found))
    found = await service.free_slots(session, await repository.list_group_agents(session, group), rules)
    public = AdvisorPublic(agent_id=saved_id(advisor), display_name=advisor.display_name) if advisor else None
    return Slots(advisor=public, skill_group=group, timezone=settings.timezone, slots=_slots(found))


def _slots(found) -> list[SlotPublic]:
    return [SlotPublic(starts_at=s.starts_at, ends_at=s.ends_at, free_agents=len(s.agent_ids)) for s in found]


@router.get("/miniapp/appointments", response_model=list[AppointmentPublic])
async def my_appointments(customer: CurrentCustomer, session: SessionDep):
    """The customer's appointments from today on (cancelled ones too, so a change by the bank is visible)."""
    assert customer.id is not None
    since = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    rows = await repository.list_for_customer(session, customer.id, since=since)
    return [AppointmentPublic.of(a, await _agent_name(session, a.agent_id)) for a in rows]


@router.post("/miniapp/appointments", response_model=AppointmentPublic)
async def book(
    body: BookRequest, customer: CurrentCustomer, session: SessionDep, redis: RedisDep, settings: SettingsDep
):
    assert customer.id is not None
    advisor = await advisors.get_advisor(session, customer.id)
    if body.with_ == "advisor":
        if advisor is None:
            raise BadRequest("您还没有专属客户经理，请选择业务组预约。", code="no_advisor")
        agents, group = [advisor], body.group or (advisor.skills[0] if advisor.skills else "general")
    else:
        group = body.group or "general"
        agents = await repository.list_group_agents(session, group)
    appointment = await flows.do_book(
        session,
        redis,
        flows.rules_of(settings),
        customer_id=customer.id,
        agents=agents,
        skill_group=group,
        starts_at=body.starts_at,
        mode=body.mode,
        topic=body.topic,
        booked_by="customer",
        actor_id=customer.id,
    )
    return AppointmentPublic.of(appointment, await _agent_name(session, appointment.agent_id))


@router.post("/miniapp/appointments/{appointment_id}/reschedule", response_model=AppointmentPublic)
async def reschedule(
    appointment_id: RecordId,
    body: RescheduleRequest,
    customer: CurrentCustomer,
    session: SessionDep,
    redis: RedisDep,
    delivery: DeliveryDep,
    settings: SettingsDep,
):
    assert customer.id is not None
    appointment = flows.check_owner(await session.get(Appointment, appointment_id), customer_id=customer.id)
    appointment = await flows.do_reschedule(
        session,
        redis,
        delivery,
        flows.rules_of(settings),
        appointment=appointment,
        starts_at=body.starts_at,
        by="customer",
        actor_id=customer.id,
    )
    return AppointmentPublic.of(appointment, await _agent_name(session, appointment.agent_id))


@router.post("/miniapp/appointments/{appointment_id}/cancel", response_model=AppointmentPublic)
async def cancel(
    appointment_id: RecordId,
    body: CancelRequest,
    customer: CurrentCustomer,
    session: SessionDep,
    redis: RedisDep,
    delivery: DeliveryDep,
    settings: SettingsDep,
):
    assert customer.id is not None
    appointment = flows.check_owner(await session.get(Appointment, appointment_id), customer_id=customer.id)
    appointment = await flows.do_cancel(
        session,
        redis,
        delivery,
        flows.rules_of(settings),
        appointment=appointment,
        by="customer",
        actor_id=customer.id,
        reason=body.reason,
    )
    return AppointmentPublic.of(appointment, await _agent_name(session, appointment.agent_id))


@router.post("/miniapp/appointments/{appointment_id}/join", response_model=Joined)
async def join(
    appointment_id: RecordId,
    customer: CurrentCustomer,
    session: SessionDep,
    redis: RedisDep,
    triage: TriageDep,
    settings: SettingsDep,
):
    """The one tap at the slot: queued for the appointment's agent first; a video appointment opens the video page."""
    assert customer.id is not None
    appointment = flows.check_owner(await session.get(Appointment, appointment_id), customer_id=customer.id)
    conversation = await flows.do_join(
        session, redis, triage, settings, customer_id=customer.id, appointment=appointment
    )
    video = appointment.mode == "video"
    return Joined(
        appointment=AppointmentPublic.of(appointment, await _agent_name(session, appointment.agent_id)),
        conversation_id=conversation.id,
        mode=appointment.mode,
        url=f"/h5/video/?conversation_id={conversation.id}" if video else None,
        miniapp_path=f"pages/video/video?conversation_id={conversation.id}" if video else "pages/chat/chat",
    )


# ---- agents: schedule, booking for a customer, the day ----


@router.get("/agents/me/schedule", response_model=SchedulePublic)
async def my_schedule(agent: CurrentAgent, session: SessionDep, settings: SettingsDep):
    assert agent.id is not None
    return await _schedule(session, settings, agent.id)


@router.put("/agents/me/schedule", response_model=SchedulePublic)
async def set_my_schedule(body: ScheduleUpdate, agent: CurrentAgent, session: SessionDep, settings: SettingsDep):
    """The agent's weekly working periods (in the bank's time zone): the slots customers can book."""
    assert agent.id is not None
    await flows.do_set_schedule(
        session, actor=agent, agent=agent, periods=_periods(body), slot_minutes=settings.appointment_slot_minutes
    )
    return await _schedule(session, settings, agent.id)


@router.put("/supervisor/agents/{agent_id}/schedule", response_model=SchedulePublic)
async def set_schedule(
    agent_id: RecordId, body: ScheduleUpdate, supervisor: Supervisor, session: SessionDep, settings: SettingsDep
):
    agent = await session.get(Agent, agent_id)
    if agent is None:
        raise ResourceNotFound("no such agent")
    await flows.do_set_schedule(
        session, actor=supervisor, agent=agent, periods=_periods(body), slot_minutes=settings.appointment_slot_minutes
    )
    assert agent.id is not None
    return await _schedule(session, settings, agent.id)


def _periods(body: ScheduleUpdate) -> list[tuple[int, int, int]]:
    return [(p.weekday, service.parse_hhmm(p.start), service.parse_hhmm(p.end)) for p in body.periods]


async def _schedule(session, settings, agent_id: RecordId) -> SchedulePublic:
    rows = await repository.list_schedule(session, [agent_id])
    periods = [
        Period(weekday=r.weekday, start=service.format_hhmm(r.start_minute), end=service.format_hhmm(r.end_minute))
        for r in rows
    ]
    return SchedulePublic(
        agent_id=agent_id, timezone=settings.timezone, slot_minutes=settings.appointment_slot_minutes, periods=periods
    )


@router.get("/agents/appointments/slots", response_model=Slots)
async def agent_slots(agent: CurrentAgent, session: SessionDep, settings: SettingsDep):
    """The agent's own free slots (to offer a customer a time)."""
    found = await service.free_slots(session, [agent], flows.rules_of(settings))
    return Slots(advisor=None, skill_group=None, timezone=settings.timezone, slots=_slots(found))


@router.post("/agents/appointments", response_model=AppointmentPublic)
async def agent_book(
    body: AgentBookRequest,
    agent: CurrentAgent,
    session: SessionDep,
    redis: RedisDep,
    delivery: DeliveryDep,
    settings: SettingsDep,
):
    """The agent books a slot of their own for the customer of a conversation they may read."""
    assert agent.id is not None
    conversation = await get_for_agent(session, agent=agent, conversation_id=body.conversation_id)
    appointment = await flows.do_book(
        session,
        redis,
        flows.rules_of(settings),
        customer_id=conversation.customer_id,
        agents=[agent],
        skill_group=agent.skills[0] if agent.skills else "general",
        starts_at=body.starts_at,
        mode=body.mode,
        topic=body.topic,
        booked_by="agent",
        actor_id=agent.id,
        delivery=delivery,
    )
    return AppointmentPublic.of(appointment, agent.display_name)


@router.post("/agents/appointments/{appointment_id}/reschedule", response_model=AppointmentPublic)
async def agent_reschedule(
    appointment_id: RecordId,
    body: RescheduleRequest,
    agent: CurrentAgent,
    session: SessionDep,
    redis: RedisDep,
    delivery: DeliveryDep,
    settings: SettingsDep,
):
    assert agent.id is not None
    appointment = flows.check_owner(await session.get(Appointment, appointment_id), agent=agent)
    appointment = await flows.do_reschedule(
        session,
        redis,
        delivery,
        flows.rules_of(settings),
        appointment=appointment,
        starts_at=body.starts_at,
        by="agent",
        actor_id=agent.id,
    )
    return AppointmentPublic.of(appointment, await _agent_name(session, appointment.agent_id))


@router.post("/agents/appointments/{appointment_id}/cancel", response_model=AppointmentPublic)
async def agent_cancel(
    appointment_id: RecordId,
    body: CancelRequest,
    agent: CurrentAgent,
    session: SessionDep,
    redis: RedisDep,
    delivery: DeliveryDep,
    settings: SettingsDep,
):
    assert agent.id is not None
    appointment = flows.check_owner(await session.get(Appointment, appointment_id), agent=agent)
    appointment = await flows.do_cancel(
        session,
        redis,
        delivery,
        flows.rules_of(settings),
        appointment=appointment,
        by="agent",
        actor_id=agent.id,
        reason=body.reason,
    )
    return AppointmentPublic.of(appointment, await _agent_name(session, appointment.agent_id))


@router.get("/agents/appointments/day", response_model=Day)
async def my_day(agent: CurrentAgent, session: SessionDep, settings: SettingsDep, day: date | None = None):
    """The agent's appointments of one day (today by default), each with its case card."""
    day, (start, end) = _day(settings, day)
    return Day(date=day, timezone=settings.timezone, agents=await agent_days(session, [agent], start=start, end=end))


@router.get("/supervisor/appointments/day", response_model=Day)
async def group_day(
    supervisor: Supervisor,
    session: SessionDep,
    settings: SettingsDep,
    group: str = Query("general", pattern=GROUP_PATTERN),
    day: date | None = None,
):
    """The day of every agent of a group, for supervisors."""
    day, (start, end) = _day(settings, day)
    agents = await repository.list_group_agents(session, group)
    return Day(date=day, timezone=settings.timezone, agents=await agent_days(session, agents, start=start, end=end))


def _day(settings, day: date | None):
    tz = ZoneInfo(settings.timezone)
    day = day or utcnow().astimezone(tz).date()
    return day, service.day_bounds(day, tz)


async def _agent_name(session, agent_id: RecordId) -> str | None:
    agent = await session.get(Agent, agent_id)
    return agent.display_name if agent else None
