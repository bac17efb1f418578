"""The appointment sweep's work: reminders before the slot (a WeChat subscribe message), no-shows and
completed appointments after it. Bounded per tick; safe with several workers because every row is claimed
by a conditional UPDATE (exactly one worker's update matches), not by reading first. A reminder's claim is a
lease (`appointment_reminder_lease_s`): if its worker dies while sending, another sends it after the lease —
at least once, so rarely twice, never lost."""

from __future__ import annotations

import logging
from datetime import timedelta
from zoneinfo import ZoneInfo

from redis.asyncio import Redis
from sqlmodel.ext.asyncio.session import AsyncSession

from api.agents.models import Agent
from api.appointments import repository
from api.appointments.flows import local_text
from api.appointments.models import Appointment, AppointmentState
from api.audit.models import audit
from api.channels.wechat_platform import WeChatApiError, WeChatPlatform
from api.realtime import agent_channel, publish, publish_to_customer
from api.settings import Settings
from api.timeutil import utcnow

log = logging.getLogger(__name__)
NO_GRANT = 43101  # the customer granted no subscribe message for this template


async def _claim(session: AsyncSession, appointment_id: int, *, where, **values) -> bool:
    won = await repository.claim(session, appointment_id, where=where, **values)
    await session.commit()
    return won


async def send_due_reminders(
    session: AsyncSession, redis: Redis, platform: WeChatPlatform, settings: Settings
) -> list[int]:
    """Remind customers whose slot starts within `appointment_reminder_minutes`; returns the ids handled here."""
    now = utcnow()
    horizon = now + timedelta(minutes=settings.appointment_reminder_minutes)
    stale_before = now - timedelta(seconds=settings.appointment_reminder_lease_s)
    handled = []
    for appointment_id in await repository.due_reminders(
        session, now=now, horizon=horizon, stale_before=stale_before, limit=settings.appointment_sweep_batch
    ):
        # The claim is a lease (reminded_at holds when it was taken): a worker that dies mid-send doesn't leave
        # the reminder in "sending" for ever; another takes it once the lease is over.
        won = await _claim(
            session,
            appointment_id,
            where=(repository.reminder_claimable(stale_before), Appointment.state == AppointmentState.BOOKED),
            reminder_state="sending",
            reminded_at=now,
        )
        if not won:
            continue  # another worker has it
        appointment = await session.get(Appointment, appointment_id)
        assert appointment is not None  # the conditional update above just matched it
        await session.refresh(appointment)
        outcome = await _remind(session, redis, platform, settings, appointment)
        appointment.reminder_state, appointment.reminded_at = outcome, utcnow()
        audit(
            session,
            actor_kind="system",
            actor_id=None,
            action="appointment_reminder",
            subject=f"appointment:{appointment.id}",
            outcome=outcome,
        )
        await session.commit()
        handled.append(appointment_id)
    return handled


async def _remind(
    session: AsyncSession, redis: Redis, platform: WeChatPlatform, settings: Settings, appointment: Appointment
) -> str:
    """One subscribe message (the customer granted it by a tap when booking); 'refused' without a grant."""
    tz = ZoneInfo(settings.timezone)
    agent = await session.get(Agent, appointment.agent_id)
    await publish_to_customer(
        redis, appointment.customer_id, {"type": "appointment_reminder", "appointment_id": appointment.id}
    )
    identity = await repository.miniapp_identity(
        session, customer_id=appointment.customer_id, app_id=settings.miniapp_app_id
    )
    if identity is None:
        return "no_channel"
    body = {
        "touser": identity.openid,
        "template_id": settings.appointment_reminder_template_id,
        "page": f"pages/booking/booking?appointment_id={appointment.id}",
        "data": {
            "thing1": {"value": (appointment.topic or "预约咨询")[:20]},
            "time2": {"value": local_text(appointment.starts_at, tz)},
            "name3": {"value": (agent.display_name if agent else "客户经理")[:10]},
            "phrase4": {"value": "视频" if appointment.mode == "video" else "文字"},
        },
    }
    try:
        await platform.send_subscribe(body)
    except WeChatApiError as exc:
        if exc.errcode == NO_GRANT:
            return "refused"
        log.warning("appointment %s: reminder failed (%s)", appointment.id, exc.errcode)
        return "failed"
    return "sent"


async def record_attendance(session: AsyncSession, redis: Redis, settings: Settings) -> None:
    """Booked but never joined, past the grace: a no-show. Joined and over: completed."""
    now = utcnow()
    late = now - timedelta(minutes=settings.appointment_no_show_minutes)
    for appointment in await repository.past_unattended(session, before=late, limit=settings.appointment_sweep_batch):
        assert appointment.id is not None
        if not await _claim(
            session,
            appointment.id,
            where=(Appointment.state == AppointmentState.BOOKED,),
            state=AppointmentState.NO_SHOW,
            updated_at=now,
        ):
            continue
        audit(
            session,
            actor_kind="system",
            actor_id=None,
            action="appointment_no_show",
            subject=f"appointment:{appointment.id}",
        )
        await session.commit()
        await publish(
            redis,
            agent_channel(appointment.agent_id),
            {"type": "appointment_changed", "change": "no_show", "by": "system", "appointment_id": appointment.id},
        )
    for appointment in await repository.past_joined(session, now=now, limit=settings.appointment_sweep_batch):
        assert appointment.id is not None
        await _claim(
            session,
            appointment.id,
            where=(Appointment.state == AppointmentState.JOINED,),
            state=AppointmentState.COMPLETED,
            updated_at=now,
        )
