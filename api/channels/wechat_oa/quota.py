"""The customer-service windows of official-account users, tracked in Redis for every worker.

WeChat lets an account send customer-service messages only after the user did something: a message
opens 48 h for 5 messages, a menu click / subscribe / scan 1 minute for 3; each new interaction
replaces the window. "Typing" is allowed within 30 s of the interaction. We count on our side so a
message that can't go is kept pending at once instead of being bounced by WeChat; WeChat's own
answer (45015/45047) still wins and is folded back in here.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

# kind -> (window length in seconds, messages allowed)
WINDOWS: dict[str, tuple[int, int]] = {"message": (48 * 3600, 5), "event": (60, 3)}
TYPING_WINDOW_S = 30
# A retried push is the same interaction: remembered this long (WeChat retries within ~15 s).
INTERACTION_MEMORY_S = 3600

# Take one message from the window atomically: 1 = go, 0 = spent, -1 = no open window.
_TAKE = """
local w = redis.call('HMGET', KEYS[1], 'at', 'span', 'limit', 'used')
if not w[1] then return -1 end
if tonumber(ARGV[1]) - tonumber(w[1]) >= tonumber(w[2]) then return -1 end
if tonumber(w[4]) >= tonumber(w[3]) then return 0 end
redis.call('HINCRBY', KEYS[1], 'used', 1)
return 1
"""

# A new interaction opens a fresh window; a retried push (its marker already set) changes nothing. One
# round trip per push: 1 = opened, 0 = a retry.
_OPEN = """
if not redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[1]) then return 0 end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'at', ARGV[2], 'span', ARGV[3], 'limit', ARGV[4], 'used', 0)
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""


class ServiceWindows:
    """Per (appid, openid): when the user last interacted, and how many messages are left."""

    def __init__(self, redis: Redis, app_id: str) -> None:
        self.redis = redis
        self.app_id = app_id
        self._take = redis.register_script(_TAKE)
        self._open = redis.register_script(_OPEN)

    def _key(self, openid: str) -> str:
        return f"yt:oa:window:{self.app_id}:{openid}"

    async def open(self, openid: str, kind: str, *, interaction: str) -> bool:
        """A new interaction (``interaction`` names it: a retried push doesn't reopen); True if new."""
        span, limit = WINDOWS[kind]
        marker = f"yt:oa:interaction:{self.app_id}:{interaction}"
        opened = await self._open(
            keys=[marker, self._key(openid)], args=[INTERACTION_MEMORY_S, time.time(), span, limit]
        )
        return int(opened) == 1

    async def take(self, openid: str) -> bool:
        """Spend one message if the window allows it."""
        return int(await self._take(keys=[self._key(openid)], args=[time.time()])) == 1

    async def give_back(self, openid: str) -> None:
        """The message didn't reach WeChat (network): it used nothing."""
        key = self._key(openid)
        if int(await self.redis.hget(key, "used") or 0) > 0:
            await self.redis.hincrby(key, "used", -1)

    async def spent(self, openid: str) -> None:
        """WeChat said 45047: the window has no messages left, whatever we counted."""
        key = self._key(openid)
        limit = await self.redis.hget(key, "limit")
        if limit is not None:
            await self.redis.hset(key, "used", limit)

    async def closed(self, openid: str) -> None:
        """WeChat said 45015: the window is over (or the user unsubscribed)."""
        await self.redis.delete(self._key(openid))

    async def typing_allowed(self, openid: str) -> bool:
        """Whether the last interaction was under 30 s ago."""
        at = await self.redis.hget(self._key(openid), "at")
        return at is not None and time.time() - float(at) < TYPING_WINDOW_S
