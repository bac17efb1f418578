"""Routing end to end on a deployment of its own: automatic assignment, answer timeouts, going offline,
transfer, close and the conversation after it, notes, masking, the supervisor's view, two API processes."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.support import AgentConsole, MiniappCustomer, create_agent, next_message


async def online_agent(stack, *, skills=("general",), capacity=3, role="agent", app_url=None) -> AgentConsole:
    username = "ag-" + uuid.uuid4().hex[:8]
    await create_agent(
        stack.database_url, username=username, password="pw-123456", skills=list(skills), role=role, capacity=capacity
    )
    console = await AgentConsole.login(app_url or stack.app_url, username, "pw-123456")
    assert (await console.http.put("/agents/me/presence", json={"presence": "online"})).status_code == 200
    return console


async def wait_for_state(customer: MiniappCustomer, state: str, timeout: float = 10.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        history = await customer.history()
        if history["conversation"]["state"] == state:
            return history
        assert asyncio.get_running_loop().time() < deadline, f"still {history['conversation']['state']}"
        await asyncio.sleep(0.2)


async def test_a_waiting_customer_is_assigned_to_the_least_loaded_online_agent(isolated_stack, emulator):
    stack = isolated_stack()
    first, second = await online_agent(stack), await online_agent(stack)
    customers = [await MiniappCustomer.login(stack.app_url, emulator) for _ in range(2)]
    for customer in customers:
        await customer.say("转人工")
    for customer in customers:
        await wait_for_state(customer, "with_agent")
    held = [len((await a.http.get("/agents/me/conversations")).json()) for a in (first, second)]
    assert held == [1, 1]


async def test_an_agent_at_capacity_gets_no_more_and_the_customer_waits_in_order(isolated_stack, emulator):
    stack = isolated_stack()
    await online_agent(stack, capacity=1)
    one, two = [await MiniappCustomer.login(stack.app_url, emulator) for _ in range(2)]
    await one.say("转人工")
    await wait_for_state(one, "with_agent")
    result = await two.say("转人工")
    assert result["conversation"]["state"] == "queued"
    assert "您是下一位" in result["replies"][-1]["text"] and "预计等待约" in result["replies"][-1]["text"]


async def test_a_waiting_customer_is_told_when_they_become_next(isolated_stack, emulator):
    """The routing loop remembers each waiting customer's place and tells them when it moves up enough."""
    stack = isolated_stack(routing_tick_s=0.2)
    first, second = [await MiniappCustomer.login(stack.app_url, emulator) for _ in range(2)]
    first_id = (await first.say("转人工"))["conversation"]["id"]
    await second.say("转人工")
    await asyncio.sleep(1)  # a few ticks: the loop has seen the second customer at place 2
    username = "ag-" + uuid.uuid4().hex[:8]
    await create_agent(stack.database_url, username=username, password="pw-123456", skills=["general"])
    agent = await AgentConsole.login(stack.app_url, username, "pw-123456")  # offline: claims by hand
    assert (await agent.http.post(f"/agents/conversations/{first_id}/claim")).status_code == 200
    deadline = asyncio.get_running_loop().time() + 10
    # Nobody is online (the agent claims by hand): no promise of "right away", only that they are next.
    told = "您是下一位，客服上线后会第一时间为您服务。"
    while not any(m["text"] == told for m in (await second.history())["messages"]):
        assert asyncio.get_running_loop().time() < deadline, "the second customer was not told they are next"
        await asyncio.sleep(0.2)
    texts = [m["text"] for m in (await first.history())["messages"]]
    assert told not in texts  # the first was at place 1 all along: nothing to tell
    for client in (first, second, agent):
        await client.aclose()


async def test_an_unanswered_assignment_goes_back_to_the_head_of_the_queue(isolated_stack, emulator):
    stack = isolated_stack(agent_answer_timeout_s=2)
    agent = await online_agent(stack, capacity=1)
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    await customer.say("转人工")
    await wait_for_state(customer, "with_agent")
    await agent.http.put("/agents/me/presence", json={"presence": "away"})  # so it isn't handed straight back
    history = await wait_for_state(customer, "queued", timeout=15)
    assert "优先安排" in history["messages"][-1]["text"]


