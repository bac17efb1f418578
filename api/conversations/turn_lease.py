"""One turn per customer at a time: a Redis lease (`SET NX PX` with a random token) that only its holder can
release.

Our own few lines rather than redis-py's `Lock`: the turn releases its lease in the same pipeline as the
context write (one round trip per turn), and `Lock` offers that only through its internals (its Lua script
and thread-local token)."""

from __future__ import annotations

import asyncio
import secrets

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

# Delete the key only if it still holds our token: an expired lease taken over by another turn stays theirs.
RELEASE_SCRIPT = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


class TurnLease:
    def __init__(self, redis: Redis, name: str, *, lease_s: float, poll_s: float = 0.05) -> None:
        self.redis = redis
        self.name = name
        self.lease_ms = int(lease_s * 1000)
        self.poll_s = poll_s
        self.token: str | None = None

    async def try_acquire(self) -> bool:
        token = secrets.token_hex(16)
        if await self.redis.set(self.name, token, nx=True, px=self.lease_ms):
            self.token = token
            return True
        return False

    async def acquire(self, wait_s: float) -> bool:
        """Poll for the lease until `wait_s` has passed (bounded: a waiting request gives up, never queues)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while not await self.try_acquire():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(self.poll_s, remaining))
        return True

    def release_in(self, pipe: Pipeline) -> None:
        """Queue the release in `pipe`; its reply is 1 if the lease was still ours, 0 if it had expired."""
        pipe.eval(RELEASE_SCRIPT, 1, self.name, self.token or "")
        self.token = None

    async def release(self) -> bool:
        """False when the lease had expired (another turn may hold it now: it is left alone)."""
        if self.token is None:
            return False
        token, self.token = self.token, None
        return bool(await self.redis.eval(RELEASE_SCRIPT, 1, self.name, token))
