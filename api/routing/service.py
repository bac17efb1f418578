"""What routing tells the rest of the app, without its loop: whether an agent's console is alive, and a plain
estimate of a queued customer's wait."""

from __future__ import annotations

import math

from redis.asyncio import Redis


def alive_key(agent_id: int) -> str:
    return f"yt:agent:{agent_id}:alive"


async def touch_agent(redis: Redis, agent_id: int, ttl_s: int) -> None:
    """An agent showed signs of life (a request, or a console WebSocket ping)."""
    await redis.set(alive_key(agent_id), "1", ex=ttl_s)


def estimated_wait_minutes(position: int, online_agents: int, avg_handle_s: int) -> int:
    """A plain estimate: customers ahead shared among the group's online agents, times a typical handling time.
    Callers give no estimate at all when nobody is online (see `api/conversations/queue_talk.py`)."""
    rounds = math.ceil(position / max(online_agents, 1))
    return max(1, math.ceil(rounds * avg_handle_s / 60))
