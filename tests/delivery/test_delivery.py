"""Delivery that follows the customer, through the WeChat emulator: the page's confirmations (delivered, read),
the fallbacks when the customer is gone (official-account message, subscribe message, pending), bounded
retries, and each confirmation or fallback acted on once across two workers."""

from __future__ import annotations

import asyncio
import json

import httpx

from tests.delivery.helpers import (
    DEV_MINIAPP_APP_ID,
    DEV_OA_APP_ID,
    TEMPLATE,
    agent,
    agent_message,
    eventually,
    inject_fault,
    openid_of,
    reply,
    sent,
    tap_allow,
    wait_delivery,
    with_agent,
)
from tests.support import MiniappCustomer, new_person, next_message, oa_say

FAST = {"delivery_ack_timeout_s": 1.0, "delivery_retry_s": 0.5, "delivery_tick_s": 0.1}


async def last_id(customer: MiniappCustomer) -> int:
    return (await customer.history())["messages"][-1]["id"]


async def greeted_on_oa(emulator_url: str, person: str) -> None:
    """The agent's greeting reached the official account (so what a test injects next isn't spent on it)."""
    openid = openid_of(emulator_url, person, DEV_OA_APP_ID)

    async def greeted():  # passively in the push's answer, or by customer-service message
        items = sent(emulator_url, openid, "custom") + sent(emulator_url, openid, "passive")
        return any("已接入" in json.dumps(i["body"], ensure_ascii=False) for i in items)

    await eventually(greeted, what="the greeting on the official account")


async def test_an_open_page_confirms_delivered_then_read_and_the_agent_sees_it(isolated_stack, emulator):
    stack = isolated_stack(**FAST)
    console = await agent(stack)
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    conversation_id = (await customer.say("转人工"))["conversation"]["id"]
    await with_agent(customer)
    async with customer.socket(after_id=await last_id(customer)) as ws:
        message = await reply(console, conversation_id, "您好，我来帮您看看。")
        assert (message["delivery"]["state"], message["delivery"]["route"]) == ("sent", "miniapp")
        pushed = await next_message(ws, predicate=lambda m: m["sender_kind"] == "agent")
        await ws.send(json.dumps({"type": "receipt", "status": "delivered", "message_ids": [pushed["id"]]}))
        await wait_delivery(console, conversation_id, pushed["id"], "delivered")
        await ws.send(json.dumps({"type": "receipt", "status": "read", "message_ids": [pushed["id"]]}))
        await wait_delivery(console, conversation_id, pushed["id"], "read")
        await asyncio.sleep(1.5)  # past the confirmation deadline: a read message never falls back
    assert (await agent_message(console, conversation_id, pushed["id"]))["delivery"]["state"] == "read"
    # A late "delivered" never moves it back; a repeat changes nothing.
    again = await customer.http.post("/miniapp/receipts", json={"status": "delivered", "message_ids": [pushed["id"]]})
    assert again.json() == {"changed": 0}
    for client in (console, customer):
        await client.aclose()


async def test_a_page_that_never_confirms_falls_back_and_the_reply_waits_first_in_line(isolated_stack, emulator):
    """Socket open, no confirmation in time, no official account, no subscribe grant: pending, then shown first."""
    stack = isolated_stack(**FAST)
    console = await agent(stack)
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    conversation_id = (await customer.say("转人工"))["conversation"]["id"]
    await with_agent(customer)
    async with customer.socket(after_id=await last_id(customer)):
        message = await reply(console, conversation_id, "请问还在吗？")
        assert message["delivery"]["state"] == "sent"
        await wait_delivery(console, conversation_id, message["id"], "pending", timeout=8)
    await console.http.post(f"/agents/conversations/{conversation_id}/close", json={"disposition": "customer_left"})
    # They come back: the reply is listed first, whatever conversation the page opens.
    history = await customer.history()
    assert [m["id"] for m in history["waiting"]] == [message["id"]]
    receipt = await customer.http.post("/miniapp/receipts", json={"status": "read", "message_ids": [message["id"]]})
    assert receipt.json() == {"changed": 1}
    await wait_delivery(console, conversation_id, message["id"], "read")
    assert (await customer.history())["waiting"] == []
    for client in (console, customer):
        await client.aclose()


