"""Whether a customer has a mini-program page open: their live sockets, counted in Redis.

Kept apart from pub/sub on purpose: how workers subscribe to customer events (one subscription per socket
today, perhaps one per worker tomorrow) must not change the answer to "is the customer on the page". A
socket registers when it opens, renews on every frame from the page (pages ping every 25 s) and leaves when
it closes; one whose worker died simply expires.
"""

from __future__ import annotations

import secrets
import time

from redis.asyncio import Redis

SOCKET_TTL_S = 70  # a little over two missed pings


def _key(customer_id: int) -> str:
    return f"yt:sockets:customer:{customer_id}"


async def socket_opened(redis: Redis, customer_id: int) -> str:
    """Register an open page socket; returns its id for `socket_alive` / `socket_closed`."""
    socket_id = secrets.token_hex(8)
    await socket_alive(redis, customer_id, socket_id)
    return socket_id


async def socket_alive(redis: Redis, customer_id: int, socket_id: str) -> None:
    now = time.time()
    key = _key(customer_id)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zadd(key, {socket_id: now + SOCKET_TTL_S})
        pipe.zremrangebyscore(key, "-inf", now)  # sockets of a worker that died without saying so
        pipe.expire(key, SOCKET_TTL_S)
        await pipe.execute()


async def socket_closed(redis: Redis, customer_id: int, socket_id: str) -> None:
    await redis.zrem(_key(customer_id), socket_id)


async def customer_connected(redis: Redis, customer_id: int) -> bool:
    """Whether the customer has a mini-program page open right now."""
    return int(await redis.zcount(_key(customer_id), time.time(), "+inf")) > 0
