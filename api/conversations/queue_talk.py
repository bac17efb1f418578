"""No silence in the queue: what a waiting customer is told, from the live queue.

Their place comes from SQL (`repository.queue_position`), the estimate only from the group's agents who are
online now; with nobody online — in or outside the group's service hours — the customer is told so plainly
and that they can leave a message here, which an agent answers when one comes online (the answer then
follows them: api/delivery).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from redis.asyncio import Redis
from sqlmodel.ext.asyncio.session import AsyncSession

from api.agents import repository as agents
from api.conversations import repository
from api.conversations.models import Conversation, Direction, Escalation, Message, SenderKind
from api.routing.service import estimated_wait_minutes
from bot.service_hours import ServiceHours

# 「还要等多久？」「排到第几了」「怎么还没人」: answered from the queue every time they are asked.
HOW_LONG = re.compile(r"多久|多长时间|几分钟|要等|排到|第几|轮到|还没人|怎么还没|什么时候|啥时候|几点|前面还有")
# A second 「转人工」 while already waiting.
ASK_HUMAN = re.compile(r"转人工|人工客服|人工服务|真人|找客服")


@dataclass(frozen=True)
class Standing:
    """Where a waiting customer stands right now."""

    position: int
    online: int
    minutes: int | None
    open_now: bool
    group_label: str
    hours: str


async def standing_of(
    session: AsyncSession, escalation: Escalation, *, hours: ServiceHours, timezone: str, avg_handle_s: int
) -> Standing:
    position = await repository.queue_position(session, escalation)
    online = await agents.count_online_in(session, escalation.skill_group)
    now = datetime.now(ZoneInfo(timezone))
    return Standing(
        position=position,
        online=online,
        minutes=estimated_wait_minutes(position, online, avg_handle_s) if online else None,
        open_now=hours.is_open(escalation.skill_group, now),
        group_label=hours.label(escalation.skill_group),
        hours=hours.describe(escalation.skill_group),
    )


def place_words(standing: Standing) -> str:
    """「您是下一位，预计等待约4分钟。」 — or, with nobody online, the plain truth and the offer to leave a message."""
    place = "您是下一位" if standing.position == 1 else f"您前面还有{standing.position - 1}位客户"
    if standing.minutes is not None:
        return f"{place}，预计等待约{standing.minutes}分钟。"
    if standing.open_now:
        why = f"现在{standing.group_label}暂时没有客服在线"
    else:
        why = f"现在是{standing.group_label}的非服务时间（服务时间：{standing.hours}）"
    return (
        f"{why}，{place}。您可以直接在这里留言，客服上线后会按顺序回复您，"
        "回复会通过公众号或小程序消息通知您，不用一直等着。"
    )


async def answer_in_queue(
    session: AsyncSession,
    redis: Redis,
    conversation: Conversation,
    inbound: Message,
    *,
    hours: ServiceHours,
    timezone: str,
    avg_handle_s: int,
    notice_interval_s: int,
) -> Message | None:
    """A waiting customer wrote: an answer from the queue (added to the session), or None to stay quiet.

    Questions about the wait and a repeated 「转人工」 are always answered; anything else gets at most one
    acknowledgement per customer per ``notice_interval_s`` (they are not left wondering, nor flooded)."""
    assert conversation.id is not None
    escalation = await repository.open_escalation(session, conversation.id)
    if escalation is None:
        return None
    asked = bool(HOW_LONG.search(inbound.text) or ASK_HUMAN.search(inbound.text))
    quiet_key = f"yt:queue_ack:{conversation.customer_id}"
    if not asked and not await redis.set(quiet_key, 1, nx=True, ex=notice_interval_s):
        return None
    if asked:
        await redis.set(quiet_key, 1, ex=notice_interval_s)  # the answer counts as this half minute's notice
    standing = await standing_of(session, escalation, hours=hours, timezone=timezone, avg_handle_s=avg_handle_s)
    if ASK_HUMAN.search(inbound.text) and not HOW_LONG.search(inbound.text):
        lead = "您已在人工服务队列中，不用重复转人工。"
    elif asked:
        lead = "目前排队情况："
    else:
        lead = "收到，您说的内容客服接入后都能看到。"
    reply = Message(
        conversation_id=conversation.id,
        customer_id=conversation.customer_id,
        channel=conversation.current_channel,
        direction=Direction.OUT,
        sender_kind=SenderKind.BOT,
        text=lead + place_words(standing),
        in_reply_to=inbound.id,
    )
    session.add(reply)
    await session.flush()
    return reply