async def test_gone_from_the_page_the_reply_goes_by_official_account_message_inside_the_window(
    isolated_stack, emulator, emulator_url
):
    stack = isolated_stack(**FAST)
    console = await agent(stack)
    person = new_person()
    oa_say(emulator_url, stack.app_url, person, "转人工")  # on the official account: its 48 h window is open
    customer = await MiniappCustomer.login(stack.app_url, emulator, person)  # the same person (unionid)
    conversation_id = (await customer.history())["conversation"]["id"]
    await with_agent(customer)
    message = await reply(console, conversation_id, "您的问题已经处理好了。")
    assert message["delivery"]["state"] == "sent" and message["delivery"]["route"] == "wechat_oa"
    texts = [
        i["body"]["text"]["content"]
        for i in sent(emulator_url, openid_of(emulator_url, person, DEV_OA_APP_ID), "custom")
    ]
    assert "您的问题已经处理好了。" in texts
    for client in (console, customer):
        await client.aclose()


async def test_outside_the_window_a_granted_subscribe_message_goes_once_then_the_reply_waits(
    isolated_stack, emulator, emulator_url
):
    stack = isolated_stack(**FAST)
    console = await agent(stack)
    person = new_person()
    customer = await MiniappCustomer.login(stack.app_url, emulator, person)  # mini-program only: no OA window
    tap_allow(emulator_url, person)
    granted = await customer.http.post("/miniapp/subscriptions", json={"results": {TEMPLATE: "accept"}})
    assert granted.json() == {"grants": {TEMPLATE: 1}}
    conversation_id = (await customer.say("转人工"))["conversation"]["id"]
    await with_agent(customer)
    first = await reply(console, conversation_id, "您好，尾号4321的卡已经为您处理。")
    assert first["delivery"]["route"] == "subscribe" and first["delivery"]["state"] == "sent"
    notices = sent(emulator_url, openid_of(emulator_url, person, DEV_MINIAPP_APP_ID), "subscribe")
    assert len(notices) == 1 and notices[0]["body"]["template_id"] == TEMPLATE
    assert notices[0]["body"]["data"]["thing2"]["value"].startswith("您好，尾号4321")
    second = await reply(console, conversation_id, "还有别的需要吗？")
    assert second["delivery"]["state"] == "pending"  # one message per tap: none left
    assert len(sent(emulator_url, openid_of(emulator_url, person, DEV_MINIAPP_APP_ID), "subscribe")) == 1
    for client in (console, customer):
        await client.aclose()


async def test_a_grant_wechat_does_not_know_is_refused_with_43101_and_not_used_again(
    isolated_stack, emulator, emulator_url
):
    stack = isolated_stack(**FAST)
    console = await agent(stack)
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    # The page says "accept", but WeChat has no tap on record.
    await customer.http.post("/miniapp/subscriptions", json={"results": {TEMPLATE: "accept"}})
    conversation_id = (await customer.say("转人工"))["conversation"]["id"]
    await with_agent(customer)
    message = await reply(console, conversation_id, "您好。")
    assert message["delivery"]["state"] == "pending"
    left = await customer.http.post("/miniapp/subscriptions", json={"results": {TEMPLATE: "reject"}})
    assert left.json() == {"grants": {TEMPLATE: 0}}
    bad = await customer.http.post("/miniapp/subscriptions", json={"results": {"someone-elses": "accept"}})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "unknown_template"
    for client in (console, customer):
        await client.aclose()


