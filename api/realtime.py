"""Real-time events between API workers: Redis pub/sub channels, published only after a commit, and each
worker's one subscriber fanning them out to its sockets (`EventHub`)."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline, PubSub
from redis.exceptions import RedisError

from api.health.instruments import OPEN_SOCKETS

log = logging.getLogger(__name__)

AGENTS_CHANNEL = "yt:events:agents"


def customer_channel(customer_id: int) -> str:
    return f"yt:events:customer:{customer_id}"


async def publish(redis: Redis, channel: str, event: dict[str, Any]) -> None:
    await redis.publish(channel, json.dumps(event, ensure_ascii=False, default=str))


async def publish_many(redis: Redis, events: list[tuple[str, dict[str, Any]]]) -> None:
    """Several events, in order, in one round trip (a pipeline; `DeploymentRedis`'s prefix applied here, as
    a pipeline's commands don't pass through its `publish`)."""
    if len(events) == 1:
        await publish(redis, *events[0])
        return
    async with redis.pipeline(transaction=False) as pipe:
        publish_in(pipe, redis, events)
        await pipe.execute()


def publish_in(pipe: Pipeline, redis: Redis, events: list[tuple[str, dict[str, Any]]]) -> None:
    """Queue events on a pipeline of ``redis`` (with its deployment's prefix), to go with its other commands."""
    prefix = redis.channel_prefix if isinstance(redis, DeploymentRedis) else ""
    for channel, event in events:
        pipe.publish(prefix + channel, json.dumps(event, ensure_ascii=False, default=str))


async def publish_to_customer(redis: Redis, customer_id: int, event: dict[str, Any]) -> None:
    await publish(redis, customer_channel(customer_id), event)


def agent_channel(agent_id: int) -> str:
    return f"yt:events:agent:{agent_id}"


class DeploymentRedis(Redis):
    """The app's Redis client: pub/sub channel names carry the database number of the URL.

    Keys are separated by database number, pub/sub channels are not: two deployments sharing one server
    (staging on db 1, production on db 0) would otherwise hear each other's events, customer messages
    included. Code names channels as usual; the prefix is added here, on publish, subscribe and numsub."""

    @property
    def channel_prefix(self) -> str:
        return f"db{self.connection_pool.connection_kwargs.get('db', 0)}:"

    def publish(self, channel, message, **kwargs):
        return super().publish(self.channel_prefix + channel, message, **kwargs)

    def pubsub_numsub(self, *channels, **kwargs):
        return super().pubsub_numsub(*(self.channel_prefix + channel for channel in channels), **kwargs)

    def pubsub(self, **kwargs) -> DeploymentPubSub:
        # No `event_dispatcher`: PubSub makes its own; the client's (private) one only serves credential
        # providers that re-authenticate connections, which a deployment here doesn't configure.
        return DeploymentPubSub(self.channel_prefix, self.connection_pool, **kwargs)


class DeploymentPubSub(PubSub):
    """Subscriptions under the deployment's prefix (see `DeploymentRedis`).

    After a reconnect redis-py subscribes again to the names it recorded (already prefixed, as bytes):
    those pass through unchanged, so a reconnected subscriber still hears its channels."""

    def __init__(self, prefix: str, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.prefix = prefix
        self.on_reconnect: Callable[[], None] | None = None
        self._connected_once = False

    def _named(self, channel):
        if isinstance(channel, bytes):
            return channel if channel.startswith(self.prefix.encode()) else self.prefix.encode() + channel
        if isinstance(channel, str):
            return channel if channel.startswith(self.prefix) else self.prefix + channel
        return channel  # a redis-py Subscription replayed at reconnect: its name is already prefixed

    async def subscribe(self, *channels, **handlers):
        handlers = {self._named(channel): handler for channel, handler in handlers.items()}
        return await super().subscribe(*(self._named(channel) for channel in channels), **handlers)

    def unsubscribe(self, *channels):
        return super().unsubscribe(*(self._named(channel) for channel in channels))

    async def on_connect(self, connection) -> None:
        """redis-py's connect callback (it subscribes again to every channel): tell the owner that what was
        published meanwhile is lost, so it can catch up from the record."""
        await super().on_connect(connection)
        if self._connected_once and self.on_reconnect is not None:
            self.on_reconnect()
        self._connected_once = True


# ---- one subscriber per worker ---------------------------------------------------------------------------------
RESYNC = object()  # yielded by a subscription after Redis came back: events may have been missed meanwhile
CONFIRM_TIMEOUT_S = 5.0


class SubscriberOverflow(Exception):
    """A socket fell too far behind its events: close it; the client reconnects and catches up from SQL."""


class Subscription:
    """One socket's view of its channels: a bounded buffer of event payloads (JSON text) from the hub."""

    __slots__ = ("_items", "_ready", "channels", "kind", "limit", "overflowed")

    def __init__(self, channels: tuple[str, ...], kind: str, limit: int) -> None:
        self.channels, self.kind, self.limit = channels, kind, limit
        self._items: deque = deque()
        self._ready = asyncio.Event()
        self.overflowed = False

    def push(self, item) -> None:
        if len(self._items) >= self.limit:
            self.overflowed = True  # never block the hub, never grow without bound
            self._items.clear()
        else:
            self._items.append(item)
        self._ready.set()

    async def next(self):
        """The next payload (a str) or `RESYNC`; raises SubscriberOverflow when it fell behind."""
        while not self._items and not self.overflowed:
            self._ready.clear()
            await self._ready.wait()
        if self.overflowed:
            raise SubscriberOverflow(f"more than {self.limit} events waiting")
        return self._items.popleft()


class EventHub:
    """This worker's one Redis pub/sub connection, fanned out in process to its sockets.

    A channel is subscribed on Redis while at least one local socket listens to it (plain SUBSCRIBE, not a
    pattern: `PUBSUB NUMSUB` still says whether a customer has a live socket somewhere), and each event is
    parsed once per worker. A new listener waits for Redis to confirm the subscription before it replays
    from SQL, so nothing falls between the replay and the first live event. If the connection drops,
    redis-py reconnects and subscribes again; every listener then gets `RESYNC` to catch up from the record.
    """

    def __init__(self, redis: DeploymentRedis, *, buffer: int = 256) -> None:
        self.redis, self.buffer = redis, buffer
        self.worker_channel = f"yt:events:worker:{uuid.uuid4().hex[:12]}"
        self._pubsub: DeploymentPubSub | None = None
        self._local: dict[str, set[Subscription]] = {}
        self._confirmed: dict[str, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None
        self.delivered = 0

    @property
    def prefix(self) -> str:
        return self.redis.channel_prefix

    def sockets(self) -> int:
        return len({sub for subs in self._local.values() for sub in subs})

    async def start(self) -> None:
        self._pubsub = self.redis.pubsub()
        self._pubsub.on_reconnect = self._resync_all
        await self._pubsub.subscribe(self.worker_channel)  # the connection exists from the start
        self._reader = asyncio.create_task(self._read(), name="event-hub")

    async def stop(self) -> None:
        if self._reader:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._pubsub is not None:
            await self._pubsub.aclose()

    @asynccontextmanager
    async def listen(self, *channels: str, kind: str) -> AsyncIterator[Subscription]:
        """Events of these channels for one socket, from the moment this returns (Redis confirmed)."""
        assert self._pubsub is not None, "start() first"
        sub = Subscription(channels, kind, self.buffer)
        OPEN_SOCKETS.labels(kind).inc()
        try:
            async with asyncio.timeout(CONFIRM_TIMEOUT_S):
                waits = []
                for channel in channels:
                    local = self._local.setdefault(channel, set())
                    local.add(sub)
                    if len(local) == 1 and channel not in self._confirmed:
                        self._confirmed[channel] = asyncio.get_running_loop().create_future()
                        await self._subscribe(channel)
                    if not self._confirmed[channel].done():
                        waits.append(self._confirmed[channel])
                if waits:
                    await asyncio.gather(*(asyncio.shield(w) for w in waits))
            yield sub
        finally:
            OPEN_SOCKETS.labels(kind).dec()
            for channel in channels:
                remaining = self._local.get(channel)
                if remaining is None:
                    continue
                remaining.discard(sub)
                if not remaining:
                    del self._local[channel]
                    self._confirmed.pop(channel, None)
                    try:
                        await self._pubsub.unsubscribe(channel)
                    except Exception:  # Redis is down: the reconnect subscribes only what is still listened to
                        log.debug("unsubscribe of %s failed", channel, exc_info=True)

    async def _subscribe(self, channel: str) -> None:
        """SUBSCRIBE, again while the connection is being re-made: redis-py records a channel (to subscribe it again
        on reconnect) only once its command went out, so one whose command failed would never be heard. Bounded by
        `listen`'s confirmation timeout."""
        assert self._pubsub is not None, "start() first"
        while True:
            try:
                await self._pubsub.subscribe(channel)
                return
            except (RedisError, RuntimeError, AttributeError):
                # The connection died under the command: redis-py re-makes it from this call or the reader's, and
                # the two can meet (a second read, a writer already gone). The reader recovers on its own; here it
                # is one more try once the dust settles.
                log.debug("subscribe of %s failed; trying again", channel, exc_info=True)
                await asyncio.sleep(0.1)

    async def _read(self) -> None:
        assert self._pubsub is not None, "started by start()"
        backoff = 0.1
        while True:
            try:
                item = await self._pubsub.get_message(timeout=1.0)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis is gone: redis-py reconnects (and resubscribes) on the next read
                log.warning("event hub lost Redis; retrying in %.1f s", backoff, exc_info=log.isEnabledFor(10))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if item is None:
                continue
            channel = item.get("channel") or ""
            if isinstance(channel, bytes):
                channel = channel.decode()
            channel = channel.removeprefix(self.prefix)
            if item["type"] == "message":
                for sub in self._local.get(channel, ()):
                    sub.push(item["data"])
                    self.delivered += 1
            elif item["type"] == "subscribe":
                future = self._confirmed.get(channel)
                if future is not None and not future.done():
                    future.set_result(None)

    def _resync_all(self) -> None:
        log.info("event hub reconnected to Redis: %d sockets catch up from the record", self.sockets())
        for subs in self._local.values():
            for sub in subs:
                sub.push(RESYNC)
