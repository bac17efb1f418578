"""A media worker: `python -m api.video.worker`. It holds the media of the calls placed on it (one
`CallMedia` each: the parties' peer connections, the relay, the recorders) in a process of its own, so
that the API workers' event loops only ever signal. It needs Redis and the recordings directory, no SQL:
what happens to a call is told to the API as events (api/video/plane.py), and the API writes the rows.

    YUNTING_REDIS_URL=redis://… YUNTING_RECORDINGS_DIR=… python -m api.video.worker

It announces itself (its calls, capacity, ICE address, draining) every `ANNOUNCE_S` and whenever its load
changes; refuses a new call when full (`video_media_calls_per_worker`) or draining; ends a call whose party
stayed away past `video_peer_grace_s` (as a `dropped` event). SIGTERM drains: no new calls, live ones run
up to `video_media_drain_timeout_s`, then each is closed here, its recordings finalized, and reported as
ended by `server_shutdown`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import ctypes
import ctypes.util
import gc
import ipaddress
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from pathlib import Path

from aiortc import RTCSessionDescription
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from api.errors import UpstreamUnavailable, YuntingError
from api.masking import install_log_masking
from api.realtime import DeploymentPubSub, DeploymentRedis
from api.settings import Settings
from api.video import plane
from api.video.media import CallMedia
from api.video.service import parse_ice_servers, resolve_recording

log = logging.getLogger("yunting.media")

# glibc's `malloc_trim`: frames and codec buffers freed by native threads stay in their malloc arenas
# otherwise, and the worker's RSS ratchets up call after call (glibc only; elsewhere it is skipped).
LIBC: ctypes.CDLL | None
try:
    LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
except (OSError, AttributeError):
    LIBC = None

# How long `closed` results are retried while Redis is away before they are given up (logged).
EMIT_RETRY_S = 30.0
# After the drain has closed and reported every call, how long the process may take to exit before it is
# ended here: a library thread left running (a codec's worker) must not keep a drained worker alive.
EXIT_GRACE_S = 10.0


def check_media_address(address: str | None) -> str | None:
    """The advertised ICE address must be this host's and reachable from elsewhere (not loopback)."""
    if not address:
        return None
    ip = ipaddress.ip_address(address)
    if ip.is_loopback:
        raise SystemExit(f"YUNTING_VIDEO_MEDIA_ADDRESS={address} is loopback: other hosts can't reach it")
    with socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError as exc:
            raise SystemExit(f"YUNTING_VIDEO_MEDIA_ADDRESS={address} is not an address of this host: {exc}") from exc
    return address


def advertise(sdp: str, address: str | None) -> str:
    """Keep only the host candidates on `address` (server-reflexive and relayed ones stay)."""
    if not address:
        return sdp
    lines = sdp.split("\r\n")
    kept = []
    for line in lines:
        parts = line.split()
        if line.startswith("a=candidate:") and len(parts) > 7 and parts[7] == "host" and parts[4] != address:
            continue
        kept.append(line)
    return "\r\n".join(kept)


async def start_executor_threads() -> None:
    """aiortc encodes in the loop's default executor, whose threads start lazily as load peaks: start them
    all now, so the worker's thread count is the same after its first call as after its thousandth."""
    size = min(32, (os.cpu_count() or 1) + 4)  # what asyncio's default would grow to
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=size, thread_name_prefix="media-executor")
    loop = asyncio.get_running_loop()
    loop.set_default_executor(executor)
    barrier = threading.Barrier(size)
    await asyncio.gather(*(loop.run_in_executor(None, barrier.wait, 5) for _ in range(size)))


