"""Queries about schedules and appointments."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, func, or_, update
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.agents.models import Agent
from api.appointments.models import Appointment, AppointmentState, WorkSchedule
from api.customers.models import Channel, ChannelIdentity


async def list_schedule(session: AsyncSession, agent_ids: list[int]) -> list[WorkSchedule]:
    statement = (
        select(WorkSchedule)
        .where(col(WorkSchedule.agent_id).in_(agent_ids))
        .order_by(col(WorkSchedule.agent_id), col(WorkSchedule.weekday), col(WorkSchedule.start_minute))
    )
    return list((await session.exec(statement)).all())


async def taken_slots(
    session: AsyncSession, agent_ids: list[int], start: datetime, end: datetime
) -> set[tuple[int, datetime]]:
    """(agent, slot start) of every appointment still holding its slot in [start, end)."""
    statement = select(Appointment.agent_id, Appointment.starts_at).where(
        col(Appointment.agent_id).in_(agent_ids),
        col(Appointment.holds_slot).is_(True),
        col(Appointment.starts_at) >= start,
        col(Appointment.starts_at) < end,
    )
    return {(agent_id, starts_at) for agent_id, starts_at in (await session.exec(statement)).all()}


async def list_group_agents(session: AsyncSession, group: str) -> list[Agent]:
    """Active agents with this skill (skills are a JSON list, so filtered here)."""
    agents = (await session.exec(select(Agent).where(col(Agent.active).is_(True)).order_by(col(Agent.id)))).all()
    return [agent for agent in agents if group in agent.skills and agent.role in ("agent", "supervisor")]


async def list_for_customer(session: AsyncSession, customer_id: int, *, since: datetime) -> list[Appointment]:
    statement = (
        select(Appointment)
        .where(Appointment.customer_id == customer_id, col(Appointment.ends_at) >= since)
        .order_by(col(Appointment.starts_at))
    )
    return list((await session.exec(statement)).all())


async def list_day(
    session: AsyncSession, *, start: datetime, end: datetime, agent_ids: list[int] | None = None
) -> list[Appointment]:
    """Appointments starting in [start, end) (cancelled ones too: the day shows what changed)."""
    statement = (
        select(Appointment)
        .where(col(Appointment.starts_at) >= start, col(Appointment.starts_at) < end)
        .order_by(col(Appointment.starts_at), col(Appointment.agent_id))
    )
    if agent_ids is not None:
        statement = statement.where(col(Appointment.agent_id).in_(agent_ids))
    return list((await session.exec(statement)).all())


async def count_by_state(session: AsyncSession, customer_id: int) -> dict[str, int]:
    statement = (
        select(Appointment.state, func.count())
        .where(Appointment.customer_id == customer_id)
        .group_by(Appointment.state)
    )
    return dict((await session.exec(statement)).all())


def reminder_claimable(stale_before: datetime):
    """Not yet reminded, or claimed by a worker whose lease ran out (it died while sending)."""
    return or_(
        col(Appointment.reminder_state).is_(None),
        and_(col(Appointment.reminder_state) == "sending", col(Appointment.reminded_at) < stale_before),
    )


async def due_reminders(
    session: AsyncSession, *, now: datetime, horizon: datetime, stale_before: datetime, limit: int
) -> list[int]:
    statement = (
        select(Appointment.id)
        .where(
            Appointment.state == AppointmentState.BOOKED,
            reminder_claimable(stale_before),
            col(Appointment.starts_at) > now,
            col(Appointment.starts_at) <= horizon,
        )
        .order_by(col(Appointment.starts_at))
        .limit(limit)
    )
    return [appointment_id for appointment_id in (await session.exec(statement)).all() if appointment_id is not None]


async def past_unattended(session: AsyncSession, *, before: datetime, limit: int) -> list[Appointment]:
    statement = (
        select(Appointment)
        .where(Appointment.state == AppointmentState.BOOKED, col(Appointment.starts_at) < before)
        .limit(limit)
    )
    return list((await session.exec(statement)).all())


async def past_joined(session: AsyncSession, *, now: datetime, limit: int) -> list[Appointment]:
    statement = (
        select(Appointment)
        .where(Appointment.state == AppointmentState.JOINED, col(Appointment.ends_at) < now)
        .limit(limit)
    )
    return list((await session.exec(statement)).all())


async def claim(session: AsyncSession, appointment_id: int, *, where, **values) -> bool:
    """Update the appointment only if `where` still holds; True for the one worker whose update matched."""
    result = await session.exec(
        update(Appointment)
        .where(col(Appointment.id) == appointment_id, *where)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


async def clear_schedule(session: AsyncSession, agent_id: int) -> None:
    await session.exec(delete(WorkSchedule).where(col(WorkSchedule.agent_id) == agent_id))


async def miniapp_identity(session: AsyncSession, *, customer_id: int, app_id: str) -> ChannelIdentity | None:
    """The customer's identity in our mini-program (where reminders are sent as subscribe messages)."""
    statement = select(ChannelIdentity).where(
        ChannelIdentity.customer_id == customer_id,
        ChannelIdentity.channel == Channel.MINIAPP,
        ChannelIdentity.app_id == app_id,
    )
    return (await session.exec(statement)).first()
