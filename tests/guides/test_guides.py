"""Guided steps: the agent's guide card, the customer's page reporting its step, the agent seeing it live."""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.client import connect

from tests.advisors.support import agent, eventually, held_ids
from tests.support import MiniappCustomer

STEPS = ["打开「转账」页", "输入收款人", "输入金额", "确认并输入密码"]


async def test_the_agent_sees_the_customers_step_live(isolated_stack, emulator):
    stack = isolated_stack()
    _, console = await agent(stack, name="guide")
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    conversation_id = (await customer.say("转人工"))["conversation"]["id"]
    await eventually(lambda: _has(console, conversation_id))
    sent = await console.http.post(
        f"/agents/conversations/{conversation_id}/guides",
        json={"page": "pages/transfer/transfer", "title": "手机银行转账", "steps": STEPS},
    )
    assert sent.status_code == 200, sent.text
    guide_id = sent.json()["id"]
    card = next(m for m in (await customer.history())["messages"] if (m.get("payload") or {}).get("type") == "guide")
    assert card["payload"]["miniapp_path"] == f"pages/transfer/transfer?guide_id={guide_id}"
    assert card["payload"]["steps"] == STEPS
    token = console.http.headers["authorization"].split(" ", 1)[1]
    headers = {"Authorization": f"Bearer {token}"}  # a token never goes in a URL (the console uses a ticket)
    async with connect(stack.app_url.replace("http://", "ws://") + "/agents/ws", additional_headers=headers) as ws:
        await asyncio.sleep(0.3)
        for step in (1, 2, 3):
            reported = await customer.http.post(f"/miniapp/guides/{guide_id}/progress", json={"step": step})
            assert reported.status_code == 200
            event = await _next(ws, "guide_progress")
            assert event["guide"]["current_step"] == step and event["guide"]["state"] == "in_progress"
        done = await customer.http.post(f"/miniapp/guides/{guide_id}/progress", json={"step": 4, "done": True})
        assert done.json()["state"] == "done"
        assert (await _next(ws, "guide_progress"))["guide"]["state"] == "done"
    beyond = await customer.http.post(f"/miniapp/guides/{guide_id}/progress", json={"step": 5})
    assert beyond.status_code == 400
    listed = (await console.http.get(f"/agents/conversations/{conversation_id}/guides")).json()
    assert [p["step"] for p in listed[0]["progress"]] == [1, 2, 3, 4]
    assert (await console.http.post(f"/agents/guides/{guide_id}/stop")).status_code == 200
    stopped = await customer.http.post(f"/miniapp/guides/{guide_id}/progress", json={"step": 1})
    assert stopped.status_code == 409
    other = await MiniappCustomer.login(stack.app_url, emulator)
    assert (await other.http.get(f"/miniapp/guides/{guide_id}")).status_code == 404
    bad_page = await console.http.post(
        f"/agents/conversations/{conversation_id}/guides", json={"page": "https://evil", "title": "x", "steps": ["a"]}
    )
    assert bad_page.status_code == 422
    for client in (console, customer, other):
        await client.aclose()


async def _has(console, conversation_id):
    return conversation_id in await held_ids(console)


async def _next(ws, kind: str, timeout: float = 10.0) -> dict:
    async def wait():
        while True:
            event = json.loads(await ws.recv())
            if event.get("type") == kind:
                return event

    return await asyncio.wait_for(wait(), timeout)
