"""A video call of a customer waiting for their (busy) advisor rings only the advisor, then the group once the
group's wait is over; with real aiortc media from the customer."""

from __future__ import annotations

from tests.advisors.support import agent, assign_advisor, eventually, held_ids
from tests.support import MiniappCustomer
from tests.video.clients import MediaParty
from tests.video.support import request_call, video_agent, wait_for_call

SMALL = {"width": 160, "height": 120, "fps": 10}


async def test_the_call_rings_the_advisor_first_then_the_group(video_stack, emulator):
    stack = video_stack(advisor_wait_s=15, appointment_sweep_s=0.2, routing_tick_s=0.2, video_ring_timeout_s=40)
    advisor = await video_agent(stack)
    advisor_id = (await advisor.http.get("/agents/me")).json()["id"]
    assert (await advisor.http.put("/agents/me/presence", json={"presence": "online"})).status_code == 200
    # The advisor is busy: at capacity (3) with other customers.
    _, supervisor = await agent(stack, role="supervisor", skills=(), online=False)
    other = await MiniappCustomer.login(stack.app_url, emulator)
    other_id = (await other.say("转人工"))["conversation"]["id"]
    await eventually(lambda: _has(advisor, other_id))
    for _ in range(2):
        more = await MiniappCustomer.login(stack.app_url, emulator)
        more_id = (await more.say("转人工"))["conversation"]["id"]
        await eventually(lambda more_id=more_id: _has(advisor, more_id))
    colleague = await video_agent(stack)
    customer = await MiniappCustomer.login(stack.app_url, emulator)
    await assign_advisor(supervisor, customer, advisor_id)
    conversation_id = (await customer.say("视频客服"))["conversation"]["id"]
    assert conversation_id not in await held_ids(colleague)

    call = await request_call(customer, conversation_id)
    media = MediaParty("customer", **SMALL)
    try:
        assert (await media.negotiate(customer.http, call["id"])).status_code == 200
        ringing = await wait_for_call(customer.http, call["id"], "ringing")
        assert ringing["state"] == "ringing"
        assert [c["id"] for c in (await advisor.http.get("/video/calls", params={"state": "ringing"})).json()] == [
            call["id"]
        ]
        assert (await colleague.http.get("/video/calls", params={"state": "ringing"})).json() == []
        assert (await colleague.http.post(f"/video/calls/{call['id']}/accept")).status_code == 403

        async def colleague_rung():
            calls = (await colleague.http.get("/video/calls", params={"state": "ringing"})).json()
            return [c["id"] for c in calls] == [call["id"]]

        assert await eventually(colleague_rung, timeout=45)
        answered = await colleague.http.post(f"/video/calls/{call['id']}/accept")
        assert answered.status_code == 200, answered.text
    finally:
        await media.close()
    for client in (advisor, colleague, supervisor, customer, other):
        await client.aclose()


async def _has(console, conversation_id):
    return conversation_id in await held_ids(console)