async def test_going_offline_hands_conversations_back_and_history_is_kept(isolated_stack, emulator):
    stack = isolated_stack()
    agent = await online_agent(stack, skills=("cards",))
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    await customer.say("我的信用卡丢了")
    conversation_id = (await customer.say("转人工"))["conversation"]["id"]
    await wait_for_state(customer, "with_agent")
    await agent.http.put("/agents/me/presence", json={"presence": "offline"})
    await wait_for_state(customer, "queued")
    other = await online_agent(stack, skills=("cards",))
    await wait_for_state(customer, "with_agent")
    view = (await other.http.get(f"/agents/conversations/{conversation_id}")).json()
    assert view["messages"][0]["text"] == "我的信用卡丢了"


async def test_a_transfer_to_a_named_agent_moves_the_conversation_and_frees_the_first(isolated_stack, emulator):
    stack = isolated_stack()
    first = await online_agent(stack, capacity=1)
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    conversation_id = (await customer.say("转人工"))["conversation"]["id"]
    await wait_for_state(customer, "with_agent")
    second = await online_agent(stack)
    second_id = (await second.http.get("/agents/me")).json()["id"]
    moved = await first.http.post(f"/agents/conversations/{conversation_id}/transfer", json={"to_agent_id": second_id})
    assert moved.status_code == 200, moved.text
    assert [c["conversation_id"] for c in (await second.http.get("/agents/me/conversations")).json()] == [
        conversation_id
    ]
    assert (await first.http.get("/agents/me/conversations")).json() == []
    assert any("已为您转接至客服" in m["text"] for m in (await customer.history())["messages"])
    # The first agent's one place came back: with the second agent away, the next customer is theirs.
    assert (await second.http.put("/agents/me/presence", json={"presence": "away"})).status_code == 200
    other = await MiniappCustomer.login(stack.app_url, emulator)
    await other.say("转人工")
    await wait_for_state(other, "with_agent")
    assert len((await first.http.get("/agents/me/conversations")).json()) == 1
    for client in (customer, other, first, second):
        await client.aclose()


async def test_transfer_close_rating_and_the_next_conversation_is_new_and_linked(isolated_stack, emulator):
    stack = isolated_stack()
    general = await online_agent(stack)
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    conversation_id = (await customer.say("转人工"))["conversation"]["id"]
    await wait_for_state(customer, "with_agent")
    await general.http.post(f"/agents/conversations/{conversation_id}/messages", json={"text": "您好"})
    moved = await general.http.post(f"/agents/conversations/{conversation_id}/transfer", json={"to_group": "loans"})
    assert moved.status_code == 200 and moved.json()["state"] == "queued"
    loans = await online_agent(stack, skills=("loans",))
    await wait_for_state(customer, "with_agent")
    view = (await loans.http.get(f"/agents/conversations/{conversation_id}")).json()
    assert view["handoff_card"]["transferred_from"] and any(m["text"] == "您好" for m in view["messages"])
    note = await loans.http.post(f"/agents/conversations/{conversation_id}/notes", json={"text": "客户情绪平稳"})
    assert note.status_code == 200
    bad = await loans.http.post(f"/agents/conversations/{conversation_id}/close", json={"disposition": "whatever"})
    assert bad.status_code == 400
    closed = await loans.http.post(f"/agents/conversations/{conversation_id}/close", json={"disposition": "resolved"})
    assert closed.json()["state"] == "closed"
    customer_view = await customer.history()
    assert all(m["text"] != "客户情绪平稳" for m in customer_view["messages"])  # notes stay internal
    rated = await customer.http.post(f"/miniapp/conversations/{conversation_id}/rating", json={"score": 5})
    assert rated.status_code == 200
    follow_up = await customer.say("你好")
    assert follow_up["conversation"]["id"] != conversation_id and follow_up["conversation"]["state"] == "bot"
    supervisor = await online_agent(stack, role="supervisor")
    detail = (await supervisor.http.get(f"/agents/conversations/{follow_up['conversation']['id']}")).json()
    assert detail["conversation"]["previous_conversation_id"] == conversation_id


