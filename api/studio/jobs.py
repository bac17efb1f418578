"""Background jobs (train, activate) that any API worker may run, one of each kind at a time machine-wide.

A job is a SQL row: created `queued` by whichever worker took the request, claimed by the first runner
that holds the kind's Redis lock, and written to as it goes (progress, stage, the tail of its log), so
every worker can show it. A worker that dies mid-job stops its heartbeat; the job is then marked failed
instead of hanging for ever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from api.db import unit_of_work
from api.studio import repository
from api.studio.models import JobStatus, StudioJob
from api.timeutil import utcnow

log = logging.getLogger(__name__)
HEARTBEAT_S = 5.0
STALE_AFTER_S = 60.0
LOCK_TTL_S = 30
FLUSH_EVERY_S = 1.0
LOG_TAIL_LINES = 30


class JobContext:
    """What a handler sees: the job's parameters, and `report` to show progress (flushed about once a second)."""

    def __init__(self, engine: AsyncEngine, job: StudioJob) -> None:
        self.engine = engine
        assert job.id is not None  # a job row read from SQL
        self.job_id: int = job.id
        self.params: dict[str, Any] = dict(job.params or {})
        self.created_by: int | None = job.created_by
        self.progress = 0.0
        self.stage = "running"
        self.lines: list[str] = []
        self._dirty = False
        self._last_flush = 0.0

    async def report(self, *, progress: float | None = None, stage: str | None = None, line: str | None = None) -> None:
        if progress is not None:
            self.progress = max(self.progress, min(1.0, progress))
        if line:
            self.lines.append(line)
            del self.lines[:-LOG_TAIL_LINES]
        stage_changed = stage is not None and stage != self.stage
        if stage is not None:
            self.stage = stage
        self._dirty = True
        loop_time = asyncio.get_running_loop().time()
        if stage_changed or loop_time - self._last_flush >= FLUSH_EVERY_S:
            await self.flush()

    async def flush(self, **extra: Any) -> None:
        self._last_flush = asyncio.get_running_loop().time()
        self._dirty = False
        values = {
            "progress": round(self.progress, 4),
            "stage": self.stage[:64],
            "log_tail": "\n".join(self.lines),
            "heartbeat_at": utcnow(),
            **extra,
        }
        async with unit_of_work(self.engine) as session:
            await repository.update_job(session, self.job_id, **values)


Handler = Callable[[JobContext], Awaitable[dict]]


class JobRunner:
    """Polls for queued jobs of each kind it has a handler for; `wake()` skips the wait after a new job."""

    def __init__(
        self, engine: AsyncEngine, redis: Redis, *, deployment: str, handlers: dict[str, Handler], poll_s: float = 1.0
    ) -> None:
        self.engine, self.redis, self.deployment = engine, redis, deployment
        self.handlers, self.poll_s = handlers, poll_s
        self._wake = asyncio.Event()
        self._running: dict[str, asyncio.Task] = {}
        self._loop_task: asyncio.Task | None = None
        self._last_reap = 0.0

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="studio-jobs")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        tasks = [t for t in (self._loop_task, *self._running.values()) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self._reap_stale()
                for kind in self.handlers:
                    if kind not in self._running:
                        await self._try_claim(kind)
            except asyncio.CancelledError:
                raise
            except Exception:  # the database or Redis blinked: try again next round
                log.warning("studio job runner round failed", exc_info=True)
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            except TimeoutError:
                pass
            self._wake.clear()

    async def _try_claim(self, kind: str) -> None:
        lock = self.redis.lock(f"yt:studio:{self.deployment}:lane:{kind}", timeout=LOCK_TTL_S)
        if not await lock.acquire(blocking=False):
            return
        try:
            async with unit_of_work(self.engine) as session:
                job = await repository.next_queued_job(session, deployment=self.deployment, kind=kind)
                if job is not None:
                    job = job if await repository.claim_job(session, job.id) else None
        except BaseException:
            await lock.release()
            raise
        if job is None:
            await lock.release()
            return
        self._running[kind] = asyncio.create_task(self._run(kind, job, lock), name=f"studio-job-{job.id}")

    async def _run(self, kind: str, job: StudioJob, lock) -> None:
        context = JobContext(self.engine, job)
        beat = asyncio.create_task(self._heartbeat(context, lock))
        try:
            result = await self.handlers[kind](context)
            context.progress = 1.0
            await context.flush(
                status=JobStatus.SUCCEEDED,
                finished_at=utcnow(),
                result=result or {},
                stage=context.stage if context.stage != "running" else "done",
            )
        except asyncio.CancelledError:
            await asyncio.shield(
                context.flush(
                    status=JobStatus.FAILED, finished_at=utcnow(), error="stopped: the API worker running it shut down"
                )
            )
            raise
        except Exception as exc:
            log.warning("studio job %s (%s) failed: %s", job.id, kind, exc)
            result = getattr(exc, "result", None) or {}
            await context.flush(
                status=JobStatus.FAILED, finished_at=utcnow(), error=str(exc)[:4000], result=result, stage="failed"
            )
        finally:
            beat.cancel()
            self._running.pop(kind, None)
            try:
                await lock.release()
            except Exception:  # expired while we were busy: nothing left to release
                log.debug("training lock already expired", exc_info=True)
            self.wake()

    async def _heartbeat(self, context: JobContext, lock) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await lock.reacquire()
                await context.flush()
            except Exception:
                log.debug("heartbeat of studio job %s failed", context.job_id, exc_info=True)

    async def _reap_stale(self) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last_reap < STALE_AFTER_S / 4:
            return
        self._last_reap = now
        cutoff = utcnow() - timedelta(seconds=STALE_AFTER_S)
        async with unit_of_work(self.engine) as session:
            await repository.fail_stale_jobs(session, deployment=self.deployment, heartbeat_before=cutoff)