async def test_wechat_busy_is_retried_a_bounded_number_of_times_then_failed(isolated_stack, emulator, emulator_url):
    stack = isolated_stack(**{**FAST, "delivery_retry_s": 2.0}, delivery_max_attempts=2)
    console = await agent(stack)
    person = new_person()
    customer = await MiniappCustomer.login(stack.app_url, emulator, person)
    tap_allow(emulator_url, person)
    await customer.http.post("/miniapp/subscriptions", json={"results": {TEMPLATE: "accept"}})
    conversation_id = (await customer.say("转人工"))["conversation"]["id"]
    await with_agent(customer)
    inject_fault(emulator_url, "/cgi-bin/message/subscribe/send", -1, times=5)
    try:
        message = await reply(console, conversation_id, "您好，请稍等。")
        assert message["delivery"]["state"] == "pending"  # first round: WeChat busy, retried later
        failed = await wait_delivery(console, conversation_id, message["id"], "failed", timeout=8)
        assert failed["route"] is None
        left = httpx.get(emulator_url + "/_sim/faults", params={"path": "/cgi-bin/message/subscribe/send"})
        assert left.json()["left"] == 3  # exactly two rounds tried, no more
    finally:
        inject_fault(emulator_url, "/cgi-bin/message/subscribe/send", -1, times=0)
    for client in (console, customer):
        await client.aclose()


async def test_a_reply_kept_for_the_official_account_goes_at_the_next_interaction(
    isolated_stack, emulator, emulator_url
):
    stack = isolated_stack(**FAST)
    console = await agent(stack)
    person = new_person()
    oa_say(emulator_url, stack.app_url, person, "转人工")
    customer = await MiniappCustomer.login(stack.app_url, emulator, person)
    conversation_id = (await customer.history())["conversation"]["id"]
    await with_agent(customer)
    await greeted_on_oa(emulator_url, person)
    inject_fault(emulator_url, "/cgi-bin/message/custom/send", 45015, times=1)  # the window closed meanwhile
    message = await reply(console, conversation_id, "您的卡已补办寄出。")
    assert message["delivery"]["state"] == "pending"
    oa_say(emulator_url, stack.app_url, person, "好的谢谢")  # they write again: the waiting reply goes first
    await wait_delivery(console, conversation_id, message["id"], "sent")
    openid = openid_of(emulator_url, person, DEV_OA_APP_ID)
    assert [i["body"]["text"]["content"] for i in sent(emulator_url, openid, "custom")].count("您的卡已补办寄出。") == 1
    assert (await agent_message(console, conversation_id, message["id"]))["delivery"]["route"] == "wechat_oa"
    for client in (console, customer):
        await client.aclose()


async def test_two_workers_fall_back_once(isolated_stack, emulator, emulator_url):
    stack = isolated_stack(**FAST)
    isolated_stack.add_worker(stack, **FAST)
    console = await agent(stack)
    person = new_person()
    oa_say(emulator_url, stack.app_url, person, "转人工")
    customer = await MiniappCustomer.login(stack.app_url, emulator, person)
    conversation_id = (await customer.history())["conversation"]["id"]
    await with_agent(customer)
    await greeted_on_oa(emulator_url, person)
    async with customer.socket(after_id=await last_id(customer)):  # on the page, but the page never confirms
        message = await reply(console, conversation_id, "两个进程也只发一次。")
        assert message["delivery"]["route"] == "miniapp"

        async def by_oa():
            m = await agent_message(console, conversation_id, message["id"])
            return m["delivery"]["route"] == "wechat_oa"

        await eventually(by_oa, timeout=8, what="the fallback")
        await asyncio.sleep(1.5)  # both workers tick many times meanwhile
    openid = openid_of(emulator_url, person, DEV_OA_APP_ID)
    texts = [i["body"]["text"]["content"] for i in sent(emulator_url, openid, "custom")]
    assert texts.count("两个进程也只发一次。") == 1
    for client in (console, customer):
        await client.aclose()
