"""Slots from agents' weekly schedules (in the bank's time zone), and the bot's booking offer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from sqlmodel.ext.asyncio.session import AsyncSession

from api.agents import repository as agent_records
from api.agents.models import Agent
from api.appointments import repository
from api.appointments.models import WorkSchedule
from api.conversations import repository as conversation_records
from api.conversations.models import Escalation
from api.db import saved_id
from api.errors import BadRequest
from api.routing.service import estimated_wait_minutes
from api.timeutil import utcnow

# The cards carry the bare page: the client adds a single-use `advisor_page` ticket (POST /miniapp/tickets) when
# it opens it, so no credential is ever stored in a message or sent in a URL (docs/security.md).
BOOKING_PAGE = "/h5/advisor/booking.html"
BOOKING_MINIAPP_PATH = "pages/booking/booking"
BOOKING_LINK_TEXT = "点这里预约客户经理"


@dataclass(frozen=True)
class SlotRules:
    tz: ZoneInfo
    slot_minutes: int
    booking_days: int
    min_notice_minutes: int


@dataclass(frozen=True)
class Slot:
    starts_at: datetime
    ends_at: datetime
    agent_ids: tuple[int, ...]  # who is free then


def parse_hhmm(value: str) -> int:
    """'09:30' -> 570; the schedule's clock is minutes after midnight."""
    try:
        hours, minutes = value.split(":")
        total = int(hours) * 60 + int(minutes)
    except ValueError:
        raise BadRequest(f"time {value!r} is not HH:MM", code="bad_time") from None
    if not 0 <= total <= 24 * 60 or not 0 <= int(minutes) < 60:
        raise BadRequest(f"time {value!r} is not a time of day", code="bad_time")
    return total


def format_hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def check_periods(periods: list[tuple[int, int, int]], slot_minutes: int) -> None:
    """Each period holds at least one slot, and an agent's periods on one day don't overlap."""
    by_day: dict[int, list[tuple[int, int]]] = {}
    for weekday, start, end in periods:
        if end - start < slot_minutes:
            raise BadRequest(f"a working period must be at least {slot_minutes} minutes", code="period_too_short")
        by_day.setdefault(weekday, []).append((start, end))
    for spans in by_day.values():
        spans.sort()
        for (_, end), (start, _) in pairwise(spans):
            if start < end:
                raise BadRequest("working periods on one day overlap", code="periods_overlap")


def slot_starts(schedule: list[WorkSchedule], day: date, rules: SlotRules) -> list[tuple[int, datetime]]:
    """(agent id, slot start in UTC) of every slot the schedule gives on `day` (local date)."""
    starts = []
    for period in schedule:
        if period.weekday != day.weekday():
            continue
        minute = period.start_minute
        while minute + rules.slot_minutes <= period.end_minute:
            local = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=rules.tz)
            starts.append((period.agent_id, local.astimezone(ZoneInfo("UTC"))))
            minute += rules.slot_minutes
    return starts


async def free_slots(
    session: AsyncSession, agents: list[Agent], rules: SlotRules, *, now: datetime | None = None
) -> list[Slot]:
    """Bookable slots of these agents over the booking window, soonest first, each with who is free."""
    now = now or utcnow()
    ids = [saved_id(agent) for agent in agents]
    if not ids:
        return []
    schedule = await repository.list_schedule(session, ids)
    earliest = now + timedelta(minutes=rules.min_notice_minutes)
    today = now.astimezone(rules.tz).date()
    horizon = now + timedelta(days=rules.booking_days + 1)
    taken = await repository.taken_slots(session, ids, now, horizon)
    free: dict[datetime, list[int]] = {}
    for offset in range(rules.booking_days + 1):
        for agent_id, starts_at in slot_starts(schedule, today + timedelta(days=offset), rules):
            if starts_at < earliest or (agent_id, starts_at) in taken:
                continue
            free.setdefault(starts_at, []).append(agent_id)
    length = timedelta(minutes=rules.slot_minutes)
    return [Slot(start, start + length, tuple(sorted(free[start]))) for start in sorted(free)]


def day_bounds(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC instants a local day starts and ends."""
    start = datetime.combine(day, time(0), tzinfo=tz)
    return start.astimezone(ZoneInfo("UTC")), (start + timedelta(days=1)).astimezone(ZoneInfo("UTC"))


async def booking_offer(
    session: AsyncSession, escalation: Escalation, avg_handle_s: int, offer_wait_minutes: int
) -> tuple[str, dict] | None:
    """The bot's offer to book a time instead of waiting: when nobody of the group is online or the wait is long."""
    online = await agent_records.count_online_in(session, escalation.skill_group)
    position = await conversation_records.queue_position(session, escalation)
    minutes = estimated_wait_minutes(position, online, avg_handle_s)
    if online and minutes < offer_wait_minutes:
        return None
    # With nobody online the queue notice that follows says so plainly (and offers a message); this only adds
    # the other way.
    reason = "没有客服在线时，" if not online else f"现在排队预计要等约{minutes}分钟。"
    text = f"{reason}您也可以预约一个方便的时间，由客户经理按时视频或文字为您服务。"
    return text, booking_invite()


def booking_invite() -> dict:
    """A link to the booking page (the mini-program page opens the same H5 page with a single-use ticket)."""
    return {
        "type": "booking_invite",
        "url": BOOKING_PAGE,
        "miniapp_path": BOOKING_MINIAPP_PATH,
        "link_text": BOOKING_LINK_TEXT,
    }
