"""The customer's turn lease (api/conversations/turn_lease.py) on a real Redis: one holder at a time, a
bounded wait, and a lease that expired and was taken over is never released by its former holder."""

from __future__ import annotations

import asyncio
import secrets

from redis.asyncio import Redis

from api.conversations.turn_lease import TurnLease


async def test_one_holder_at_a_time_and_a_bounded_wait(redis_url):
    redis = Redis.from_url(redis_url, decode_responses=True)
    name = f"yt:test:turn:{secrets.token_hex(4)}"
    first, second = TurnLease(redis, name, lease_s=10), TurnLease(redis, name, lease_s=10)
    try:
        assert await first.try_acquire()
        assert not await second.try_acquire()
        started = asyncio.get_running_loop().time()
        assert not await second.acquire(0.3)
        assert asyncio.get_running_loop().time() - started >= 0.3

        async def release_soon() -> None:
            await asyncio.sleep(0.2)
            assert await first.release()

        releasing = asyncio.create_task(release_soon())
        assert await second.acquire(5)  # gets it once the holder lets go, well before the wait ends
        await releasing
        assert await redis.get(name) == second.token
        assert not await first.release()  # nothing left to release: the lease is second's
        assert await redis.get(name) == second.token
    finally:
        await redis.delete(name)
        await redis.aclose()


async def test_an_expired_lease_taken_over_stays_with_the_new_holder(redis_url):
    redis = Redis.from_url(redis_url, decode_responses=True)
    name = f"yt:test:turn:{secrets.token_hex(4)}"
    slow, next_turn = TurnLease(redis, name, lease_s=0.2), TurnLease(redis, name, lease_s=10)
    try:
        assert await slow.try_acquire()
        assert await next_turn.acquire(2)  # the slow turn's lease ran out
        async with redis.pipeline(transaction=False) as pipe:
            pipe.set(f"{name}:context", "written")
            slow.release_in(pipe)  # the way customer_turn releases: with the context write, one round trip
            _, released = await pipe.execute()
        assert released == 0
        assert await redis.get(name) == next_turn.token
        assert await next_turn.release()
        assert await redis.get(name) is None
    finally:
        await redis.delete(name, f"{name}:context")
        await redis.aclose()
