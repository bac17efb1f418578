"""A video call with both people in Debian's chromium (fake camera and microphone): the customer's H5 page
and the agent in the console. The agent is rung, answers, sees the customer, verifies identity, sends a
repayment plan the customer confirms, and hangs up; a supervisor downloads the recordings from the console."""

from __future__ import annotations

import hashlib
import uuid

from tests.pages.test_console import screenshot, sign_in
from tests.support import AgentConsole, create_agent
from tests.video.clients import MediaParty
from tests.video.support import escalated_customer, request_call, video_agent, wait_for_call
from tests.video.test_calls import audit_actions


async def test_an_agent_in_the_console_answers_talks_and_ends_a_call_and_a_supervisor_downloads_it(
    video_stack, emulator, browser_page, tmp_path
):
    stack = video_stack(video_ring_timeout_s=60, video_peer_grace_s=15)  # long enough to survive a reload
    console = browser_page
    await console.set_viewport_size({"width": 1400, "height": 1000})
    username, boss = "zhao-" + uuid.uuid4().hex[:6], "qian-" + uuid.uuid4().hex[:6]
    await create_agent(stack.database_url, username=username, password="pw-123456", skills=["accounts", "general"])
    await create_agent(stack.database_url, username=boss, password="pw-123456", skills=["general"], role="supervisor")
    await sign_in(console, stack.app_url, username)
    await console.select_option("#presence", "online")
    await console.wait_for_function("document.querySelector('#presence').value === 'online'")

    # The customer asks to change the reserved phone (a face-check scenario) and is handed to this agent.
    customer, conversation_id = await escalated_customer(stack, emulator, "修改预留手机号")
    phone = await console.context.browser.new_page()
    await phone.goto(
        f"{stack.app_url}/h5/video/?conversation_id={conversation_id}&ticket={await customer.ticket('video_page')}"
    )
    await phone.wait_for_selector("body[data-step=notice]")
    await phone.click("#consent")
    await phone.wait_for_selector("body[data-call-state=ringing]", timeout=15000)
    call_id = int(await phone.get_attribute("body", "data-call-id"))

    # The console rings; the agent answers from the alert.
    # Locators, not element handles: the list is re-rendered when call events arrive.
    ring = console.locator(f"#ringing-calls li[data-call-id='{call_id}']")
    await ring.wait_for(timeout=15000)
    assert "视频来电" in await ring.inner_text()
    await screenshot(console, "console-video-ringing.png")
    await ring.locator(".answer").click()
    await console.wait_for_selector(f"#video-call[data-call-id='{call_id}'][data-state=connected]", timeout=20000)
    await console.wait_for_selector("#ringing", state="hidden")
    assert await console.is_visible("#video-recording")
    assert f"{conversation_id}" == await console.get_attribute("#conversation", "data-conversation-id")

    # Each sees the other's camera, relayed by the server.
    await console.wait_for_function(
        "Number(document.querySelector('#remote-video').dataset.frames) > 10", timeout=20000
    )
    await phone.wait_for_function("Number(document.querySelector('#remote').dataset.frames) > 10", timeout=20000)

    # Identity verified on camera: stored and shown on the handoff card from then on.
    await console.click("#verify-identity")
    await console.wait_for_function("document.querySelector('#card-identity').textContent === '视频核验通过'")
    await console.wait_for_function("document.querySelector('#video-identity').textContent.startsWith('核验通过')")

    # A repayment plan, sent from the console and confirmed by the customer on camera.
    await console.fill("#plan-total", "9000.00")
    await console.fill("#plan-installments", "9")
    await console.fill("#plan-monthly", "1000.00")
    await console.fill("#plan-first-due", "2027-03-01")
    await console.click("#plan-send")
    await phone.wait_for_selector("#plan:not([hidden])", timeout=15000)
    assert "9000.00" in await phone.inner_text("#plan-summary")
    await phone.click("#plan-confirm")
    await console.wait_for_selector("#video-plans li[data-state=confirmed]", timeout=15000)
    await screenshot(console, "console-video-call.png")

    # The agent reloads the console mid-call: it picks the call up again (a new connection replaces the old).
    await console.reload()
    await console.wait_for_selector("body[data-status=ready]")
    await console.wait_for_selector(f"#video-call[data-call-id='{call_id}'][data-media=connected]", timeout=20000)
    await console.wait_for_function(
        "Number(document.querySelector('#remote-video').dataset.frames) > 10", timeout=20000
    )
    assert (await wait_for_call(customer.http, call_id, "connected"))["state"] == "connected"

    # The agent hangs up; the customer's page ends; the recordings are finalized and listed with the call.
    await console.click("#video-hangup")
    await phone.wait_for_selector("body[data-step=ended]", timeout=15000)
    ended = await wait_for_call(customer.http, call_id, "ended")
    assert ended["end_reason"] == "agent_hangup"
    await console.wait_for_selector("#video-call[data-state=ended]")
    # Both finalized; the agent's own file has the reload in it, so it is `degraded`, and the panel says why.
    await console.wait_for_function(
        "document.querySelectorAll('#video-recordings tr[data-status=complete], "
        "#video-recordings tr[data-status=degraded]').length === 2",
        timeout=30000,
    )
    for row in await console.query_selector_all("#video-recordings tr[data-status]"):
        evidence = await (await row.query_selector("td.evidence")).inner_text()
        assert "H.264" in evidence or "VP8" in evidence, evidence  # chromium offers both; H.264 is preferred
        if await row.get_attribute("data-status") == "degraded":
            assert await row.query_selector(".issues li") is not None and "有缺陷" in await row.inner_text()
    assert await console.evaluate("document.querySelector('#remote-video').srcObject") is None  # camera released

    # A supervisor lists the recordings and downloads one; the file is the stored one, and it is audited.
    supervisor = await console.context.browser.new_page()
    await supervisor.set_viewport_size({"width": 1600, "height": 1000})
    await sign_in(supervisor, stack.app_url, boss)
    await supervisor.click("#show-supervisor")
    await supervisor.click("#load-recordings")
    row = supervisor.locator("#recordings tbody tr[data-recording-id]").first
    await row.wait_for()
    recording_id = int(await row.get_attribute("data-recording-id"))
    api = await AgentConsole.login(stack.app_url, boss, "pw-123456")
    listed = {r["id"]: r for r in (await api.http.get("/video/recordings")).json()}
    async with supervisor.expect_download() as download_info:
        await row.locator(".download").click()
    download = await download_info.value
    saved = tmp_path / "download.mp4"
    await download.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == listed[recording_id]["sha256"]
    await supervisor.wait_for_selector("#alert:has-text('校验一致')")
    assert "recording_download" in audit_actions(stack.database_url, f"recording:{recording_id}")
    await customer.aclose()
    await api.aclose()


