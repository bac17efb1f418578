"""Advisor services in a real browser: the customer's booking page (book, reschedule, cancel), the pages opened
with single-use tickets only (a used, expired or other page's ticket refused, no token in any URL), the console's
day view with case cards (the agent's and a supervisor's per group), and a held conversation's documents and live
guide progress in the console."""

from __future__ import annotations

import asyncio
import struct
import uuid
import zlib

import httpx

from tests.advisors.support import ALL_WEEK, PASSWORD, agent, assign_advisor, eventually, local_day
from tests.documents.test_documents import upload
from tests.pages.test_console import screenshot, sign_in
from tests.support import MiniappCustomer, create_agent, new_person


async def test_a_customer_books_reschedules_and_cancels_on_the_booking_page(browser_page, isolated_stack, emulator):
    stack = isolated_stack(appointment_min_notice_minutes=0)
    advisor_id, advisor = await agent(stack, name="advisor")
    assert (await advisor.http.put("/agents/me/schedule", json={"periods": ALL_WEEK})).status_code == 200
    _, supervisor = await agent(stack, role="supervisor", skills=(), online=False)
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    await assign_advisor(supervisor, customer, advisor_id)
    page = browser_page
    await page.set_viewport_size({"width": 480, "height": 1000})
    await page.goto(f"{stack.app_url}/h5/advisor/booking.html?ticket={await customer.ticket('advisor_page')}")
    await page.wait_for_selector("body[data-status=ready]")
    assert "ticket=" not in page.url and "token=" not in page.url  # the ticket leaves the address bar at once
    assert "您的专属客户经理" in await page.inner_text("#advisor")
    await page.click("#days .day-tab >> nth=1")  # tomorrow: a whole day of slots, whatever the time now
    slots = page.locator("#slots .slot")
    chosen = await slots.nth(1).get_attribute("data-starts-at")
    await slots.nth(1).click()
    await page.fill("#topic", "协商还款")
    await page.click("#book")
    await page.wait_for_selector("#appointments li[data-state=booked]")
    assert "协商还款" in await page.inner_text("#appointments")
    await screenshot(page, "booking-page.png")
    mine = (await customer.http.get("/miniapp/appointments")).json()
    assert len(mine) == 1 and mine[0]["topic"] == "协商还款" and mine[0]["agent_id"] == advisor_id
    assert mine[0]["starts_at"][:16] == chosen[:16]
    # The booked slot is no longer offered.
    assert await page.locator(f"#slots .slot[data-starts-at='{chosen}']").count() == 0

    await page.click("#appointments .reschedule")
    await page.wait_for_selector("body[data-mode=reschedule]")
    await page.click("#days .day-tab >> nth=1")
    later = await slots.nth(3).get_attribute("data-starts-at")
    await slots.nth(3).click()
    await page.click("#book")
    await page.wait_for_selector("body[data-mode=book]")
    moved = (await customer.http.get("/miniapp/appointments")).json()
    assert moved[0]["starts_at"][:16] == later[:16] and moved[0]["state"] == "booked"

    await page.click("#appointments .cancel")
    await page.wait_for_selector("#appointments li[data-state=cancelled]")
    assert (await customer.http.get("/miniapp/appointments")).json()[0]["cancelled_by"] == "customer"
    for client in (advisor, supervisor, customer):
        await client.aclose()


