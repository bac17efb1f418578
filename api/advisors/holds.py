"""Escalations held back for a customer's advisor: in Redis, outside every group queue, until a deadline.

While held, the group's assignment script can't hand the conversation to someone else (it isn't in the
group's sorted set). Whoever removes it from the hold first owns it (ZREM answers 1 to one caller only):
it goes to the advisor, or into the group queue at its original place. Plain Redis, no routing imports,
so the routing flows can release a hold without an import cycle. If Redis loses its data, the routing
engine is rebuilt from SQL with every waiting escalation in its group queue: the hold degrades to
ordinary group routing, nothing is lost.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

from redis.asyncio import Redis

HELD_KEY = "yt:advisor:held"  # ZSET escalation id -> deadline (epoch ms)
HELD_AGENT_KEY = "yt:advisor:held:agent"  # HASH escalation id -> agent id


async def hold(redis: Redis, escalation_id: int, agent_id: int, until: datetime) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zadd(HELD_KEY, {str(escalation_id): int(until.timestamp() * 1000)})
        pipe.hset(HELD_AGENT_KEY, str(escalation_id), agent_id)
        await pipe.execute()


async def list_held(redis: Redis, limit: int) -> list[tuple[int, int, datetime]]:
    """(escalation id, agent id, deadline), the earliest deadlines first; at most `limit`."""
    # (member, score) pairs; members as str (decode_responses=True)
    rows = cast(list[tuple[str, float]], await redis.zrange(HELD_KEY, 0, limit - 1, withscores=True))
    if not rows:
        return []
    agents = await redis.hmget(HELD_AGENT_KEY, [member for member, _ in rows])
    return [
        (int(member), int(agent or 0), datetime.fromtimestamp(score / 1000, UTC))
        for (member, score), agent in zip(rows, agents, strict=True)
    ]


async def held_for(redis: Redis, escalation_id: int) -> int | None:
    """The agent an escalation is held for, or None."""
    if await redis.zscore(HELD_KEY, str(escalation_id)) is None:
        return None
    agent = await redis.hget(HELD_AGENT_KEY, str(escalation_id))
    return int(agent) if agent else None


async def take(redis: Redis, escalation_id: int) -> bool:
    """End the hold; True for the one caller that ended it (and now decides where it goes)."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zrem(HELD_KEY, str(escalation_id))
        pipe.hdel(HELD_AGENT_KEY, str(escalation_id))
        removed, _ = await pipe.execute()
    return removed == 1
