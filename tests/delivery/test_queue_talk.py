"""No silence in the queue: a waiting customer's message is answered with their live place (at most once per
half minute, questions about the wait always); estimates count only the group's online agents; with nobody
online, or outside the group's service hours, they are told so and may leave a message, which an agent
answers when one comes online — and the answer reaches them where they are."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.delivery.helpers import DEV_OA_APP_ID, agent, eventually, openid_of, reply, sent, with_agent
from tests.support import MiniappCustomer, new_person, oa_say

ALWAYS = "{label: 综合组, days: [1, 2, 3, 4, 5, 6, 7], open: '00:00', close: '24:00'}"


@pytest.fixture
def hours_file(tmp_path):
    """A service-hours file: the general group always open, or closed today (a holiday in the bank's zone)."""

    def write(*, closed_today: bool = False):
        today = datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat()
        general = "{label: 综合组, days: [1, 2, 3, 4, 5, 6, 7], open: '08:00', close: '22:00'}"
        path = tmp_path / ("closed.yml" if closed_today else "open.yml")
        path.write_text(
            "groups:\n"
            f"  general: {general if closed_today else ALWAYS}\n"
            f"  loans: {ALWAYS.replace('综合组', '贷款组')}\n"
            f"holidays: [{today if closed_today else ''}]\n",
            encoding="utf-8",
        )
        return path

    return write


def queue_notice(replies: list[dict]) -> str:
    """The bot's queue notice among its replies (a booking offer may follow it: api/appointments)."""
    return next(r["text"] for r in reversed(replies) if (r.get("payload") or {}).get("type") != "booking_invite")


async def test_nobody_online_is_said_plainly_and_the_waiting_customer_is_never_left_in_silence(
    isolated_stack, emulator, hours_file
):
    stack = isolated_stack(service_hours_file=hours_file(), queue_notice_interval_s=2)
    await agent(stack, skills=("loans",))  # online, but not in the customer's group: no estimate from them
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    escalated = await customer.say("转人工")
    notice = queue_notice(escalated["replies"])
    assert "暂时没有客服在线" in notice and "留言" in notice and "预计等待" not in notice
    asked = await customer.say("还要等多久？")
    assert len(asked["replies"]) == 1 and "您是下一位" in asked["replies"][0]["text"]
    assert "预计等待" not in asked["replies"][0]["text"]
    assert (await customer.say("我的卡被ATM吞了"))["replies"] == []  # a notice went out this half minute
    again = await customer.say("转人工")  # asked again: always answered
    assert "不用重复转人工" in again["replies"][0]["text"]
    await asyncio.sleep(2.2)
    later = await customer.say("就是柜员机吞卡")
    assert "收到" in later["replies"][0]["text"] and "您是下一位" in later["replies"][0]["text"]
    await customer.aclose()


async def test_outside_the_groups_service_hours_the_customer_is_told_the_hours(isolated_stack, emulator, hours_file):
    stack = isolated_stack(service_hours_file=hours_file(closed_today=True))
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    notice = queue_notice((await customer.say("转人工"))["replies"])
    assert "非服务时间" in notice and "08:00–22:00" in notice and "留言" in notice
    await customer.aclose()


async def test_the_estimate_counts_only_the_groups_online_agents(isolated_stack, emulator, hours_file):
    stack = isolated_stack(service_hours_file=hours_file(), avg_handle_s=240)
    console = await agent(stack, capacity=1)
    first = await MiniappCustomer.login(stack.app_url, emulator)
    await first.say("转人工")
    await with_agent(first)
    second = await MiniappCustomer.login(stack.app_url, emulator)
    notice = (await second.say("转人工"))["replies"][-1]["text"]
    assert "您是下一位，预计等待约4分钟" in notice  # one online agent of the group, one customer ahead of none
    await console.http.put("/agents/me/presence", json={"presence": "away"})  # keeps the first, takes no more
    asked = (await second.say("还要等多久"))["replies"][0]["text"]
    assert "暂时没有客服在线" in asked and "预计等待" not in asked
    for client in (console, first, second):
        await client.aclose()


async def test_on_the_official_account_a_waiting_customers_question_gets_an_answer_not_silence(
    isolated_stack, emulator_url, hours_file
):
    stack = isolated_stack(service_hours_file=hours_file())
    person = new_person()
    oa_say(emulator_url, stack.app_url, person, "转人工")
    result = oa_say(emulator_url, stack.app_url, person, "还要等多久？")
    assert result["reply"] is not None and "您是下一位" in result["reply"]["Content"]


async def test_a_left_message_is_answered_when_an_agent_comes_online_and_the_answer_reaches_the_customer(
    isolated_stack, emulator, emulator_url, hours_file
):
    stack = isolated_stack(service_hours_file=hours_file())
    person = new_person()
    told = oa_say(emulator_url, stack.app_url, person, "转人工")["reply"]["Content"]
    assert "留言" in told
    oa_say(emulator_url, stack.app_url, person, "我想问下信用卡年费怎么免")  # the message left for the group
    console = await agent(stack)  # comes online: the waiting customer is theirs
    customer = await MiniappCustomer.login(stack.app_url, emulator, person)
    await with_agent(customer)
    conversation_id = (await customer.history())["conversation"]["id"]
    view = (await console.http.get(f"/agents/conversations/{conversation_id}")).json()
    assert any(m["text"] == "我想问下信用卡年费怎么免" for m in view["messages"])
    await reply(console, conversation_id, "您好，年内刷满6次即可免年费。")
    openid = openid_of(emulator_url, person, DEV_OA_APP_ID)

    async def answered():
        return any("免年费" in json.dumps(i["body"], ensure_ascii=False) for i in sent(emulator_url, openid, "custom"))

    await eventually(answered, what="the answer on the official account")
    for client in (console, customer):
        await client.aclose()
