"""The Redis routing engine on a real Redis: ordering, least-loaded choice, and atomicity under concurrency."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from api.routing.engine import AgentSnapshot, RoutingEngine, agent_key


@pytest.fixture
async def routing(redis_url):
    client = Redis.from_url(redis_url, decode_responses=True)
    yield RoutingEngine(client)
    await client.aclose()


def group() -> str:
    # A group name of its own keeps this test's keys apart from the running app's.
    return "test-" + uuid.uuid4().hex[:8]


def agent_ids(n: int) -> list[int]:
    base = 900_000 + uuid.uuid4().int % 90_000 * 10
    return [base + i for i in range(n)]


async def test_urgent_first_then_longest_waiting(routing):
    g = group()
    [agent] = agent_ids(1)
    await routing.set_agent(AgentSnapshot(agent, [g], 10, "online", 0))
    now = datetime.now(UTC)
    await routing.enqueue(1, g, 0, now - timedelta(minutes=5))
    await routing.enqueue(2, g, 0, now - timedelta(minutes=9))
    await routing.enqueue(3, g, 10, now)
    order = [(await routing.assign_next(g))[0] for _ in range(3)]
    assert order == [3, 2, 1]
    assert await routing.assign_next(g) is None


async def test_the_least_loaded_online_agent_with_room_gets_the_next_customer(routing):
    g = group()
    busy, idle, away = agent_ids(3)
    await routing.set_agent(AgentSnapshot(busy, [g], 3, "online", 0))
    await routing.set_agent(AgentSnapshot(idle, [g], 3, "online", 0))
    await routing.set_agent(AgentSnapshot(away, [g], 3, "away", 0))
    await routing.redis.hset(agent_key(busy), "load", 2)
    await routing.enqueue(11, g, 0, datetime.now(UTC))
    assert await routing.assign_next(g) == (11, idle)


async def test_concurrent_assignment_never_overfills_an_agent(routing):
    g = group()
    agents = agent_ids(3)
    for agent in agents:
        await routing.set_agent(AgentSnapshot(agent, [g], 2, "online", 0))
    now = datetime.now(UTC)
    for escalation in range(50):
        await routing.enqueue(escalation, g, 0, now + timedelta(milliseconds=escalation))
    results = await asyncio.gather(*(routing.assign_next(g) for _ in range(50)))
    assigned = [r for r in results if r]
    assert len(assigned) == 6  # 3 agents × capacity 2
    assert len({escalation for escalation, _ in assigned}) == 6
    for agent in agents:
        assert sum(1 for _, a in assigned if a == agent) == 2
        assert await routing.load_of(agent) == 2
    assert await routing.redis.zcard(f"yt:queue:{g}") == 44


async def test_racing_claims_for_one_customer_have_one_winner(routing):
    g = group()
    agents = agent_ids(5)
    for agent in agents:
        await routing.set_agent(AgentSnapshot(agent, [g], 3, "online", 0))
    await routing.enqueue(77, g, 0, datetime.now(UTC))
    outcomes = await asyncio.gather(*(routing.claim(77, g, agent) for agent in agents))
    assert sorted(outcomes) == ["ok", "taken", "taken", "taken", "taken"]


async def test_release_never_goes_below_zero(routing):
    [agent] = agent_ids(1)
    await routing.set_agent(AgentSnapshot(agent, [group()], 1, "online", 0))
    await routing.release(agent)
    assert await routing.load_of(agent) == 0
