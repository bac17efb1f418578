"""The advisor services' background sweep, in every worker, one tick at a time across workers (a short Redis
lock, like the routing loop): appointment reminders, no-shows, conversations and calls held for an advisor
whose wait is over. Each step is bounded per tick and claims rows by conditional updates, so a second worker
that slips in (an expired lock) does no work twice."""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import LockError
from sqlalchemy.ext.asyncio import AsyncEngine

from api.advisors.flows import sweep_call_preferences, sweep_held
from api.appointments.reminders import record_attendance, send_due_reminders
from api.channels.wechat_platform import WeChatPlatform
from api.conversations.flows import Triage
from api.db import unit_of_work
from api.settings import Settings

log = logging.getLogger(__name__)
LOCK_KEY = "yt:lock:advisor-sweep"


class AdvisorSweeper:
    def __init__(self, engine: AsyncEngine, triage: Triage, platform: WeChatPlatform, settings: Settings) -> None:
        self.engine, self.triage, self.platform, self.settings = engine, triage, platform, settings
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="advisor-sweep")

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
            except Exception:  # the sweep must outlive any one bad tick (a database or Redis hiccup)
                log.exception("advisor sweep failed")
            await asyncio.sleep(self.settings.appointment_sweep_s)

    async def tick(self) -> None:
        redis = self.triage.routing.redis
        lock = redis.lock(LOCK_KEY, timeout=60, blocking_timeout=0)
        if not await lock.acquire():
            return
        limit = self.settings.appointment_sweep_batch
        try:
            async with unit_of_work(self.engine) as session:
                await sweep_held(session, self.triage.routing, self.triage.delivery, limit=limit)
                await sweep_call_preferences(
                    session,
                    self.triage.routing,
                    waits_by_group=self.settings.advisor_wait_s_by_group,
                    default_wait_s=self.settings.advisor_wait_s,
                    limit=limit,
                )
                await send_due_reminders(session, redis, self.platform, self.settings)
                await record_attendance(session, redis, self.settings)
        finally:
            try:
                await lock.release()
            except LockError:
                pass