class MediaWorker:
    """The calls this process carries, its announcements, and the requests it serves."""

    def __init__(self, settings: Settings, redis: DeploymentRedis, *, worker_id: str | None = None) -> None:
        self.settings = settings
        self.redis = redis
        self.worker_id = worker_id or f"media-{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.capacity = settings.video_media_calls_per_worker
        self.address = check_media_address(settings.video_media_address)
        self.ice_servers = parse_ice_servers(settings.video_ice_servers)
        self.recordings_dir = settings.recordings_dir.resolve()
        self.calls: dict[int, CallMedia] = {}
        self.draining = False
        self._connected: set[int] = set()
        self._grace: dict[tuple[int, str], asyncio.Task] = {}
        self._tasks: set[asyncio.Task] = set()
        self._emptied = asyncio.Event()  # set when the last call goes (what a drain waits for)
        self._pubsub: DeploymentPubSub | None = None  # subscribed in run()

    # --- lifecycle ---

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set (SIGTERM), then drain."""
        await start_executor_threads()
        self.recordings_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._pubsub = pubsub = self.redis.pubsub()
        await pubsub.subscribe(plane.rpc_channel(self.worker_id))
        await self.announce()
        loops = [
            asyncio.create_task(plane.forever(self._listen, 0.5, log), name="media-rpc"),
            asyncio.create_task(plane.forever(self.announce, plane.ANNOUNCE_S, log), name="media-announce"),
        ]
        log.info("media worker %s: up, %d calls at most, ICE address %s", self.worker_id, self.capacity, self.address)
        try:
            await stop.wait()
            await self.drain()
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            try:
                await self.redis.srem(plane.WORKERS_KEY, self.worker_id)
                await self.redis.delete(plane.announce_key(self.worker_id))
                await pubsub.aclose()
            except (RedisError, OSError):
                pass

    async def drain(self) -> None:
        """No new calls; live ones run until they end or the drain timeout, then they end here."""
        self.draining = True
        log.info("media worker %s: draining %d calls", self.worker_id, len(self.calls))
        try:
            await self.announce()
        except (RedisError, OSError):
            pass
        if self.calls:
            self._emptied.clear()
            try:
                await asyncio.wait_for(self._emptied.wait(), self.settings.video_media_drain_timeout_s)
            except TimeoutError:
                log.warning("media worker %s: drain timeout, ending %d calls", self.worker_id, len(self.calls))
        await asyncio.gather(*(self.close_call(call_id, reason="server_shutdown") for call_id in list(self.calls)))
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=EMIT_RETRY_S + 5)
            for task in pending:
                log.warning("media worker %s: %s still running after the drain; cancelled", self.worker_id, task)
                task.cancel()

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("media background task failed", exc_info=task.exception())

    async def announce(self) -> None:
        announcement = plane.Announcement(
            id=self.worker_id,
            calls=sorted(self.calls),
            capacity=self.capacity,
            draining=self.draining,
            address=self.address,
            pid=os.getpid(),
        )
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(plane.announce_key(self.worker_id), announcement.dumps(), ex=plane.ANNOUNCE_TTL_S)
            pipe.sadd(plane.WORKERS_KEY, self.worker_id)
            await pipe.execute()

    def _announce_soon(self) -> None:
        """Placement reads the load: tell it now, not at the next beat."""
        self.spawn(self._announce_quietly())

    async def _announce_quietly(self) -> None:
        try:
            await self.announce()
        except (RedisError, OSError) as exc:
            log.warning("media worker: announcement failed (%s); the next beat retries", type(exc).__name__)

    # --- the calls ---

    async def offer(self, call_id: int, role: str, offer: dict) -> dict:
        media = self.calls.get(call_id)
        if media is None:
            if self.draining:
                raise UpstreamUnavailable("this media server is shutting down", code="media_worker_draining")
            if len(self.calls) >= self.capacity:
                raise UpstreamUnavailable("this media server is full", code="media_worker_full")
            # Taken before the first await: two offers at once can't both get the last place.
            media = self.calls[call_id] = CallMedia(call_id, ice_servers=self.ice_servers, on_state=self._on_state)
            self._announce_soon()
        try:
            answer = await media.answer(role, RTCSessionDescription(sdp=offer["sdp"], type=offer["type"]))
        except BaseException:
            if not media.links and self.calls.get(call_id) is media:
                self._forget(call_id)
            raise
        return {"sdp": advertise(answer.sdp, self.address), "type": answer.type}

    def _on_state(self, call_id: int, role: str, state: str) -> None:
        self.spawn(self._media_state(call_id, role, state))

    async def _media_state(self, call_id: int, role: str, state: str) -> None:
        media = self.calls.get(call_id)
        if media is None or media.closing:
            return
        if state == "connected":
            grace = self._grace.pop((call_id, role), None)
            if grace is not None:
                grace.cancel()
            if media.both_connected() and call_id not in self._connected:
                self._connected.add(call_id)
                # Each party's recording format follows the call's codec (H.264 → MP4, VP8 → WebM).
                await self.emit("connected", call_id, formats=media.recording_formats())
        elif state in ("failed", "closed") and (call_id, role) not in self._grace:
            self._grace[(call_id, role)] = self.spawn(self._dropped_after_grace(call_id, role))

    async def _dropped_after_grace(self, call_id: int, role: str) -> None:
        """A party's connection failed or closed: they have `video_peer_grace_s` to offer again."""
        await asyncio.sleep(self.settings.video_peer_grace_s)
        self._grace.pop((call_id, role), None)
        media = self.calls.get(call_id)
        if media is None or media.closing or media.connected(role):
            return
        await self.emit("dropped", call_id, role=role)

    async def record(self, call_id: int, paths: dict[str, str]) -> dict[str, str | None]:
        media = self.calls.get(call_id)
        if media is None:
            return {role: "the call's media is gone" for role in paths}
        return await media.start_recording(
            {role: resolve_recording(self.recordings_dir, relpath) for role, relpath in paths.items()}
        )

    async def close_call(self, call_id: int, reason: str | None = None, *, ended_at: float | None = None) -> None:
        """Close a call's media; its recordings' results go to the API as a `closed` event. `ended_at`: when the
        call ended (epoch seconds), if the API decided it."""
        media = self.calls.get(call_id)
        if media is None or media.closing:  # closing already (a repeated `close`, or the drain)
            return
        for key in [k for k in self._grace if k[0] == call_id]:
            self._grace.pop(key).cancel()
        self._connected.discard(call_id)
        try:
            results = await media.close(ended_at=ended_at)
        finally:
            self._forget(call_id)
        wire = {role: plane.result_to_wire(result) for role, result in results.items()}
        await self.emit("closed", call_id, results=wire, reason=reason)
        self._collect(call_id)

    @staticmethod
    def _collect(call_id: int) -> None:
        """A closed call's codec contexts (aiortc's decoders and encoders, PyAV's) sit in reference cycles
        with their tracks and connections; until a full collection frees them they keep their native
        threads (two per decoder) and buffers, and the worker grew by ~7 MB and 4 threads per call
        (tests/video/test_media_memory.py). One full collection per ended call frees them at once."""
        started = time.perf_counter()
        freed = gc.collect()
        if LIBC is not None:
            LIBC.malloc_trim(0)
        log.debug("call %s: gc freed %d objects in %.1f ms", call_id, freed, (time.perf_counter() - started) * 1000)

    def _forget(self, call_id: int) -> None:
        self.calls.pop(call_id, None)
        if not self.calls:
            self._emptied.set()
        self._announce_soon()

    def stats(self) -> dict:
        return {str(call_id): {"media": media.stats()} for call_id, media in self.calls.items()}

    @staticmethod
    def process_stats() -> dict:
        """This process's threads by name (pools grouped) and RSS: what the memory test and operators watch."""
        names = collections.Counter(thread.name.rsplit("_", 1)[0] for thread in threading.enumerate())
        status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        return {"threads": dict(names), "os_threads": int(status["Threads"]), "rss_kb": int(status["VmRSS"].split()[0])}

    async def emit(self, kind: str, call_id: int, **detail) -> None:
        """An event for the API (once, by one API worker); retried while Redis is briefly away."""
        fields: dict[FieldT, EncodableT] = {
            "kind": kind,
            "call_id": str(call_id),
            "worker": self.worker_id,
            "detail": json.dumps(detail),
        }
        deadline = time.monotonic() + EMIT_RETRY_S
        while True:
            try:
                await self.redis.xadd(plane.EVENTS_STREAM, fields, maxlen=plane.EVENTS_MAXLEN, approximate=True)
                return
            except (RedisError, OSError) as exc:
                if time.monotonic() > deadline:
                    log.error("call %s: %s event lost, Redis unavailable (%s)", call_id, kind, type(exc).__name__)
                    return
                await asyncio.sleep(1.0)

    # --- requests from the API workers ---

    async def _listen(self) -> None:
        if self._pubsub is None:
            raise RuntimeError("the media worker is not started (no request subscription)")
        async for item in self._pubsub.listen():
            if item.get("type") != "message":
                continue
            try:
                message = json.loads(item["data"])
                op = message["op"]
            except (ValueError, KeyError, TypeError):
                continue
            if op == "close":
                self.spawn(
                    self.close_call(int(message["call_id"]), ended_at=plane.float_or_none(message.get("ended_at")))
                )
            elif op in ("offer", "record", "stats"):
                self.spawn(self._serve(message))

    async def _serve(self, message: dict) -> None:
        reply: dict = {"op": "reply", "rid": message.get("rid")}
        try:
            op = message["op"]
            if op == "offer":
                offer = {"sdp": message["sdp"], "type": message["type"]}
                reply["answer"] = await self.offer(int(message["call_id"]), message["role"], offer)
            elif op == "record":
                reply["outcome"] = await self.record(int(message["call_id"]), message["paths"])
            else:
                reply["stats"] = self.stats()
                reply["process"] = self.process_stats()
        except YuntingError as exc:
            reply["error"] = {"status": exc.status_code, "code": exc.code, "message": exc.message}
        except Exception:
            log.exception("call %s: %s failed", message.get("call_id"), message.get("op"))
            reply["error"] = {"status": 503, "code": "media_failed", "message": "the media server failed"}
        if message.get("reply_to"):
            await self.redis.publish(message["reply_to"], json.dumps(reply))


async def serve(settings: Settings) -> None:
    if not settings.redis_url:
        raise SystemExit("the media worker needs YUNTING_REDIS_URL: the Redis of the API workers")
    redis = DeploymentRedis.from_url(settings.redis_url, decode_responses=True)
    assert isinstance(redis, DeploymentRedis)  # redis-py types `from_url` as returning `Redis`; it builds `cls`
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await MediaWorker(settings, redis).run(stop)
        exit_within(EXIT_GRACE_S)  # only after a clean drain: a failure keeps its own exit code
    finally:
        await redis.aclose()


def exit_within(seconds: float) -> None:
    """Every call is closed and reported: if the interpreter hasn't exited `seconds` from now (a thread of a
    library still running blocks asyncio's and Python's shutdown), name what is left and end the process."""

    def stop_waiting() -> None:
        left = [t.name for t in threading.enumerate() if t is not threading.current_thread() and t.is_alive()]
        log.warning("media worker: exit blocked %.0f s after the drain by threads %s; exiting", seconds, left)
        logging.shutdown()
        os._exit(0)

    timer = threading.Timer(seconds, stop_waiting)
    timer.daemon = True
    timer.start()


def main() -> None:
    settings = Settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_masking()
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
