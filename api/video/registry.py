"""This worker's live calls, and the background work of video calls; one per app, on `app.state.video`.

Multi-worker: a call's media lives in the worker that took its first offer (`VideoCall.media_worker`).
No sticky routing is needed: an offer that reaches another worker is forwarded to the owner over Redis
pub/sub (`yt:video:worker:<id>`) and its answer comes back the same way; a call ended anywhere (a hang-up
on another worker, the ring timeout found by any worker's sweeper) is committed in SQL, then the owner is
told to close the media and finalize the recordings. Each worker keeps a heartbeat key; calls whose owner
stopped beating are ended by the others and their recordings flagged `unfinalized`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from datetime import timedelta

from aiortc import RTCSessionDescription
from redis.asyncio import Redis
from redis.exceptions import LockError, RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from api.conversations.flows import Triage
from api.db import unit_of_work
from api.errors import BadRequest, Conflict, NotPermitted, ResourceNotFound, UpstreamUnavailable, YuntingError
from api.settings import Settings
from api.timeutil import utcnow
from api.video import flows, service
from api.video.media import CallMedia
from api.video.models import VideoCall

log = logging.getLogger(__name__)

HEARTBEAT_S = 5
HEARTBEAT_TTL_S = 15
# A worker is declared gone only after its key has been missing this long (a Redis flush removes every
# worker's key at once; each puts it back within HEARTBEAT_S).
GONE_AFTER_S = 20
SWEEP_S = 1.0
RPC_TIMEOUT_S = 15
ERRORS = {400: BadRequest, 403: NotPermitted, 404: ResourceNotFound, 409: Conflict}


def worker_channel(worker_id: str) -> str:
    return f"yt:video:worker:{worker_id}"


def alive_key(worker_id: str) -> str:
    return f"yt:video:alive:{worker_id}"


class CallRegistry:
    """Media of the calls this worker holds, the Redis bus between workers, and the sweeper."""

    def __init__(self, *, engine: AsyncEngine, redis: Redis, triage: Triage, settings: Settings) -> None:
        self.engine = engine
        self.redis = redis
        self.triage = triage
        self.delivery = triage.delivery
        self.settings = settings
        self.recordings_dir = settings.recordings_dir.resolve()
        self.ice_servers = service.parse_ice_servers(settings.video_ice_servers)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.calls: dict[int, CallMedia] = {}
        self._grace: dict[tuple[int, str], asyncio.Task] = {}
        self._rpc: dict[str, asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()
        self._loops: list[asyncio.Task] = []
        self._missing_since: dict[str, float] = {}
        self._pubsub = None

    # --- lifecycle ---

    async def __aenter__(self) -> CallRegistry:
        self.recordings_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.recordings_dir.chmod(0o700)  # evidence: readable by the service user only
        self._pubsub = self.redis.pubsub()
        await self._pubsub.subscribe(worker_channel(self.worker_id))
        await self.redis.set(alive_key(self.worker_id), "1", ex=HEARTBEAT_TTL_S)
        self._loops = [
            asyncio.create_task(self._forever(self._listen, 0.5), name="video-bus"),
            asyncio.create_task(self._forever(self._heartbeat, HEARTBEAT_S), name="video-heartbeat"),
            asyncio.create_task(self._forever(self._sweep, SWEEP_S), name="video-sweeper"),
        ]
        return self

    async def __aexit__(self, *exc_info) -> None:
        """End this worker's calls cleanly (files closed, rows finalized) before the database goes away."""
        for call_id in list(self.calls):
            try:
                async with unit_of_work(self.engine) as session:
                    await flows.do_end(session, self, call_id=call_id, reason="server_shutdown")
            except Exception:
                log.exception("call %s: ending at shutdown failed", call_id)
            await self.teardown_local(call_id)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=20)
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        try:
            await self._pubsub.aclose()
            await self.redis.delete(alive_key(self.worker_id))
        except (RedisError, OSError):
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

    async def _forever(self, step, pause_s: float) -> None:
        """Run `step` again and again; it must outlive a bad round. While Redis is away, one line per
        round and a growing pause (up to 10 s) instead of a traceback twice a second."""
        failures = 0
        while True:
            try:
                await step()
                failures = 0
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                failures += 1
                log.warning("video %s: Redis unavailable (%s)", step.__name__, type(exc).__name__)
            except Exception:
                failures += 1
                log.exception("video %s failed", step.__name__)
            await asyncio.sleep(min(10.0, pause_s * 2 ** min(failures, 5)) if failures else pause_s)

    # --- media of the calls this worker holds ---

    async def answer(self, call: VideoCall, role: str, offer: dict) -> dict:
        """The answer to a party's offer, from whichever worker holds the call's media."""
        owner = call.media_worker or self.worker_id
        if owner == self.worker_id:
            return await self.answer_local(call.id, role, offer)
        return await self._forward(owner, {"op": "offer", "call_id": call.id, "role": role, **offer})

    async def answer_local(self, call_id: int, role: str, offer: dict) -> dict:
        media = self.calls.get(call_id)
        if media is None:
            media = self.calls[call_id] = CallMedia(
                call_id, ice_servers=self.ice_servers, on_state=self._on_media_state
            )
        try:
            answer = await media.answer(role, RTCSessionDescription(sdp=offer["sdp"], type=offer["type"]))
        except BaseException:
            if not media.links and self.calls.get(call_id) is media:
                del self.calls[call_id]
            raise
        return {"sdp": answer.sdp, "type": answer.type}

    def _on_media_state(self, call_id: int, role: str, state: str) -> None:
        self.spawn(self._media_state(call_id, role, state))

    async def _media_state(self, call_id: int, role: str, state: str) -> None:
        media = self.calls.get(call_id)
        if media is None or media.closing:
            return
        if state == "connected":
            grace = self._grace.pop((call_id, role), None)
            if grace is not None:
                grace.cancel()
            if media.both_connected():
                await flows.do_connect(self, call_id)
        elif state in ("failed", "closed") and (call_id, role) not in self._grace:
            self._grace[(call_id, role)] = self.spawn(self._end_after_grace(call_id, role))

    async def _end_after_grace(self, call_id: int, role: str) -> None:
        """A party's connection failed or closed: give them `video_peer_grace_s` to rejoin, then end."""
        await asyncio.sleep(self.settings.video_peer_grace_s)
        self._grace.pop((call_id, role), None)
        media = self.calls.get(call_id)
        if media is None or media.closing or media.connected(role):
            return
        async with unit_of_work(self.engine) as session:
            await flows.do_end(session, self, call_id=call_id, reason=f"{role}_dropped")

    async def start_recording(self, call_id: int, paths: dict) -> dict[str, str | None]:
        media = self.calls.get(call_id)
        if media is None:
            return {role: "the call's media is gone" for role in paths}
        return await media.start_recording(paths)

    def recording_formats(self, call_id: int) -> dict[str, dict]:
        """Per party: the kinds, file suffix and content type of the recording (`CallMedia.recording_formats`)."""
        media = self.calls.get(call_id)
        return {} if media is None else media.recording_formats()

    def recording_kinds(self, call_id: int) -> dict[str, set[str]]:
        media = self.calls.get(call_id)
        return {} if media is None else {role: rec.kinds for role, rec in media.recorders.items() if rec.kinds}

    async def teardown(self, call: VideoCall) -> None:
        """Close a finished call's media wherever it lives; its owner finalizes the recordings."""
        if call.media_worker is None or call.media_worker == self.worker_id:
            if call.id in self.calls:
                self.spawn(self.teardown_local(call.id))
            return
        await self.redis.publish(worker_channel(call.media_worker), json.dumps({"op": "teardown", "call_id": call.id}))

    async def teardown_local(self, call_id: int) -> None:
        media = self.calls.pop(call_id, None)
        if media is None:
            return
        for key in [k for k in self._grace if k[0] == call_id]:
            self._grace.pop(key).cancel()
        results = await media.close()
        await flows.finalize_recordings(self, call_id, results)

    # --- the Redis bus between workers ---

    async def _forward(self, owner: str, message: dict) -> dict:
        rid = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        self._rpc[rid] = future
        try:
            message = {**message, "rid": rid, "reply_to": worker_channel(self.worker_id)}
            if await self.redis.publish(worker_channel(owner), json.dumps(message)) == 0:
                raise UpstreamUnavailable(
                    "the server holding this call is not reachable", code="media_worker_unavailable"
                )
            reply = await asyncio.wait_for(future, RPC_TIMEOUT_S)
        except TimeoutError as exc:
            raise UpstreamUnavailable(
                "the server holding this call did not answer", code="media_worker_unavailable"
            ) from exc
        finally:
            self._rpc.pop(rid, None)
        error = reply.get("error")
        if error:
            raise ERRORS.get(error["status"], UpstreamUnavailable)(error["message"], code=error["code"])
        return reply["answer"]

    async def _listen(self) -> None:
        async for item in self._pubsub.listen():
            if item.get("type") != "message":
                continue
            try:
                message = json.loads(item["data"])
                op = message["op"]
            except (ValueError, KeyError, TypeError):
                continue
            if op == "offer":
                self.spawn(self._serve_offer(message))
            elif op == "reply":
                future = self._rpc.get(message.get("rid"))
                if future is not None and not future.done():
                    future.set_result(message)
            elif op == "teardown":
                self.spawn(self.teardown_local(int(message["call_id"])))

    async def _serve_offer(self, message: dict) -> None:
        reply: dict = {"op": "reply", "rid": message["rid"]}
        try:
            reply["answer"] = await self.answer_local(
                int(message["call_id"]), message["role"], {"sdp": message["sdp"], "type": message["type"]}
            )
        except YuntingError as exc:
            reply["error"] = {"status": exc.status_code, "code": exc.code, "message": exc.message}
        except Exception:
            log.exception("call %s: forwarded offer failed", message.get("call_id"))
            reply["error"] = {"status": 503, "code": "media_failed", "message": "the media server failed"}
        await self.redis.publish(message["reply_to"], json.dumps(reply))

    async def _heartbeat(self) -> None:
        await self.redis.set(alive_key(self.worker_id), "1", ex=HEARTBEAT_TTL_S)

    # --- the sweeper: timeouts and orphans, whichever worker gets there first ---

    async def _sweep(self) -> None:
        if self.calls:
            async with unit_of_work(self.engine) as session:
                finished_here = await service.list_final_among(session, list(self.calls))
            for call_id in finished_here:  # ended elsewhere, and the teardown message never arrived
                self.spawn(self.teardown_local(call_id))
        # The rest needs doing once per round, not once per worker.
        lock = self.redis.lock("yt:lock:video-sweep", timeout=30, blocking_timeout=0)
        if not await lock.acquire():
            return
        try:
            now = utcnow()
            async with unit_of_work(self.engine) as session:
                due = await service.list_due_ringing(session, now)
                stale = await service.list_stale_requested(
                    session, now - timedelta(seconds=self.settings.video_ring_timeout_s)
                )
                owners = await service.list_active_owners(session)
            for call_id in due:
                await flows.do_miss(self, call_id)
            for call_id in stale:
                async with unit_of_work(self.engine) as session:
                    await flows.do_end(session, self, call_id=call_id, reason="no_media")
            for call_id, worker in owners:
                if worker != self.worker_id and await self._gone(worker):
                    await flows.do_orphan(self, call_id)
        finally:
            try:
                await lock.release()
            except LockError:
                pass

    async def _gone(self, worker: str) -> bool:
        if await self.redis.exists(alive_key(worker)):
            self._missing_since.pop(worker, None)
            return False
        first = self._missing_since.setdefault(worker, time.monotonic())
        return time.monotonic() - first > GONE_AFTER_S
