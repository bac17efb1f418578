"""What goes wrong in calls: nobody answers, a party drops, bad SDP, someone else's call, missing consent."""

from __future__ import annotations

import asyncio

import av
import httpx

from api.video.service import NOTICE_VERSION
from tests.support import MiniappCustomer, next_message
from tests.video.clients import MediaParty
from tests.video.support import (
    escalated_customer,
    recording_file,
    request_call,
    video_agent,
    wait_for_call,
    wait_for_recordings,
    wait_until,
)

SMALL = dict(width=320, height=240, fps=15)


async def test_nobody_answers_so_the_call_is_missed_and_the_customer_keeps_their_place(video_stack, emulator):
    stack = video_stack(video_ring_timeout_s=2)
    agent = await video_agent(stack, presence="away")  # sees the queue, gets nothing assigned
    earlier, earlier_id = await escalated_customer(stack, emulator, "转人工")
    customer, conversation_id = await escalated_customer(stack, emulator)
    queue_before = [item["conversation_id"] for item in (await agent.http.get("/agents/queue")).json()]
    assert queue_before == [earlier_id, conversation_id]

    call = await request_call(customer, conversation_id)
    media = MediaParty("customer", **SMALL)
    async with customer.socket(after_id=10**9):
        await media.negotiate(customer.http, call["id"])
        await wait_for_call(customer.http, call["id"], "ringing")
        missed = await wait_for_call(customer.http, call["id"], "missed", timeout=10)
        assert missed["end_reason"] == "ring_timeout"
    # Back in the queue, in the same place, and told so.
    assert (await customer.history())["conversation"]["state"] == "queued"
    queue_after = [item["conversation_id"] for item in (await agent.http.get("/agents/queue")).json()]
    assert queue_after == queue_before
    texts = [m["text"] for m in (await customer.history())["messages"] if m["sender_kind"] == "system"]
    assert any("位置已为您保留" in t and "前面还有1位" in t for t in texts), texts
    # The server let go of the customer's media.
    await wait_until(lambda: media.pc.connectionState in ("closed", "failed"), 15, "the server to close the media")
    await media.close()
    assert (await agent.http.get(f"/video/calls/{call['id']}")).json()["recordings"] == []
    for client in (agent, earlier, customer):
        await client.aclose()


async def test_a_customer_who_drops_mid_call_ends_it_after_the_grace_period_with_the_recording_closed(
    video_stack, emulator
):
    stack = video_stack(video_peer_grace_s=2)  # the customer's silent tail (the grace) is clearly over 1 s
    agent = await video_agent(stack)
    customer, conversation_id = await escalated_customer(stack, emulator)
    call = await request_call(customer, conversation_id)
    customer_media, agent_media = MediaParty("customer", **SMALL), MediaParty("agent", **SMALL)
    await customer_media.negotiate(customer.http, call["id"])
    await wait_for_call(agent.http, call["id"], "ringing")
    assert (await agent.http.post(f"/video/calls/{call['id']}/accept")).status_code == 200
    await agent_media.negotiate(agent.http, call["id"])
    await wait_for_call(agent.http, call["id"], "connected")
    await wait_until(lambda: len(agent_media.received) > 10, 15, "customer frames at the agent")

    await customer_media.close()  # the customer's phone goes away
    ended = await wait_for_call(agent.http, call["id"], ("ended", "failed"), timeout=15)
    assert ended["state"] == "ended" and ended["end_reason"] == "customer_dropped"
    recordings = await wait_for_recordings(agent, call["id"])
    assert all(r["has_audio"] and r["has_video"] for r in recordings), recordings
    by_party = {r["party"]: r for r in recordings}
    # The customer's media stopped when their phone went away: the file says so (the tail while the grace ran).
    dropped = by_party["customer"]
    assert dropped["status"] == "degraded", dropped
    assert {g["kind"] for g in dropped["gaps"] if g["length_s"] >= 1.5} == {"audio", "video"}, dropped["gaps"]
    assert by_party["agent"]["status"] == "complete", by_party["agent"]["issues"]
    for recording in recordings:
        with av.open(recording_file(stack.recordings_dir, call["id"], recording["party"])) as container:
            assert {s.type for s in container.streams} == {"audio", "video"}
    await wait_until(lambda: agent_media.pc.connectionState in ("closed", "failed"), 15, "the agent's media to close")
    await agent_media.close()
    for client in (agent, customer):
        await client.aclose()


