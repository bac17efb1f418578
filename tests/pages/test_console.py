"""The agent console in a real browser: sign in, see the escalated conversation with its handoff card,
reply, and the customer receives it; the supervisor view shows the queues and today's figures."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from tests.support import MiniappCustomer, create_agent, new_person, next_message, oa_say

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


async def screenshot(page, name: str) -> None:
    """Refresh the README's screenshots when asked to (YUNTING_SCREENSHOTS=1)."""
    if os.environ.get("YUNTING_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


async def sign_in(page, app_url: str, username: str) -> None:
    await page.goto(app_url + "/console/")
    await page.fill("#username", username)
    await page.fill("#password", "pw-123456")
    await page.click("#login")
    await page.wait_for_selector("body[data-status=ready]")


async def test_agent_reads_the_handoff_card_and_replies_and_the_customer_receives_it(
    browser_page, isolated_stack, emulator, emulator_url
):
    """The customer starts on the official account, moves to the mini-program, and is escalated there."""
    stack = isolated_stack()
    page = browser_page
    await page.set_viewport_size({"width": 1400, "height": 900})
    username = "wang-" + uuid.uuid4().hex[:6]
    await create_agent(stack.database_url, username=username, password="pw-123456", skills=["cards", "general"])
    person = new_person()
    oa_say(emulator_url, stack.app_url, person, "我的信用卡丢了")
    customer = await MiniappCustomer.login(stack.app_url, emulator, person)
    await customer.say("尾号4321")
    conversation_id = (await customer.history())["conversation"]["id"]

    await sign_in(page, stack.app_url, username)
    item = await page.wait_for_selector(f"#queue .queue-item[data-conversation-id='{conversation_id}']")
    assert "挂失" in await item.inner_text()
    await item.click()
    await page.wait_for_selector(f"#conversation[data-conversation-id='{conversation_id}']")
    assert "卡号尾号 4321" in await page.inner_text("#card-slots")
    assert "卡片类型 信用卡" in await page.inner_text("#card-slots")
    assert await page.inner_text("#card-path") == "公众号 → 小程序"
    assert "挂失" in await page.inner_text("#card-summary")
    await page.click("#claim")
    await page.wait_for_selector("#conversation[data-state=with_agent]")
    await screenshot(page, "console-handoff-card.png")

    last_seen = (await customer.history())["messages"][-1]["id"]
    async with customer.socket(after_id=last_seen) as ws:
        await page.fill("#reply-input", "您好，已为您临时挂失尾号4321的信用卡。")
        await page.click("#reply-send")
        pushed = await next_message(ws, predicate=lambda m: m["sender_kind"] == "agent")
    assert pushed["text"] == "您好，已为您临时挂失尾号4321的信用卡。"
    await page.wait_for_selector("#transcript .msg[data-sender=agent]")
    await customer.aclose()


async def test_the_supervisor_view_shows_queues_agents_and_figures(browser_page, isolated_stack, emulator):
    stack = isolated_stack()
    page = browser_page
    await page.set_viewport_size({"width": 1600, "height": 900})
    username = "li-" + uuid.uuid4().hex[:6]
    await create_agent(
        stack.database_url, username=username, password="pw-123456", skills=["general"], role="supervisor"
    )
    waiting = await MiniappCustomer.login(stack.app_url, emulator)
    await waiting.say("我要投诉，排队太久了")
    await sign_in(page, stack.app_url, username)
    await page.click("#show-supervisor")
    await page.wait_for_selector("#today .figure")
    general = await page.inner_text("#queues tbody")
    assert "综合组\t1" in general
    assert username in await page.inner_text("#agents tbody")
    await screenshot(page, "console-supervisor.png")
    await waiting.aclose()


async def test_the_agent_sees_each_replys_delivery_state_live(browser_page, isolated_stack):
    """The customer on the simulator page reads the reply (已读, live in the console); once they close the page,
    the next reply has nowhere to go and waits for them (待送达)."""
    stack = isolated_stack(delivery_ack_timeout_s=1.0, delivery_tick_s=0.1)
    console = browser_page
    await console.set_viewport_size({"width": 1400, "height": 900})
    username = "zhao-" + uuid.uuid4().hex[:6]
    await create_agent(stack.database_url, username=username, password="pw-123456", skills=["general"])

    simulator = await console.context.browser.new_page()  # a second window: the customer's phone
    await simulator.goto(stack.app_url + "/simulator/")
    await simulator.fill("#person", new_person())
    await simulator.click("#login")
    await simulator.wait_for_selector("#conn[data-status=open]", state="attached")
    await simulator.click("#to-human")
    await simulator.wait_for_selector("#state[data-state=queued]")
    conversation_id = await simulator.get_attribute("#state", "data-conversation-id")

    await sign_in(console, stack.app_url, username)
    await (await console.wait_for_selector(f"#queue .queue-item[data-conversation-id='{conversation_id}']")).click()
    await console.click("#claim")
    await console.wait_for_selector("#conversation[data-state=with_agent]")
    await console.fill("#reply-input", "您好，我是客服小赵，请问有什么可以帮您？")
    await console.click("#reply-send")
    await simulator.locator(".msg[data-sender=agent] .text").filter(has_text="客服小赵").wait_for()
    read = console.locator("#transcript .msg[data-sender=agent] .delivery[data-state=read]")
    await read.wait_for(timeout=10000)  # the page reported it shown; the console heard it on its socket
    assert await read.inner_text() == "已读 · 小程序"

    await simulator.close()  # the customer left
    await console.fill("#reply-input", "您还在吗？稍后有进展会通知您。")
    await console.click("#reply-send")
    waiting = console.locator("#transcript .msg[data-sender=agent] .delivery[data-state=pending]")
    await waiting.wait_for(timeout=10000)
    assert await waiting.inner_text() == "待送达"
    assert await read.count() == 1
    await screenshot(console, "console-delivery-states.png")
