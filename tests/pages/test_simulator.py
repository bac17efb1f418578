"""The H5 chat simulator in a real browser: log in, talk to the bot, get a human."""

from __future__ import annotations

import uuid

from tests.support import AgentConsole, create_agent, new_person


async def test_customer_chats_with_the_bot_and_an_agent_in_the_simulator(browser_page, app_url, database_url):
    page = browser_page
    await page.goto(app_url + "/simulator/")
    await page.fill("#person", new_person())
    await page.click("#login")
    await page.wait_for_selector("body[data-status=ready]")
    await page.wait_for_selector("#conn[data-status=open]", state="attached")

    await page.fill("#input", "你好")
    await page.click("#send")
    bot = await page.wait_for_selector(".msg[data-sender=bot] .text")
    assert "云厅" in await bot.inner_text()

    await page.click("#to-human")
    await page.wait_for_selector("#state[data-state=queued]")
    conversation_id = int(await page.get_attribute("#state", "data-conversation-id"))

    username = "sim-agent-" + uuid.uuid4().hex[:6]
    await create_agent(database_url, username=username, password="pw-123456", skills=["general"])
    agent = await AgentConsole.login(app_url, username, "pw-123456")
    assert (await agent.http.post(f"/agents/conversations/{conversation_id}/claim")).status_code == 200
    await page.wait_for_selector("#state[data-state=with_agent]")
    await agent.http.post(f"/agents/conversations/{conversation_id}/messages", json={"text": "您好，我是人工客服小王"})
    reply = await page.wait_for_selector(".msg[data-sender=agent] .text")
    assert await reply.inner_text() == "您好，我是人工客服小王"
    await agent.aclose()


async def test_official_account_customer_continues_on_the_miniapp(browser_page, app_url):
    """公众号 mode: the emulator pushes the text to /wechat/oa; the same person on 小程序 is the same conversation."""
    page = browser_page
    person = new_person()
    await page.goto(app_url + "/simulator/")
    await page.fill("#person", person)
    await page.select_option("#channel", "oa")
    await page.click("#login")
    await page.wait_for_selector("body[data-status=ready]")
    assert await page.get_attribute("#state", "data-state") == "oa"

    await page.fill("#input", "我的信用卡丢了")
    await page.click("#send")
    answer = await page.wait_for_selector(".msg[data-channel=oa][data-sender=account] .text", timeout=20000)
    assert "四位" in await answer.inner_text()

    await page.select_option("#channel", "miniapp")
    await page.wait_for_selector("body[data-status=logged-out]")
    await page.click("#login")
    await page.wait_for_selector("body[data-status=ready]")
    # The official-account exchange is in the mini-program's history: the same customer, the same conversation.
    history = page.locator(".msg[data-id] .text")
    await history.filter(has_text="我的信用卡丢了").first.wait_for()
    await history.filter(has_text="四位").first.wait_for()

    await page.fill("#input", "尾号1234")
    await page.click("#send")
    done = page.locator(".msg[data-sender=bot] .text").filter(has_text="1234")
    await done.first.wait_for(timeout=20000)
    text = await done.first.inner_text()
    assert "信用卡" in text, text
