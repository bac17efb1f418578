"""The routing tick: one worker at a time (a short Redis lock) assigns waiting customers, hands back
assignments nobody answered, notices agents whose console went quiet, and tells waiting customers when
their place in the queue moved meaningfully."""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import timedelta

from redis.exceptions import LockError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from api.agents import repository as agents
from api.agents.flows import do_set_presence
from api.agents.service import SKILL_GROUPS
from api.conversations import repository as conversations
from api.conversations.delivery import Delivery
from api.conversations.models import Direction, Message, SenderKind
from api.db import unit_of_work
from api.routing import repository
from api.routing.engine import RoutingEngine
from api.routing.flows import do_assign_waiting, do_requeue, ensure_built
from api.routing.service import alive_key, estimated_wait_minutes
from api.settings import Settings
from api.timeutil import utcnow

log = logging.getLogger(__name__)


class RoutingLoop:
    def __init__(self, engine: AsyncEngine, routing: RoutingEngine, delivery: Delivery, settings: Settings) -> None:
        self.engine = engine
        self.routing = routing
        self.delivery = delivery
        self.settings = settings
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="routing-loop")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must outlive any one bad tick
                log.exception("routing tick failed")
            await asyncio.sleep(self.settings.routing_tick_s)

    async def tick(self) -> None:
        lock = self.routing.redis.lock("yt:lock:routing-tick", timeout=30, blocking_timeout=0)
        if not await lock.acquire():
            return
        try:
            async with unit_of_work(self.engine) as session:
                await ensure_built(session, self.routing)
                await self._hand_back_unanswered(session)
                await self._notice_silent_agents(session)
                for group in SKILL_GROUPS:
                    await do_assign_waiting(session, self.routing, self.delivery, group)
                await self._tell_queue_moves(session)
        finally:
            try:
                await lock.release()
            except LockError:
                pass

    async def _hand_back_unanswered(self, session: AsyncSession) -> None:
        deadline = utcnow() - timedelta(seconds=self.settings.agent_answer_timeout_s)
        for conversation in await repository.unanswered_assignments(session, claimed_before=deadline):
            await do_requeue(session, self.routing, self.delivery, conversation=conversation, reason="answer_timeout")

    async def _notice_silent_agents(self, session: AsyncSession) -> None:
        for agent in await agents.list_online(session):
            assert agent.id is not None
            if await self.routing.redis.exists(alive_key(agent.id)):
                continue

            log.info("agent %s went silent: marking offline", agent.id)
            await do_set_presence(session, self.routing, self.delivery, agent=agent, presence="offline")

    async def _tell_queue_moves(self, session: AsyncSession) -> None:
        waiting = await conversations.waiting_escalations(session)
        if not waiting:
            return
        redis = self.routing.redis
        # Every waiting customer's last told position in one round trip (this runs every tick).
        keys = [f"yt:qpos:{escalation.id}" for escalation, _ in waiting]
        positions, told = _positions(waiting), await redis.mget(keys)
        first_seen = {key: position for key, position, last in zip(keys, positions, told, strict=False) if last is None}
        if first_seen:
            async with redis.pipeline(transaction=False) as pipe:
                for key, position in first_seen.items():
                    pipe.set(key, position, ex=86400)
                await pipe.execute()
        for (escalation, conversation), key, position, last in zip(waiting, keys, positions, told, strict=False):
            if last is None:
                continue
            told_at = int(last)
            if position >= told_at or not (position == 1 or told_at - position >= max(3, math.ceil(told_at / 3))):
                continue
            await redis.set(key, position, ex=86400)
            online = await agents.count_online_in(session, escalation.skill_group)
            text = _move_words(position, online, self.settings.avg_handle_s)
            assert conversation.id is not None
            notice = Message(
                conversation_id=conversation.id,
                customer_id=conversation.customer_id,
                channel=conversation.current_channel,
                direction=Direction.OUT,
                sender_kind=SenderKind.SYSTEM,
                text=text,
            )
            session.add(notice)
            await session.commit()
            await self.delivery.deliver(conversation, [notice])


def _move_words(position: int, online: int, avg_handle_s: int) -> str:
    """The customer moved up; an estimate only from agents who are online (none online: no promise of time)."""
    if position == 1:
        return "您是下一位，客服马上为您服务。" if online else "您是下一位，客服上线后会第一时间为您服务。"
    if not online:
        return f"排队进度：您前面还有{position - 1}位客户。现在暂时没有客服在线，客服上线后会按顺序为您服务。"
    minutes = estimated_wait_minutes(position, online, avg_handle_s)
    return f"排队进度：您前面还有{position - 1}位客户，预计等待约{minutes}分钟。"


def _positions(waiting) -> list[int]:
    """Each waiting escalation's place in its own group's queue (the list is in queue order)."""
    seen: dict[str, int] = {}
    positions = []
    for escalation, _ in waiting:
        seen[escalation.skill_group] = seen.get(escalation.skill_group, 0) + 1
        positions.append(seen[escalation.skill_group])
    return positions
