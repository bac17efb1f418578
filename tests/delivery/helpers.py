"""Drivers for the delivery, queue and case tests: agents, customers on either channel, what WeChat sent."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from api.settings import DEV_MINIAPP_APP_ID, DEV_OA_APP_ID
from tests.support import AgentConsole, MiniappCustomer, create_agent

TEMPLATE = "yt-agent-reply-dev"


async def agent(stack, *, skills=("general",), presence: str | None = "online", capacity: int = 3) -> AgentConsole:
    username = "ag-" + uuid.uuid4().hex[:8]
    await create_agent(
        stack.database_url, username=username, password="pw-123456", skills=list(skills), capacity=capacity
    )
    console = await AgentConsole.login(stack.app_url, username, "pw-123456")
    if presence:
        assert (await console.http.put("/agents/me/presence", json={"presence": presence})).status_code == 200
    return console


async def eventually(check, *, timeout: float = 10.0, every: float = 0.1, what: str = "condition"):
    """Poll ``check`` (async, returns a truthy value when done) until it holds; returns that value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(every)


async def state_of(customer: MiniappCustomer) -> str:
    return (await customer.history())["conversation"]["state"]


async def with_agent(customer: MiniappCustomer) -> None:
    async def held():
        return await state_of(customer) == "with_agent"

    await eventually(held, what="the conversation to reach an agent")


async def agent_message(console: AgentConsole, conversation_id: int, message_id: int) -> dict:
    view = (await console.http.get(f"/agents/conversations/{conversation_id}")).json()
    return next(m for m in view["messages"] if m["id"] == message_id)


async def wait_delivery(console: AgentConsole, conversation_id: int, message_id: int, state: str, **kw) -> dict:
    async def reached():
        message = await agent_message(console, conversation_id, message_id)
        return message["delivery"] if message["delivery"] and message["delivery"]["state"] == state else None

    return await eventually(reached, what=f"message {message_id} to be {state}", **kw)


async def reply(console: AgentConsole, conversation_id: int, text: str) -> dict:
    response = await console.http.post(f"/agents/conversations/{conversation_id}/messages", json={"text": text})
    assert response.status_code == 200, response.text
    return response.json()


def sent(emulator_url: str, openid: str, api: str) -> list[dict]:
    response = httpx.get(emulator_url + "/_sim/sent", params={"openid": openid, "api": api})
    response.raise_for_status()
    return response.json()["items"]


def openid_of(emulator_url: str, person: str, appid: str) -> str:
    response = httpx.get(emulator_url + "/_sim/identity", params={"appid": appid, "person": person})
    response.raise_for_status()
    return response.json()["openid"]


def tap_allow(emulator_url: str, person: str) -> None:
    """The person taps 允许 on the subscribe-message prompt (WeChat records one grant)."""
    body = {"appid": DEV_MINIAPP_APP_ID, "openid": openid_of(emulator_url, person, DEV_MINIAPP_APP_ID)}
    httpx.post(emulator_url + "/_sim/subscribe_grants", json={**body, "template_id": TEMPLATE}).raise_for_status()


def inject_fault(emulator_url: str, path: str, errcode: int, times: int) -> None:
    body = {"path": path, "errcode": errcode, "times": times}
    httpx.post(emulator_url + "/_sim/faults", json=body).raise_for_status()


__all__ = ["DEV_MINIAPP_APP_ID", "DEV_OA_APP_ID", "TEMPLATE"]
