"""Supervisor figures for today, straight from the SQL record."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import datetime, time
from zoneinfo import ZoneInfo

from sqlmodel.ext.asyncio.session import AsyncSession

from api.agents.schemas import TodayFigures
from api.conversations import repository


def start_of_today(tz: str, now: datetime) -> datetime:
    local = now.astimezone(ZoneInfo(tz))
    return datetime.combine(local.date(), time.min, tzinfo=ZoneInfo(tz))


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no data."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


async def today_figures(session: AsyncSession, *, tz: str, now: datetime) -> TodayFigures:
    """Containment, handoff rate by intent, waits, first response and CSAT since local midnight."""
    since = start_of_today(tz, now)
    conversations = await repository.opened_since(session, since)
    escalations = await repository.escalated_since(session, since)
    escalated_ids = {e.conversation_id for e in escalations}
    by_intent: Counter[str] = Counter()
    escalated_by_intent: Counter[str] = Counter()
    for conversation in conversations:
        intent = conversation.intent or "none"  # e.g. straight to 转人工 before any business was named
        by_intent[intent] += 1
        escalated_by_intent[intent] += conversation.id in escalated_ids
    waits = [(e.claimed_at - e.created_at).total_seconds() for e in escalations if e.claimed_at]
    first = [
        (e.first_response_at - e.claimed_at).total_seconds()
        for e in escalations
        if e.first_response_at and e.claimed_at
    ]
    ratings = [c.csat for c in conversations if c.csat]
    contained = sum(1 for c in conversations if c.id not in escalated_ids)
    return TodayFigures(
        conversations=len(conversations),
        contained_by_bot=contained,
        containment_rate=contained / len(conversations) if conversations else None,
        handoff_rate_by_intent={k: escalated_by_intent[k] / n for k, n in sorted(by_intent.items())},
        wait_median_s=statistics.median(waits) if waits else None,
        wait_p90_s=percentile(waits, 0.9),
        first_response_median_s=statistics.median(first) if first else None,
        csat_average=statistics.fmean(ratings) if ratings else None,
        csat_count=len(ratings),
    )


def waited_seconds(since: datetime, now: datetime) -> float:
    return max(0.0, (now - since).total_seconds())
