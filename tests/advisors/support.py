"""Helpers for the advisor services' tests: agents, a supervisor, an advisor assigned through the API."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from tests.support import AgentConsole, MiniappCustomer, create_agent

PASSWORD = "pw-123456"


def local_day(starts_at: str, timezone: str) -> str:
    """The bank's day (YYYY-MM-DD in `timezone`) an instant from the API falls on."""
    instant = datetime.fromisoformat(starts_at)
    instant = instant if instant.tzinfo else instant.replace(tzinfo=UTC)
    return instant.astimezone(ZoneInfo(timezone)).date().isoformat()


ALL_WEEK = [{"weekday": day, "start": "00:00", "end": "24:00"} for day in range(7)]


async def agent(
    stack, *, skills=("general",), capacity=3, role="agent", online=True, name=None
) -> tuple[int, AgentConsole]:
    username = (name or "ag") + "-" + uuid.uuid4().hex[:8]
    agent_id = await create_agent(
        stack.database_url, username=username, password=PASSWORD, skills=list(skills), role=role, capacity=capacity
    )
    console = await AgentConsole.login(stack.app_url, username, PASSWORD)
    if online:
        assert (await console.http.put("/agents/me/presence", json={"presence": "online"})).status_code == 200
    return agent_id, console


async def assign_advisor(supervisor: AgentConsole, customer: MiniappCustomer, agent_id: int) -> dict:
    response = await supervisor.http.put(
        f"/supervisor/customers/{customer.customer_id}/advisor", json={"agent_id": agent_id}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def held_ids(console: AgentConsole) -> list[int]:
    response = await console.http.get("/agents/me/conversations")
    assert response.status_code == 200, response.text
    return [c["conversation_id"] for c in response.json()]


async def eventually(check, timeout: float = 10.0, interval: float = 0.2):
    """The value of `check()` once truthy; fails with the last value after `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, f"still {value!r} after {timeout} s"
        await asyncio.sleep(interval)