async def test_numbers_are_masked_in_the_console_and_revealing_is_audited(isolated_stack, emulator):
    stack = isolated_stack()
    agent = await online_agent(stack)
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    await customer.say("转人工")
    sent = await customer.say("我身份证号110101199003071234，手机13812345678")
    conversation_id = sent["conversation"]["id"]
    await wait_for_state(customer, "with_agent")
    view = (await agent.http.get(f"/agents/conversations/{conversation_id}")).json()
    shown = next(m for m in view["messages"] if m["id"] == sent["message"]["id"])
    assert "110101199003071234" not in shown["text"] and "138****5678" in shown["text"]
    revealed = await agent.http.post(f"/agents/conversations/{conversation_id}/messages/{shown['id']}/reveal")
    assert "110101199003071234" in revealed.json()["text"]
    engine = create_engine(stack.database_url.replace("+aiosqlite", ""))
    with engine.connect() as conn:
        actions = [row[0] for row in conn.execute(text("SELECT action FROM audit_event WHERE action = 'reveal'"))]
    engine.dispose()
    assert actions == ["reveal"]


async def test_the_supervisor_sees_queues_agents_and_todays_figures(isolated_stack, emulator):
    stack = isolated_stack()
    contained = await MiniappCustomer.login(stack.app_url, emulator)
    await contained.say("新卡怎么激活")
    waiting = await MiniappCustomer.login(stack.app_url, emulator)
    await waiting.say("转人工")
    supervisor = await online_agent(stack, role="supervisor", skills=("cards",))
    overview = (await supervisor.http.get("/supervisor/overview")).json()
    general = next(q for q in overview["queues"] if q["skill_group"] == "general")
    assert general["waiting"] == 1 and general["longest_wait_s"] >= 0
    assert overview["agents"][0]["presence"] == "online"
    today = overview["today"]
    assert today["conversations"] == 2 and today["contained_by_bot"] == 1 and today["containment_rate"] == 0.5
    assert today["handoff_rate_by_intent"] == {"card_activation": 0.0, "none": 1.0}
    agent = await online_agent(stack)
    forbidden = await agent.http.get("/supervisor/overview")
    assert forbidden.status_code == 403


async def test_a_reply_sent_through_process_b_reaches_a_customer_connected_to_process_a(isolated_stack, emulator):
    stack = isolated_stack()
    process_b = isolated_stack.add_worker(stack)
    agent = await online_agent(stack, app_url=process_b)
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    async with customer.socket() as ws:
        conversation_id = (await customer.say("转人工"))["conversation"]["id"]
        await wait_for_state(customer, "with_agent")
        sent = await agent.http.post(
            f"/agents/conversations/{conversation_id}/messages", json={"text": "来自B进程的回复"}
        )
        assert sent.status_code == 200
        pushed = await next_message(ws, predicate=lambda m: m["sender_kind"] == "agent")
        assert pushed["text"] == "来自B进程的回复"


async def test_assignment_stays_atomic_across_two_processes(isolated_stack, emulator):
    stack = isolated_stack()
    process_b = isolated_stack.add_worker(stack)
    agents = [await online_agent(stack, capacity=1, app_url=url) for url in (stack.app_url, process_b)]
    customers = [await MiniappCustomer.login(url, emulator) for url in (stack.app_url, process_b) * 3]
    await asyncio.gather(*(c.say("转人工") for c in customers))
    await asyncio.sleep(2.5)  # several routing ticks on both processes
    states = sorted([(await c.history())["conversation"]["state"] for c in customers])
    assert states == ["queued"] * 4 + ["with_agent"] * 2
    assert [len((await a.http.get("/agents/me/conversations")).json()) for a in agents] == [1, 1]


@pytest.mark.parametrize("presence", ["busy", ""])
async def test_presence_must_be_known(isolated_stack, presence):
    stack = isolated_stack()
    username = "ag-" + uuid.uuid4().hex[:8]
    await create_agent(stack.database_url, username=username, password="pw-123456", skills=["general"])
    agent = await AgentConsole.login(stack.app_url, username, "pw-123456")
    assert (await agent.http.put("/agents/me/presence", json={"presence": presence})).status_code == 422
    assert httpx.put(stack.app_url + "/agents/me/presence", json={"presence": "online"}).status_code == 401
