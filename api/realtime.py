"""Real-time events between API workers: Redis pub/sub channels, published only after a commit."""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

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
    prefix = redis.channel_prefix if isinstance(redis, DeploymentRedis) else ""
    async with redis.pipeline(transaction=False) as pipe:
        for channel, event in events:
            pipe.publish(prefix + channel, json.dumps(event, ensure_ascii=False, default=str))
        await pipe.execute()


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

    def pubsub(self, **kwargs) -> PubSub:
        return DeploymentPubSub(
            self.channel_prefix, self.connection_pool, event_dispatcher=self._event_dispatcher, **kwargs
        )


class DeploymentPubSub(PubSub):
    """Subscriptions under the deployment's prefix (see `DeploymentRedis`)."""

    def __init__(self, prefix: str, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.prefix = prefix

    async def subscribe(self, *channels, **handlers):
        handlers = {self.prefix + channel: handler for channel, handler in handlers.items()}
        return await super().subscribe(*(self.prefix + channel for channel in channels), **handlers)

    def unsubscribe(self, *channels):
        return super().unsubscribe(*(self.prefix + channel for channel in channels))
