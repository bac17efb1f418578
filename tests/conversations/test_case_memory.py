"""Case memory end to end: after an agent closed a loss report, the customer's follow-up gets that case's
status and outcome (not a new flow), the same card is never reported twice, and the next agent's card lists
the recent cases."""

from __future__ import annotations

from tests.delivery.helpers import agent, reply, with_agent
from tests.support import MiniappCustomer


async def test_a_closed_loss_report_is_remembered_by_the_bot_and_on_the_next_handoff_card(isolated_stack, emulator):
    stack = isolated_stack()
    console = await agent(stack, skills=("cards", "general"))
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    await customer.say("我的信用卡丢了")
    first_id = (await customer.say("尾号4321"))["conversation"]["id"]
    await with_agent(customer)
    await reply(console, first_id, "已为您临时挂失尾号4321的信用卡，新卡7个工作日内寄出。")
    closed = await console.http.post(f"/agents/conversations/{first_id}/close", json={"disposition": "resolved"})
    assert closed.status_code == 200

    follow_up = await customer.say("我刚才挂失的信用卡办好了吗？")
    answer = follow_up["replies"][0]["text"]
    assert follow_up["conversation"]["id"] != first_id and follow_up["conversation"]["state"] == "bot"
    assert "挂失" in answer and "已办结" in answer and "尾号4321" in answer and "新卡7个工作日内寄出" in answer
    assert "最后四位" not in answer

    again = await customer.say("我的信用卡丢了")  # the same card: confirmed, not reported twice
    assert again["conversation"]["state"] == "bot" and "不用再挂失" in again["replies"][0]["text"]

    second_id = (await customer.say("转人工"))["conversation"]["id"]
    await with_agent(customer)
    card = (await console.http.get(f"/agents/conversations/{second_id}")).json()["handoff_card"]
    assert [c["conversation_id"] for c in card["recent_cases"]] == [first_id]
    assert card["recent_cases"][0]["status"] == "已办结" and card["recent_cases"][0]["title"] == "挂失"
    assert "近30天办理过1件" in card["summary"]
    for client in (console, customer):
        await client.aclose()
