"""Real-time events between API workers: Redis pub/sub channels, published only after a commit."""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

AGENTS_CHANNEL = "yt:events:agents"


def customer_channel(customer_id: int) -> str:
    return f"yt:events:customer:{customer_id}"


async def publish(redis: Redis, channel: str, event: dict[str, Any]) -> None:
    await redis.publish(channel, json.dumps(event, ensure_ascii=False, default=str))


async def publish_to_customer(redis: Redis, customer_id: int, event: dict[str, Any]) -> None:
    await publish(redis, customer_channel(customer_id), event)


def agent_channel(agent_id: int) -> str:
    return f"yt:events:agent:{agent_id}"
