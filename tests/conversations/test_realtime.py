"""Pub/sub between workers stays inside one deployment: two deployments sharing a Redis server on
different database numbers (say staging and production) don't hear each other's events."""

from __future__ import annotations

import asyncio

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import parse_url

from api.realtime import DeploymentRedis, customer_channel, publish


def client(redis_url: str, db: int) -> DeploymentRedis:
    return DeploymentRedis(connection_pool=ConnectionPool(**{**parse_url(redis_url), "db": db}, decode_responses=True))


async def next_event(pubsub, timeout: float = 1.0) -> dict | None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        item = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if item is not None:
            return item
    return None


async def test_events_reach_workers_of_the_same_deployment_only(redis_url):
    production, production_worker, staging = client(redis_url, 14), client(redis_url, 14), client(redis_url, 15)
    listening = production.pubsub()
    await listening.subscribe(customer_channel(7))
    try:
        assert [count for _, count in await production_worker.pubsub_numsub(customer_channel(7))] == [1]
        assert [count for _, count in await staging.pubsub_numsub(customer_channel(7))] == [0]

        await publish(staging, customer_channel(7), {"type": "message", "text": "staging"})
        assert await next_event(listening) is None
        await publish(production_worker, customer_channel(7), {"type": "message", "text": "production"})
        event = await next_event(listening)
        assert event is not None and '"production"' in event["data"]
    finally:
        await listening.unsubscribe()
        await listening.aclose()
        for each in (production, production_worker, staging):
            await each.aclose()
