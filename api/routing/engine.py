"""The routing engine in Redis: one queue per skill group and each agent's live load, changed only by
Lua scripts so that assignment is atomic across every API worker (SQL keeps the record).

Keys:
  yt:queue:<group>          ZSET escalation id → score (higher priority first, then longest waiting)
  yt:agent:<id>             HASH presence, load, capacity
  yt:group:<group>:agents   SET of agent ids with that skill
  yt:routing:built          present once the engine was (re)built from SQL
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis

BUILT_KEY = "yt:routing:built"
PRIORITY_WEIGHT = 10**13  # bigger than any millisecond timestamp

# Pop the head of a group's queue for the least-loaded online agent of that group with free capacity.
_ASSIGN = """
local head = redis.call('ZRANGE', KEYS[1], 0, 0)
if #head == 0 then return false end
local best, best_load = false, nil
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local h = redis.call('HMGET', ARGV[1] .. id, 'presence', 'load', 'capacity')
  if h[1] == 'online' then
    local load, cap = tonumber(h[2] or '0'), tonumber(h[3] or '0')
    if load < cap and (best_load == nil or load < best_load
        or (load == best_load and tonumber(id) < tonumber(best))) then
      best, best_load = id, load
    end
  end
end
if not best then return false end
redis.call('ZREM', KEYS[1], head[1])
redis.call('HINCRBY', ARGV[1] .. best, 'load', 1)
return {head[1], best}
"""

# Take one given escalation for one given agent (a manual claim, or a direct transfer).
_CLAIM = """
if ARGV[3] == '1' and redis.call('ZSCORE', KEYS[1], ARGV[1]) == false then return 'taken' end
local h = redis.call('HMGET', KEYS[2], 'load', 'capacity')
if tonumber(h[1] or '0') >= tonumber(h[2] or '0') then return 'full' end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HINCRBY', KEYS[2], 'load', 1)
return 'ok'
"""

# Give back one unit of an agent's load, never below zero.
_RELEASE = """
local load = tonumber(redis.call('HGET', KEYS[1], 'load') or '0')
if load > 0 then redis.call('HINCRBY', KEYS[1], 'load', -1) end
return load
"""


def queue_key(group: str) -> str:
    return f"yt:queue:{group}"


def agent_key(agent_id: int) -> str:
    return f"yt:agent:{agent_id}"


def group_agents_key(group: str) -> str:
    return f"yt:group:{group}:agents"


def queue_score(priority: int, queued_at: datetime) -> float:
    return -priority * PRIORITY_WEIGHT + int(queued_at.timestamp() * 1000)


@dataclass(frozen=True)
class AgentSnapshot:
    agent_id: int
    skills: list[str]
    capacity: int
    presence: str
    load: int


@dataclass(frozen=True)
class WaitingSnapshot:
    escalation_id: int
    skill_group: str
    priority: int
    queued_at: datetime


class RoutingEngine:
    """Atomic queue and capacity operations; every method is safe to call from several workers at once."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._assign = redis.register_script(_ASSIGN)
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)

    async def enqueue(self, escalation_id: int, group: str, priority: int, queued_at: datetime) -> None:
        await self.redis.zadd(queue_key(group), {str(escalation_id): queue_score(priority, queued_at)})

    async def remove(self, escalation_id: int, group: str) -> None:
        await self.redis.zrem(queue_key(group), str(escalation_id))

    async def assign_next(self, group: str) -> tuple[int, int] | None:
        """(escalation id, agent id) for the head of the group's queue, or None if nobody can take it."""
        result = await self._assign(keys=[queue_key(group), group_agents_key(group)], args=["yt:agent:"])
        if not result:
            return None
        return int(result[0]), int(result[1])

    async def claim(self, escalation_id: int, group: str, agent_id: int, *, must_be_queued: bool = True) -> str:
        """'ok', 'taken' (no longer in the queue) or 'full' (the agent is at capacity)."""
        result = await self._claim(
            keys=[queue_key(group), agent_key(agent_id)],
            args=[str(escalation_id), str(agent_id), "1" if must_be_queued else "0"],
        )
        return result.decode() if isinstance(result, bytes) else str(result)

    async def release(self, agent_id: int) -> None:
        await self._release(keys=[agent_key(agent_id)])

    async def set_agent(self, agent: AgentSnapshot) -> None:
        """Presence, capacity and skills (the load is kept unless this is a rebuild)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(agent_key(agent.agent_id), mapping={"presence": agent.presence, "capacity": agent.capacity})
            for group in agent.skills:
                pipe.sadd(group_agents_key(group), agent.agent_id)
            await pipe.execute()

    async def load_of(self, agent_id: int) -> int:
        return int(await self.redis.hget(agent_key(agent_id), "load") or 0)

    async def is_built(self) -> bool:
        return bool(await self.redis.exists(BUILT_KEY))

    async def rebuild(self, agents: list[AgentSnapshot], waiting: list[WaitingSnapshot]) -> None:
        """Recreate every key from the SQL record (after Redis lost its data)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for agent in agents:
                pipe.hset(
                    agent_key(agent.agent_id),
                    mapping={
                        "presence": agent.presence,
                        "capacity": agent.capacity,
                        "load": agent.load,
                    },
                )
                for group in agent.skills:
                    pipe.sadd(group_agents_key(group), agent.agent_id)
            for item in waiting:
                pipe.zadd(
                    queue_key(item.skill_group), {str(item.escalation_id): queue_score(item.priority, item.queued_at)}
                )
            pipe.set(BUILT_KEY, "1")
            await pipe.execute()
