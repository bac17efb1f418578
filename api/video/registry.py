"""The API side of video calls: placing each call's media on a media worker, signalling to it, the media
workers' events, and the sweeper; one per API worker, on `app.state.video`.

Media never runs here (api/video/worker.py holds it, in processes of its own): an API worker only
signals. A call is placed at its first offer on the least-loaded media worker with room (from their
announcements in Redis), committed in SQL as `video_call.media_worker`; every later offer of the call,
from whichever API worker takes it, goes to that media worker. A full or draining worker refuses a new
call and the next one is tried; with none left, the customer is told and keeps their place in the queue.
What happens to the media comes back as events (connected, dropped, closed with the recordings' results),
each handled once by one API worker, which writes the rows. The wire protocol is in api/video/plane.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from datetime import datetime, timedelta

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import LockError, ResponseError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from api.conversations.flows import Triage
from api.db import unit_of_work
from api.errors import BadRequest, Conflict, NotPermitted, ResourceNotFound, UpstreamUnavailable
from api.settings import Settings
from api.timeutil import utcnow
from api.video import ending, flows, plane, repository, service
from api.video.models import VideoCall

log = logging.getLogger(__name__)

SWEEP_S = 1.0
# An event taken by an API worker that died before acknowledging it is taken over after this long.
RECLAIM_IDLE_MS = 30_000
MAX_DELIVERIES = 5
MAX_EVENTS_IN_FLIGHT = 32
ERRORS = {400: BadRequest, 403: NotPermitted, 404: ResourceNotFound, 409: Conflict}
# A media worker that says these about a new call is asked no further; the next one is.
REFUSALS = ("media_worker_full", "media_worker_draining", "media_worker_unavailable")


class CallRegistry:
    """Placement and signalling to the media workers, their events, and the sweeper."""

    def __init__(self, *, engine: AsyncEngine, redis: Redis, triage: Triage, settings: Settings) -> None:
        self.engine = engine
        self.redis = redis
        self.triage = triage
        self.delivery = triage.delivery
        self.settings = settings
        self.recordings_dir = settings.recordings_dir.resolve()
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._rpc: dict[str, asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()
        self._loops: list[asyncio.Task] = []
        self._missing_since: dict[str, float] = {}
        self._in_flight = asyncio.Semaphore(MAX_EVENTS_IN_FLIGHT)
        self._pubsub: PubSub | None = None  # subscribed in __aenter__

    # --- lifecycle ---

    async def __aenter__(self) -> CallRegistry:
        self.recordings_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.recordings_dir.chmod(0o700)  # evidence: readable by the service user only
        self._pubsub = pubsub = self.redis.pubsub()
        await pubsub.subscribe(plane.reply_channel(self.worker_id))
        await self._ensure_group()
        self._loops = [
            asyncio.create_task(plane.forever(self._listen, 0.5, log), name="video-replies"),
            asyncio.create_task(plane.forever(self._consume, 0.05, log), name="video-events"),
            asyncio.create_task(plane.forever(self._sweep, SWEEP_S, log), name="video-sweeper"),
        ]
        return self

    async def __aexit__(self, *exc_info) -> None:
        """Calls go on: their media lives in the media workers, and the other API workers take the events."""
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=20)
        if self._pubsub is not None:
            try:
                await self._pubsub.aclose()
            except OSError:
                pass

    def spawn(self, coro) -> asyncio.Task:
        """Run background work that outlives the request; kept so shutdown can wait for it."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("video background task failed", exc_info=task.exception())

    # --- placement and signalling ---

    async def media_workers(self) -> list[plane.Announcement]:
        ids = sorted(plane.text(worker) for worker in await self.redis.smembers(plane.WORKERS_KEY))
        if not ids:
            return []
        raws = await self.redis.mget([plane.announce_key(worker) for worker in ids])
        return [plane.Announcement.loads(raw) for raw in raws if raw]

    async def answer(self, session: AsyncSession, call: VideoCall, role: str, offer: dict) -> dict:
        """The answer to a party's offer from the media worker holding the call (placing it first if new)."""
        message = {"op": "offer", "call_id": call.id, "role": role, **offer}
        if call.media_worker is not None:
            return (await self._ask(call.media_worker, message))["answer"]
        candidates = sorted(
            (w for w in await self.media_workers() if w.has_room), key=lambda w: (w.load, -w.capacity, w.id)
        )
        for worker in candidates:
            owner = await service.claim_media_worker(session, call, worker.id)
            if owner != worker.id:  # another offer of this call placed it meanwhile: go where it went
                return (await self._ask(owner, message))["answer"]
            try:
                return (await self._ask(worker.id, message))["answer"]
            except UpstreamUnavailable as exc:
                if exc.code not in REFUSALS:
                    raise
                log.info("call %s: media worker %s refused (%s), trying the next", call.id, worker.id, exc.code)
                await service.release_media_worker(session, call, worker.id)
        raise plane.NoMediaCapacity("no media server has room for this call")

    async def start_recording(self, call: VideoCall, paths: dict[str, str]) -> dict[str, str | None]:
        """Start each party's file (paths relative to the recordings directory); per role None or why not."""
        try:
            if call.media_worker is None:  # never placed: nobody holds its media
                raise UpstreamUnavailable(
                    "the media server holding this call is not reachable", code="media_worker_unavailable"
                )
            reply = await self._ask(call.media_worker, {"op": "record", "call_id": call.id, "paths": paths})
        except UpstreamUnavailable as exc:
            return {role: exc.message for role in paths}
        return reply["outcome"]

    async def teardown(self, call: VideoCall) -> None:
        """Close a finished call's media; its media worker sends the recordings' results back as an event."""
        assert call.id is not None
        if call.media_worker is not None:
            await self._close(call.media_worker, call.id, ended_at=call.ended_at)

    async def _close(self, worker: str, call_id: int, *, ended_at: datetime | None = None) -> None:
        # The moment the call ended goes along: a worker that hears it late still ends the files' timelines there
        # (the parties stopped sending then), not at the moment it got round to it.
        message = {"op": "close", "call_id": call_id, "ended_at": plane.epoch_s(ended_at)}
        await self.redis.publish(plane.rpc_channel(worker), json.dumps(message))

    async def stats(self) -> dict:
        """Frames in, forwarded and recorded per live call, from every media worker (the bench reads this)."""
        merged: dict = {}
        for worker in await self.media_workers():
            merged.update((await self._ask(worker.id, {"op": "stats"}))["stats"])
        return merged

    async def _ask(self, worker: str, message: dict) -> dict:
        """One request to a media worker and its reply, within `plane.RPC_TIMEOUT_S`."""
        rid = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        self._rpc[rid] = future
        try:
            message = {**message, "rid": rid, "reply_to": plane.reply_channel(self.worker_id)}
            if await self.redis.publish(plane.rpc_channel(worker), json.dumps(message)) == 0:
                raise UpstreamUnavailable(
                    "the media server holding this call is not reachable", code="media_worker_unavailable"
                )
            reply = await asyncio.wait_for(future, plane.RPC_TIMEOUT_S)
        except TimeoutError as exc:
            raise UpstreamUnavailable(
                "the media server holding this call did not answer", code="media_worker_timeout"
            ) from exc
        finally:
            self._rpc.pop(rid, None)
        error = reply.get("error")
        if error:
            raise ERRORS.get(error["status"], UpstreamUnavailable)(error["message"], code=error["code"])
        return reply

    async def _listen(self) -> None:
        if self._pubsub is None:
            raise RuntimeError("the video registry is not started (no reply subscription)")
        async for item in self._pubsub.listen():
            if item.get("type") != "message":
                continue
            try:
                message = json.loads(item["data"])
            except (ValueError, TypeError):
                continue
            rid = message.get("rid") if isinstance(message, dict) else None
            future = self._rpc.get(rid) if isinstance(rid, str) else None
            if future is not None and not future.done():
                future.set_result(message)

    # --- the media workers' events, each handled once ---

    async def _ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(plane.EVENTS_STREAM, plane.EVENTS_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _consume(self) -> None:
        try:
            batches = await self.redis.xreadgroup(
                plane.EVENTS_GROUP, self.worker_id, {plane.EVENTS_STREAM: ">"}, count=16, block=1000
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._ensure_group()  # Redis was flushed or restarted empty
            return
        # The client's legacy reply shape (redis-py's default): [[stream, [(id, fields), ...]], ...], [] if none.
        assert isinstance(batches, list)
        for _stream, entries in batches:
            for entry_id, fields in entries:
                await self._in_flight.acquire()
                self.spawn(self._handle(entry_id, fields))

    async def _handle(self, entry_id: str, fields: dict) -> None:
        try:
            kind, call_id = fields["kind"], int(fields["call_id"])
            detail = json.loads(fields.get("detail") or "{}")
            if kind == "connected":
                await flows.do_connect(self, call_id, formats=detail.get("formats", {}))
            elif kind == "dropped":
                async with unit_of_work(self.engine) as session:
                    await ending.do_end(session, self, call_id=call_id, reason=f"{detail['role']}_dropped")
            elif kind == "closed":
                if detail.get("reason"):  # the media worker ended it (drain): the call's end first
                    async with unit_of_work(self.engine) as session:
                        await ending.do_end(session, self, call_id=call_id, reason=detail["reason"])
                results = {role: plane.result_from_wire(r) for role, r in (detail.get("results") or {}).items()}
                await ending.finalize_recordings(self, call_id, results)
            await self.redis.xack(plane.EVENTS_STREAM, plane.EVENTS_GROUP, entry_id)
        except Exception:  # not acknowledged: taken over again after RECLAIM_IDLE_MS
            log.exception("video event %s (%s) failed; it will be retried", entry_id, fields.get("kind"))
        finally:
            self._in_flight.release()

    async def _reclaim(self) -> None:
        """Events taken by an API worker that died (or failed them) before acknowledging: handle them here."""
        _next, entries, *_ = await self.redis.xautoclaim(
            plane.EVENTS_STREAM, plane.EVENTS_GROUP, self.worker_id, min_idle_time=RECLAIM_IDLE_MS, count=16
        )
        for entry_id, fields in entries:
            pending = await self.redis.xpending_range(
                plane.EVENTS_STREAM, plane.EVENTS_GROUP, min=entry_id, max=entry_id, count=1
            )
            if pending and int(pending[0]["times_delivered"]) > MAX_DELIVERIES:
                log.error("video event %s (%s) given up after %d tries", entry_id, fields, MAX_DELIVERIES)
                await self.redis.xack(plane.EVENTS_STREAM, plane.EVENTS_GROUP, entry_id)
                continue
            await self._in_flight.acquire()
            self.spawn(self._handle(entry_id, fields))

    # --- the sweeper: timeouts, lost media workers, lost messages; whichever API worker gets there first ---

    async def _sweep(self) -> None:
        lock = self.redis.lock("yt:lock:video-sweep", timeout=30, blocking_timeout=0)
        if not await lock.acquire():
            return
        try:
            # Media workers first: a call in an announcement was claimed in SQL before its media existed.
            workers = {w.id: w for w in await self.media_workers()}
            now = utcnow()
            async with unit_of_work(self.engine) as session:
                due = await repository.ringing_past_deadline(session, now)
                stale = await repository.requested_before(
                    session, now - timedelta(seconds=self.settings.video_ring_timeout_s)
                )
                owners = dict(await repository.active_call_workers(session))
            for call_id in due:
                await ending.do_miss(self, call_id)
            for call_id in stale:
                async with unit_of_work(self.engine) as session:
                    await ending.do_end(session, self, call_id=call_id, reason="no_media")
            for call_id, worker in owners.items():
                if worker not in workers and await self._gone(worker):
                    await ending.do_orphan(self, call_id)
            for announcement in workers.values():  # media still held for a call that ended (a lost `close`)
                for call_id in announcement.calls:
                    if owners.get(call_id) != announcement.id:
                        await self._close(announcement.id, call_id)
            listed = {plane.text(member) for member in await self.redis.smembers(plane.WORKERS_KEY)}
            for worker in listed - set(workers):
                if await self._gone(worker):
                    await self.redis.srem(plane.WORKERS_KEY, worker)
            await self._reclaim()
        finally:
            try:
                await lock.release()
            except LockError:
                pass

    async def _gone(self, worker: str) -> bool:
        if await self.redis.exists(plane.announce_key(worker)):
            self._missing_since.pop(worker, None)
            return False
        first = self._missing_since.setdefault(worker, time.monotonic())
        return time.monotonic() - first > plane.GONE_AFTER_S
