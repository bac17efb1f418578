"""The customer's H5 video page in Debian's chromium with a fake camera and microphone: the recording
notice and consent first, then a real WebRTC call through the server with an aiortc agent, then hang-up."""

from __future__ import annotations

import av

from tests.video.clients import MediaParty
from tests.video.support import (
    escalated_customer,
    recording_file,
    video_agent,
    wait_for_call,
    wait_for_recordings,
    wait_until,
)


async def test_the_customer_consents_talks_to_the_agent_and_hangs_up_in_the_browser(
    video_stack, emulator, browser_page
):
    stack = video_stack()
    agent = await video_agent(stack)  # online: the escalated customer is assigned to them
    customer, conversation_id = await escalated_customer(stack, emulator)
    page = browser_page
    await page.goto(
        f"{stack.app_url}/h5/video/?conversation_id={conversation_id}&ticket={await customer.ticket('video_page')}"
    )
    await page.wait_for_selector("body[data-step=notice]")
    assert "录音录像" in await page.inner_text("#notice-text")
    assert "ticket=" not in page.url and "token=" not in page.url  # kept out of the address bar
    assert await page.evaluate("document.querySelector('#local').srcObject") is None  # no camera before consent

    await page.click("#consent")
    await page.wait_for_selector("body[data-call-state=ringing]", timeout=15000)
    call_id = int(await page.get_attribute("body", "data-call-id"))
    assert (await agent.http.post(f"/video/calls/{call_id}/accept")).status_code == 200
    agent_media = MediaParty("agent", width=320, height=240, fps=15)
    assert (await agent_media.negotiate(agent.http, call_id)).status_code == 200
    await wait_for_call(agent.http, call_id, "connected")
    await page.wait_for_selector("body[data-call-state=connected]", timeout=15000)
    assert await page.is_visible("#recording")

    # The agent sees the browser's camera; the page shows the agent.
    await wait_until(
        lambda: len(agent_media.received) > 10 and agent_media.audio_frames > 10, 20, "the browser's media"
    )
    await page.wait_for_function("Number(document.querySelector('#remote').dataset.frames) > 10", timeout=15000)

    # A repayment plan, confirmed on the page.
    plan = await agent.http.post(
        f"/video/calls/{call_id}/plans",
        json={
            "total_amount": "6000.00",
            "installments": 6,
            "monthly_amount": "1000.00",
            "first_due_date": "2027-02-01",
        },
    )
    assert plan.status_code == 201
    await page.wait_for_selector("#plan:not([hidden])")
    assert "6000.00" in await page.inner_text("#plan-summary")
    await page.click("#plan-confirm")
    await page.wait_for_selector("#plan[hidden]", state="attached")

    await page.click("#hangup")
    await page.wait_for_selector("body[data-step=ended]")
    ended = await wait_for_call(agent.http, call_id, "ended")
    assert ended["end_reason"] == "customer_hangup"
    recordings = await wait_for_recordings(agent, call_id)
    assert all(r["status"] == "complete" and r["has_audio"] and r["has_video"] for r in recordings), recordings
    plans = (await agent.http.get(f"/video/calls/{call_id}")).json()["plans"]
    assert plans[0]["state"] == "confirmed" and len(plans[0]["recording_ids"]) == 2
    with av.open(recording_file(stack.recordings_dir, call_id, "customer")) as container:
        video = container.streams.video[0]
        assert (video.codec_context.width, video.codec_context.height) == (640, 480)
    await agent_media.close()
    await customer.aclose()
    await agent.aclose()