async def test_advisor_pages_open_with_a_ticket_once_and_never_a_token(browser_page, isolated_stack, emulator):
    stack = isolated_stack(ticket_ttl_s=5)  # short, so the test can outlive one
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    urls: list[str] = []
    browser_page.context.on("request", lambda request: urls.append(request.url))
    page = browser_page
    ticket = await customer.ticket("advisor_page")
    await page.goto(f"{stack.app_url}/h5/advisor/upload.html?ticket={ticket}")
    await page.wait_for_selector("body[data-status=ready][data-sign-in=ok]")
    assert "ticket=" not in page.url and "token=" not in page.url
    kept = await page.evaluate("sessionStorage.getItem('yt-customer-token')")
    assert kept  # the session the ticket was redeemed for, kept in the tab only (a token is deterministic per
    # customer and expiry second, so it may equal one minted in the same second: no inequality to test)

    others = await page.context.browser.new_context()  # tabs that share nothing kept by the first one
    others.on("request", lambda request: urls.append(request.url))

    async def refused(url: str) -> str:
        tab = await others.new_page()
        await tab.goto(url)
        await tab.wait_for_selector("body[data-sign-in=refused]")
        assert "token=" not in tab.url and "ticket=" not in tab.url
        assert await tab.get_attribute("body", "data-status") != "ready"
        assert await tab.evaluate("sessionStorage.getItem('yt-customer-token')") is None
        text = await tab.inner_text("#error")
        await tab.close()
        return text

    assert "链接已失效" in await refused(f"{stack.app_url}/h5/advisor/upload.html?ticket={ticket}")  # used
    expired = await customer.ticket("advisor_page")
    await asyncio.sleep(6)
    assert "链接已失效" in await refused(f"{stack.app_url}/h5/advisor/guide.html?guide_id=1&ticket={expired}")
    # Another page's ticket, and the session token itself, don't open the page.
    await refused(f"{stack.app_url}/h5/advisor/booking.html?ticket={await customer.ticket('video_page')}")
    with_token = f"{stack.app_url}/h5/advisor/booking.html?token={customer.token}"
    assert "请从小程序或聊天页进入" in await refused(with_token)
    async with httpx.AsyncClient(base_url=stack.app_url, timeout=60) as http:
        video = await customer.ticket("video_page")
        wrong = await http.post("/miniapp/tickets/redeem", json={"ticket": video, "purpose": "advisor_page"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "bad_ticket"
    await others.close()
    # Every request the pages made: a token only where the test itself put one.
    assert [url for url in urls if customer.token in url] == [with_token]
    # (the kept token may equal the test's own when both were minted in one second: that URL is the test's)
    assert not [url for url in urls if kept in url and url != with_token]
    await customer.aclose()


async def test_the_simulator_opens_the_upload_page_with_a_ticket(browser_page, app_url):
    page = browser_page
    await page.goto(app_url + "/simulator/")
    await page.fill("#person", new_person())
    await page.click("#login")
    await page.wait_for_selector("body[data-status=ready]")
    token = await page.evaluate("S.token")
    urls: list[str] = []
    page.context.on("request", lambda request: urls.append(request.url))
    async with page.expect_popup() as popup:
        await page.click("#upload")
    upload = await popup.value
    await upload.wait_for_selector("body[data-status=ready][data-sign-in=ok]")
    assert "ticket=" not in upload.url
    assert any("/h5/advisor/upload.html?ticket=" in url for url in urls)
    assert token and not [url for url in urls if token in url or "token=" in url]


async def test_the_console_shows_the_agents_day_with_case_cards(browser_page, isolated_stack, emulator):
    stack = isolated_stack(appointment_min_notice_minutes=0)
    username = "li-" + uuid.uuid4().hex[:6]
    await create_agent(stack.database_url, username=username, password=PASSWORD, skills=["loans", "general"])
    from tests.support import AgentConsole

    console = await AgentConsole.login(stack.app_url, username, PASSWORD)
    assert (await console.http.put("/agents/me/schedule", json={"periods": ALL_WEEK})).status_code == 200
    customers = [await MiniappCustomer.login(stack.app_url, emulator) for _ in range(2)]
    await customers[0].say("我想协商还款")  # a previous conversation: the case card shows what it was about
    slots = (
        await customers[0].http.get("/miniapp/appointments/slots", params={"with": "group", "group": "loans"})
    ).json()
    # Two slots of one day in the bank's zone (near midnight the soonest are tomorrow's); the console opens on it.
    timezone = (await console.http.get("/agents/appointments/day")).json()["timezone"]
    by_day: dict[str, list[dict]] = {}
    for slot in slots["slots"]:
        by_day.setdefault(local_day(slot["starts_at"], timezone), []).append(slot)
    day, chosen = next((day, found) for day, found in by_day.items() if len(found) >= 2)
    for customer, slot, topic in zip(customers, chosen[:2], ("协商还款", "贷款面签"), strict=True):
        booked = await customer.http.post(
            "/miniapp/appointments",
            json={"starts_at": slot["starts_at"], "with": "group", "group": "loans", "topic": topic},
        )
        assert booked.status_code == 200, booked.text
    page = browser_page
    await page.set_viewport_size({"width": 1500, "height": 950})
    await sign_in(page, stack.app_url, username)
    await page.click("#show-day")
    await page.fill("#day-date", day)
    cards = page.locator("#day-agents .appt[data-state=booked]")
    await eventually(lambda: _count(cards, 2))
    text = await page.inner_text("#day-agents")
    assert "协商还款" in text and "贷款面签" in text and "上次诉求" in text
    await page.click("#schedule-box summary")
    await screenshot(page, "console-day.png")
    # The agent moves the second appointment from the day view; the customer's list follows.
    second = page.locator("#day-agents .appt[data-state=booked]").nth(1)
    target = await second.locator("select.new-time option").nth(5).get_attribute("value")
    await second.locator("select.new-time").select_option(target)
    await second.locator(".reschedule").click()

    async def moved():
        mine = (await customers[1].http.get("/miniapp/appointments")).json()
        return mine[0]["starts_at"][:16] == target[:16]

    assert await eventually(moved)

    supervisor_name = "boss-" + uuid.uuid4().hex[:6]
    await create_agent(stack.database_url, username=supervisor_name, password=PASSWORD, skills=[], role="supervisor")
    await page.click("#logout")
    await sign_in(page, stack.app_url, supervisor_name)
    await page.click("#show-day")
    await page.select_option("#day-group", "loans")
    await page.fill("#day-date", day)
    await page.wait_for_selector(f"#day-agents .agent-day h3:has-text('{username}')")
    assert await page.locator("#day-agents .appt").count() >= 1
    await console.aclose()
    for customer in customers:
        await customer.aclose()


async def test_the_holding_agent_sees_documents_and_the_guides_progress_live(browser_page, isolated_stack, emulator):
    stack = isolated_stack()
    username = "zhao-" + uuid.uuid4().hex[:6]
    await create_agent(stack.database_url, username=username, password=PASSWORD, skills=["general"])
    page = browser_page
    await page.set_viewport_size({"width": 1500, "height": 1100})
    await sign_in(page, stack.app_url, username)
    await page.select_option("#presence", "online")
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    conversation_id = (await customer.say("转人工"))["conversation"]["id"]
    await page.click(f"#held li[data-id='{conversation_id}']")
    await page.wait_for_selector(f"#conversation[data-conversation-id='{conversation_id}'][data-state=with_agent]")
    await page.fill("#doc-request-what", "身份证正面照片")
    await page.click("#doc-request-send")
    request_id = (await eventually(lambda: _card(customer, "document_request")))["request_id"]
    assert (await upload(customer, card_photo(), name="id.png", request_id=request_id)).status_code == 200
    await page.wait_for_selector("#documents li[data-document-id] .view")
    await page.click("#documents li .view")
    await page.wait_for_selector("#document-viewer:not([hidden]) #document-image")
    await page.wait_for_function("document.querySelector('#document-image').naturalWidth === 320")
    await page.click("#guide-box summary")
    await page.fill("#guide-title", "手机银行转账")
    await page.fill("#guide-steps", "打开「转账」页\n输入收款人\n输入金额\n确认")
    await page.click("#guide-send")
    guide_id = (await eventually(lambda: _card(customer, "guide")))["guide_id"]
    for step in (1, 2):
        assert (
            await customer.http.post(f"/miniapp/guides/{guide_id}/progress", json={"step": step})
        ).status_code == 200
    await page.wait_for_selector(f"#guides li[data-guide-id='{guide_id}'][data-step='2'][data-state=in_progress]")
    assert "客户在第 2/4 步" in await page.inner_text("#guides")
    await screenshot(page, "console-documents-guide.png")
    await customer.aclose()


async def _count(locator, n: int) -> bool:
    return await locator.count() == n


async def _card(customer, kind: str) -> dict | None:
    """The payload of the customer's latest card of this kind, once it arrived."""
    payloads = [m.get("payload") or {} for m in (await customer.history())["messages"]]
    return next((p for p in reversed(payloads) if p.get("type") == kind), None)


def card_photo(width: int = 320, height: int = 200) -> bytes:
    """A real PNG (a blue card with a white stripe) so the console shows an image, not a broken icon."""
    rows = b""
    for y in range(height):
        pixel = b"\xff\xff\xff" if 40 <= y < 60 else b"\x1d\x4e\xd8"
        rows += b"\x00" + pixel * width

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
