"""Escalation to a human end to end: 转人工 → queued → an agent claims and replies → the customer's socket."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest

from tests.support import AgentConsole, MiniappCustomer, create_agent, next_message


@pytest.fixture
async def agent(app_url, database_url):
    username = "agent-" + uuid.uuid4().hex[:8]
    await create_agent(database_url, username=username, password="s3cret-pass", skills=["general", "cards"])
    console = await AgentConsole.login(app_url, username, "s3cret-pass")
    yield console
    await console.aclose()


async def test_request_human_queues_and_the_agents_reply_reaches_the_customer_socket(app_url, emulator, agent):
    customer = await MiniappCustomer.login(app_url, emulator)
    await customer.say("我的信用卡丢了")
    result = await customer.say("转人工")
    assert result["conversation"]["state"] == "queued"
    assert any("队列" in r["text"] for r in result["replies"])
    conversation_id = result["conversation"]["id"]

    queue = (await agent.http.get("/agents/queue")).json()
    item = next(i for i in queue if i["conversation_id"] == conversation_id)
    # The lost credit card routes the human request to the cards group, with the details collected so far.
    assert item["skill_group"] == "cards" and item["reason"] == "request_human"
    assert "挂失" in item["summary"]

    claimed = await agent.http.post(f"/agents/conversations/{conversation_id}/claim")
    assert claimed.status_code == 200 and claimed.json()["state"] == "with_agent"
    view = (await agent.http.get(f"/agents/conversations/{conversation_id}")).json()
    assert view["handoff_card"]["intent"] == "report_loss"
    assert view["handoff_card"]["slots"]["card_type"] == "credit"
    assert [m["text"] for m in view["messages"] if m["sender_kind"] == "customer"] == ["我的信用卡丢了", "转人工"]

    async with customer.socket(after_id=view["messages"][-1]["id"]) as ws:
        sent = await agent.http.post(
            f"/agents/conversations/{conversation_id}/messages", json={"text": "您好，我来帮您挂失。"}
        )
        assert sent.status_code == 200
        pushed = await next_message(ws, predicate=lambda m: m["sender_kind"] == "agent")
        assert pushed["text"] == "您好，我来帮您挂失。"

    # While an agent holds the conversation the bot stays quiet.
    follow_up = await customer.say("尾号1234")
    assert follow_up["replies"] == [] and follow_up["conversation"]["state"] == "with_agent"
    await customer.aclose()


async def test_only_one_of_two_agents_racing_wins_the_claim(app_url, emulator, database_url):
    names = ["racer-" + uuid.uuid4().hex[:8] for _ in range(2)]
    for name in names:
        await create_agent(database_url, username=name, password="pw-123456", skills=["general"])
    consoles = [await AgentConsole.login(app_url, name, "pw-123456") for name in names]
    customer = await MiniappCustomer.login(app_url, emulator)
    conversation_id = (await customer.say("转人工"))["conversation"]["id"]
    results = await asyncio.gather(*(c.http.post(f"/agents/conversations/{conversation_id}/claim") for c in consoles))
    assert sorted(r.status_code for r in results) == [200, 409]
    for console in consoles:
        await console.aclose()
    await customer.aclose()


async def test_agent_api_refuses_the_unauthenticated_and_the_wrong_password(app_url, agent):
    assert httpx.get(app_url + "/agents/queue").status_code == 401
    wrong = httpx.post(app_url + "/agents/login", json={"username": "nobody", "password": "x"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "bad_credentials"


async def test_an_agent_cannot_reply_to_a_conversation_they_did_not_claim(app_url, emulator, agent):
    customer = await MiniappCustomer.login(app_url, emulator)
    conversation_id = (await customer.say("转人工"))["conversation"]["id"]
    refused = await agent.http.post(f"/agents/conversations/{conversation_id}/messages", json={"text": "hi"})
    assert refused.status_code == 403
    await customer.aclose()


async def test_a_customer_token_is_not_an_agent_token(app_url, emulator):
    customer = await MiniappCustomer.login(app_url, emulator)
    response = httpx.get(app_url + "/agents/queue", headers={"Authorization": f"Bearer {customer.token}"})
    assert response.status_code == 401
    await customer.aclose()


async def test_the_customer_sees_typing_while_the_agent_writes_on_either_channel(
    app_url, emulator, emulator_url, agent
):
    from tests.support import new_person, oa_say

    person = new_person()
    oa = oa_say(emulator_url, app_url, person, "转人工")
    customer = await MiniappCustomer.login(app_url, emulator, person)
    conversation_id = (await customer.history())["conversation"]["id"]
    assert (await agent.http.post(f"/agents/conversations/{conversation_id}/claim")).status_code == 200
    # Still on the official account (the mini-program was only opened): WeChat's typing API, within 30 s.
    assert (await agent.http.post(f"/agents/conversations/{conversation_id}/typing")).status_code == 204
    sent = httpx.get(emulator_url + "/_sim/sent", params={"openid": oa["openid"], "api": "typing"}).json()["items"]
    assert [item["body"]["command"] for item in sent] == ["Typing"]
    # Once the customer writes in the mini-program, their socket shows it.
    last = (await customer.say("在吗"))["message"]["id"]
    async with customer.socket(after_id=last) as ws:
        await agent.http.post(f"/agents/conversations/{conversation_id}/typing")
        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert event == {"type": "typing", "conversation_id": conversation_id}
    await customer.aclose()