async def test_the_console_rings_for_a_queued_video_call_and_stops_when_nobody_answers(
    video_stack, emulator, browser_page
):
    """An agent who is away still sees the group's ring; at the ring timeout the banner goes and the panel says so."""
    stack = video_stack(video_ring_timeout_s=3)
    console = browser_page
    username = "sun-" + uuid.uuid4().hex[:6]
    await create_agent(stack.database_url, username=username, password="pw-123456", skills=["general"])
    await sign_in(console, stack.app_url, username)  # signed in, not online: nothing is assigned to them
    customer, conversation_id = await escalated_customer(stack, emulator)
    call = await request_call(customer, conversation_id)
    media = MediaParty("customer", width=320, height=240, fps=15)
    assert (await media.negotiate(customer.http, call["id"])).status_code == 200

    ring = console.locator(f"#ringing-calls li[data-call-id='{call['id']}']")
    await ring.wait_for(timeout=15000)
    assert "秒内接听" in await ring.inner_text()
    await ring.locator(".peek").click()  # the handoff card first
    await console.wait_for_selector(f"#video-call[data-call-id='{call['id']}'][data-state=ringing]")
    assert await console.is_visible("#video-accept")
    await console.wait_for_selector("#ringing", state="hidden", timeout=15000)
    await console.wait_for_selector(f"#video-call[data-call-id='{call['id']}'][data-state=missed]")
    assert "无人接听" in await console.inner_text("#video-status")
    assert (await customer.history())["conversation"]["state"] == "queued"  # back in the queue, place kept
    await media.close()
    await customer.aclose()


async def test_an_agent_without_video_sees_the_call_and_the_conversation_move_to_a_video_agent(
    video_stack, emulator, browser_page
):
    stack = video_stack(video_ring_timeout_s=60)
    console = browser_page
    username = "li-" + uuid.uuid4().hex[:6]
    await create_agent(
        stack.database_url, username=username, password="pw-123456", skills=["accounts"], video_capable=False
    )
    await sign_in(console, stack.app_url, username)
    await console.select_option("#presence", "online")
    customer, conversation_id = await escalated_customer(stack, emulator, "修改预留手机号")  # assigned to them
    held = console.locator(f"#held li[data-id='{conversation_id}']")
    await held.click()
    await console.wait_for_selector(f"#conversation[data-conversation-id='{conversation_id}'][data-state=with_agent]")

    video = await video_agent(stack, skills=("accounts",))
    call = await request_call(customer, conversation_id)
    media = MediaParty("customer", width=320, height=240, fps=15)
    assert (await media.negotiate(customer.http, call["id"])).status_code == 200
    await console.wait_for_selector(f"#video-call[data-call-id='{call['id']}'][data-state=ringing]", timeout=15000)
    assert not await console.is_visible("#video-accept") and not await console.is_visible("#ringing")

    assert (await video.http.post(f"/video/calls/{call['id']}/accept")).status_code == 200
    await console.wait_for_selector("#alert:has-text('已由其他客服接手')", timeout=15000)
    assert not await console.is_visible("#conversation")
    await media.close()
    for client in (customer, video):
        await client.aclose()