async def test_bad_sdp_is_refused_with_a_reason_and_the_call_still_works(video_stack, emulator):
    stack = video_stack()
    customer, conversation_id = await escalated_customer(stack, emulator)
    call = await request_call(customer, conversation_id)
    url = f"/video/calls/{call['id']}/offer"
    garbage = await customer.http.post(url, json={"sdp": "this is not sdp", "type": "offer"})
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "bad_sdp"
    assert garbage.json()["error"]["message"]
    no_media = await customer.http.post(
        url, json={"sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "type": "offer"}
    )
    assert no_media.status_code == 400
    assert (await customer.http.post(url, json={"sdp": "v=0", "type": "answer"})).status_code == 400
    assert (await customer.http.post(url, json={"sdp": "v=0", "type": "pranswer"})).status_code == 422
    assert (await customer.http.post(url, json={"type": "offer"})).status_code == 422
    assert (
        await customer.http.post(url, content=b"{", headers={"content-type": "application/json"})
    ).status_code == 422
    assert (await wait_for_call(customer.http, call["id"], "requested"))["state"] == "requested"
    media = MediaParty("customer", **SMALL)
    assert (await media.negotiate(customer.http, call["id"])).status_code == 200
    await wait_for_call(customer.http, call["id"], "ringing")
    assert httpx.get(stack.app_url + "/healthz").status_code in (200, 503)
    await customer.http.post(f"/video/calls/{call['id']}/hangup")
    await media.close()
    await customer.aclose()


async def test_only_the_calls_own_parties_may_signal(video_stack, emulator):
    stack = video_stack()
    customer, conversation_id = await escalated_customer(stack, emulator)
    stranger = await MiniappCustomer.login(stack.app_url, emulator)
    agent = await video_agent(stack, presence="away")
    call = await request_call(customer, conversation_id)
    media = MediaParty("customer", **SMALL)
    offer = await media.offer()
    url = f"/video/calls/{call['id']}/offer"

    assert (await stranger.http.post(url, json=offer)).status_code == 403
    assert (await stranger.http.get(f"/video/calls/{call['id']}")).status_code == 403
    assert (await stranger.http.post(f"/video/calls/{call['id']}/hangup")).status_code == 403
    refused = await agent.http.post(url, json=offer)  # an agent who has not answered the call
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "not_answered"
    assert (await customer.http.post("/video/calls/999999/offer", json=offer)).status_code == 404
    assert httpx.post(stack.app_url + url, json=offer).status_code == 401
    assert (
        await stranger.http.post(
            "/video/calls",
            json={
                "conversation_id": conversation_id,
                "consent": {"notice_version": NOTICE_VERSION, "accepted": True},
            },
        )
    ).status_code == 404  # someone else's conversation looks like none
    assert (await customer.http.get(f"/video/calls/{call['id']}")).json()["state"] == "requested"
    # A queued conversation's calls are readable by agents (like its transcript); once another agent holds
    # it, an agent of another group can't read them.
    listed = await agent.http.get("/video/calls", params={"conversation_id": conversation_id})
    assert [c["id"] for c in listed.json()] == [call["id"]]
    holder = await video_agent(stack, presence="away")
    assert (await holder.http.post(f"/agents/conversations/{conversation_id}/claim")).status_code == 200
    outsider = await video_agent(stack, presence="away", skills=("cards",))
    assert (await outsider.http.get("/video/calls", params={"conversation_id": conversation_id})).status_code == 403
    assert (await outsider.http.get(f"/video/calls/{call['id']}")).status_code == 403
    await media.close()
    for client in (customer, stranger, agent, holder, outsider):
        await client.aclose()


async def test_no_call_without_consent_to_the_current_notice(video_stack, emulator):
    stack = video_stack()
    customer, conversation_id = await escalated_customer(stack, emulator)
    for consent in ({}, {"notice_version": NOTICE_VERSION, "accepted": False}, {"accepted": True}):
        response = await customer.http.post(
            "/video/calls", json={"conversation_id": conversation_id, "consent": consent}
        )
        assert response.status_code == 422, consent
    assert (await customer.http.post("/video/calls", json={"conversation_id": conversation_id})).status_code == 422
    stale = await customer.http.post(
        "/video/calls",
        json={
            "conversation_id": conversation_id,
            "consent": {"notice_version": "2000-old", "accepted": True},
        },
    )
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "notice_changed"
    await customer.aclose()


async def test_the_customer_socket_hears_the_call(video_stack, emulator):
    stack = video_stack()
    customer, conversation_id = await escalated_customer(stack, emulator)
    last_id = (await customer.history())["messages"][-1]["id"]
    async with customer.socket(after_id=last_id) as ws:
        call = await request_call(customer, conversation_id)
        media = MediaParty("customer", **SMALL)
        await media.negotiate(customer.http, call["id"])
        ringing = await next_message(ws, predicate=lambda m: (m.get("payload") or {}).get("call_id") == call["id"])
        assert "正在为您呼叫视频客服" in ringing["text"]
    await customer.http.post(f"/video/calls/{call['id']}/hangup")
    await media.close()
    await asyncio.sleep(0)
    await customer.aclose()
