"""Advisor-first routing: a customer's named advisor gets their conversation first (at once when free), the
group only after the group's wait; an advisor who isn't online is skipped; assignment is audited."""

from __future__ import annotations

import asyncio

from sqlalchemy import create_engine, text

from tests.advisors.support import agent, assign_advisor, eventually, held_ids
from tests.support import MiniappCustomer


async def test_an_online_advisor_gets_their_customer_before_a_less_loaded_colleague(isolated_stack, emulator):
    stack = isolated_stack(advisor_wait_s=30, routing_tick_s=0.2, appointment_sweep_s=0.2)
    _, colleague = await agent(stack, name="colleague")  # lower id: group routing would pick them on a tie
    advisor_id, advisor = await agent(stack, name="advisor")
    _, supervisor = await agent(stack, role="supervisor", skills=(), online=False)
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    await assign_advisor(supervisor, customer, advisor_id)
    conversation_id = (await customer.say("转人工"))["conversation"]["id"]
    assert await eventually(lambda: _holds(advisor, conversation_id))
    assert conversation_id not in await held_ids(colleague)
    card = (await advisor.http.get(f"/agents/conversations/{conversation_id}")).json()["handoff_card"]
    assert card["advisor"]["agent_id"] == advisor_id and "专属客户经理" in card["summary"]
    for client in (colleague, advisor, supervisor, customer):
        await client.aclose()


async def test_a_busy_advisor_is_waited_for_then_the_group_takes_over(isolated_stack, emulator):
    """The advisor is at capacity: the conversation waits for them (the idle colleague doesn't get it), and goes
    to the group when the group's wait is over."""
    stack = isolated_stack(
        advisor_wait_s=60, advisor_wait_s_by_group={"general": 3}, routing_tick_s=0.2, appointment_sweep_s=0.2
    )
    advisor_id, advisor = await agent(stack, name="advisor", capacity=1)
    _, supervisor = await agent(stack, role="supervisor", skills=(), online=False)
    first = await MiniappCustomer.login(stack.app_url, emulator)
    await first.say("转人工")
    await eventually(lambda: held_ids(advisor))  # the advisor is now full
    _, colleague = await agent(stack, name="colleague")
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    await assign_advisor(supervisor, customer, advisor_id)
    conversation_id = (await customer.say("转人工"))["conversation"]["id"]
    await asyncio.sleep(1.5)  # several routing ticks and sweeps inside the wait
    assert conversation_id not in await held_ids(colleague)
    assert (await customer.history())["conversation"]["state"] == "queued"
    assert await eventually(lambda: _holds(colleague, conversation_id), timeout=10)
    engine = create_engine(stack.database_url.replace("+aiosqlite", ""))
    with engine.connect() as conn:
        actions = [row[0] for row in conn.execute(text("SELECT action FROM audit_event ORDER BY id"))]
    engine.dispose()
    assert "advisor_assign" in actions and "advisor_wait_over" in actions
    for client in (colleague, advisor, supervisor, customer, first):
        await client.aclose()


async def test_a_freed_advisor_takes_the_waiting_customer_within_the_wait(isolated_stack, emulator):
    stack = isolated_stack(advisor_wait_s=30, routing_tick_s=0.2, appointment_sweep_s=0.2)
    advisor_id, advisor = await agent(stack, name="advisor", capacity=1)
    _, supervisor = await agent(stack, role="supervisor", skills=(), online=False)
    first = await MiniappCustomer.login(stack.app_url, emulator)
    first_id = (await first.say("转人工"))["conversation"]["id"]
    await eventually(lambda: _holds(advisor, first_id))
    _, colleague = await agent(stack, name="colleague")
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    await assign_advisor(supervisor, customer, advisor_id)
    conversation_id = (await customer.say("转人工"))["conversation"]["id"]
    await advisor.http.post(f"/agents/conversations/{first_id}/messages", json={"text": "您好"})
    closed = await advisor.http.post(f"/agents/conversations/{first_id}/close", json={"disposition": "resolved"})
    assert closed.status_code == 200, closed.text
    assert await eventually(lambda: _holds(advisor, conversation_id))
    assert conversation_id not in await held_ids(colleague)
    for client in (colleague, advisor, supervisor, customer, first):
        await client.aclose()


async def test_an_offline_advisor_is_skipped_and_reassignment_is_audited(isolated_stack, emulator):
    stack = isolated_stack(advisor_wait_s=30, routing_tick_s=0.2)
    advisor_id, advisor = await agent(stack, name="advisor", online=False)
    other_id, _other_console = await agent(stack, name="other", online=False)
    colleague_id, colleague = await agent(stack, name="colleague")
    _, supervisor = await agent(stack, role="supervisor", skills=(), online=False)
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    await assign_advisor(supervisor, customer, other_id)
    moved = await assign_advisor(supervisor, customer, advisor_id)
    assert moved["agent_id"] == advisor_id
    conversation_id = (await customer.say("转人工"))["conversation"]["id"]
    assert await eventually(lambda: _holds(colleague, conversation_id))
    card = (await colleague.http.get(f"/agents/conversations/{conversation_id}")).json()["handoff_card"]
    assert card["advisor"]["online"] is False and "不在线" in card["advisor"]["note"]
    mine = await customer.http.get("/miniapp/advisor")
    assert mine.json()["agent_id"] == advisor_id
    not_a_supervisor = await colleague.http.put(
        f"/supervisor/customers/{customer.customer_id}/advisor", json={"agent_id": colleague_id}
    )
    assert not_a_supervisor.status_code == 403
    engine = create_engine(stack.database_url.replace("+aiosqlite", ""))
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT action FROM audit_event WHERE subject = :s ORDER BY id"),
            {"s": f"customer:{customer.customer_id}"},
        ).all()
    engine.dispose()
    assert [r[0] for r in rows if r[0].startswith("advisor")] == ["advisor_assign", "advisor_reassign"]
    for client in (colleague, advisor, supervisor, customer, _other_console):
        await client.aclose()


async def _holds(console, conversation_id: int) -> bool:
    return conversation_id in await held_ids(console)
