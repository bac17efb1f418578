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
