"""Media worker processes (`python -m api.video.worker`): placement on the least-loaded one with room, a
full worker refusing, the customer told when no worker has room, and the drain on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import uuid

import pytest

from api.paths import ROOT
from api.realtime import DeploymentRedis
from api.video import plane
from api.video import worker as worker_module
from tests.video.clients import MediaParty
from tests.video.support import (
    escalated_customer,
    request_call,
    video_agent,
    wait_for_call,
    wait_for_recordings,
    wait_until,
)

SMALL = dict(width=320, height=240, fps=15)


async def ask_media_worker(redis_url: str, worker_id: str, message: dict, timeout: float = 10.0) -> dict:
    """One request straight to a media worker over its Redis channel, as an API worker would send it."""
    redis = DeploymentRedis.from_url(redis_url, decode_responses=True)
    pubsub = redis.pubsub()
    reply_to = plane.reply_channel("test-" + uuid.uuid4().hex[:6])
    await pubsub.subscribe(reply_to)
    try:
        rid = uuid.uuid4().hex
        await redis.publish(plane.rpc_channel(worker_id), json.dumps({**message, "rid": rid, "reply_to": reply_to}))
        async with asyncio.timeout(timeout):
            async for item in pubsub.listen():
                if item["type"] == "message" and json.loads(item["data"]).get("rid") == rid:
                    return json.loads(item["data"])
    finally:
        await pubsub.aclose()
        await redis.aclose()


async def test_calls_go_to_the_least_loaded_media_worker_and_when_all_are_full_the_customer_keeps_their_place(
    video_stack, emulator
):
    stack = video_stack(media_workers=2, video_media_calls_per_worker=1)
    first, second = stack.media
    customers = [await escalated_customer(stack, emulator) for _ in range(3)]
    calls, parties = [], []
    for customer, conversation_id in customers[:2]:
        call = await request_call(customer, conversation_id)
        party = MediaParty("customer", **SMALL)
        assert (await party.negotiate(customer.http, call["id"])).status_code == 200
        calls.append(await wait_for_call(customer.http, call["id"], "ringing"))
        parties.append(party)
    # One call each: the second went to the worker that had none.
    assert {c["id"] for c in calls} == {*first.announcement().calls, *second.announcement().calls}
    assert len(first.announcement().calls) == len(second.announcement().calls) == 1

    # A full worker refuses a new call itself (two API workers may have read the same load).
    refused = await ask_media_worker(
        stack.redis_url,
        first.worker_id,
        {"op": "offer", "call_id": 10**6, "role": "customer", "sdp": "v=0\r\n", "type": "offer"},
    )
    assert refused["error"]["code"] == "media_worker_full" and refused["error"]["status"] == 503

    # No worker with room: the customer is told plainly, on the page (the 503's message) and in the chat,
    # the call never rings, and the queue keeps them where they were.
    customer, conversation_id = customers[2]
    queue_before = (await customer.history())["conversation"]
    call = await request_call(customer, conversation_id)
    party = MediaParty("customer", **SMALL)
    response = await party.negotiate(customer.http, call["id"])
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "video_capacity_full"
    assert "视频客服线路已满" in error["message"] and "位置已为您保留（前面还有2位）" in error["message"]
    refused_call = await wait_for_call(customer.http, call["id"], "failed")
    assert refused_call["end_reason"] == "no_capacity" and refused_call["ringing_at"] is None
    history = await customer.history()
    assert history["conversation"]["state"] == "queued" and history["conversation"]["id"] == queue_before["id"]
    texts = [m["text"] for m in history["messages"] if m["sender_kind"] == "system"]
    assert any("视频客服线路已满" in t and "前面还有2位" in t for t in texts), texts
    await party.close()

    # A hang-up frees its worker's place, and the next call goes there.
    freed = first if calls[0]["id"] in first.announcement().calls else second
    hung_up = await customers[0][0].http.post(f"/video/calls/{calls[0]['id']}/hangup")
    assert hung_up.json()["state"] == "cancelled"
    await wait_until(lambda: freed.announcement().calls == [], 15, "the hung-up call's worker to be free")
    call = await request_call(customer, conversation_id)
    party = MediaParty("customer", **SMALL)
    assert (await party.negotiate(customer.http, call["id"])).status_code == 200
    await wait_for_call(customer.http, call["id"], "ringing")
    assert freed.announcement().calls == [call["id"]]
    for media in (party, *parties):
        await media.close()
    for client, _ in customers:
        await client.aclose()


async def test_sigterm_drains_a_media_worker_new_calls_refused_live_ones_ended_after_the_timeout_and_recorded(
    video_stack, emulator
):
    stack = video_stack(video_media_drain_timeout_s=8)
    worker = stack.media[0]
    agent = await video_agent(stack)
    customer, conversation_id = await escalated_customer(stack, emulator)
    call = await request_call(customer, conversation_id)
    customer_media, agent_media = MediaParty("customer", **SMALL), MediaParty("agent", **SMALL)
    assert (await customer_media.negotiate(customer.http, call["id"])).status_code == 200
    await wait_for_call(agent.http, call["id"], "ringing")
    assert (await agent.http.post(f"/video/calls/{call['id']}/accept")).status_code == 200
    assert (await agent_media.negotiate(agent.http, call["id"])).status_code == 200
    await wait_for_call(agent.http, call["id"], "connected")
    await wait_until(lambda: len(agent_media.received) > 5, 15, "frames before the drain")

    worker.terminate()
    await wait_until(lambda: (worker.announcement() or plane.Announcement("", [], 0)).draining, 10, "draining")
    # No new placements while draining (it is the only worker): the next customer is refused plainly.
    other, other_conversation = await escalated_customer(stack, emulator)
    other_call = await request_call(other, other_conversation)
    other_media = MediaParty("customer", **SMALL)
    refused = await other_media.negotiate(other.http, other_call["id"])
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "video_capacity_full"
    await other_media.close()
    # The live call goes on during the drain…
    frames = len(agent_media.received)
    await asyncio.sleep(1.0)
    assert len(agent_media.received) > frames
    assert (await agent.http.get(f"/video/calls/{call['id']}")).json()["call"]["state"] == "connected"
    # …and is ended by the drain timeout, its recordings closed and finalized, then the worker exits.
    ended = await wait_for_call(agent.http, call["id"], "ended", timeout=20)
    assert ended["end_reason"] == "server_shutdown"
    recordings = await wait_for_recordings(agent, call["id"])
    assert all(r["status"] == "complete" and r["has_video"] and r["has_audio"] for r in recordings), recordings
    try:  # the drain is done: the process exits by itself, or within EXIT_GRACE_S by the worker's own timer
        assert await asyncio.to_thread(worker.process.wait, worker_module.EXIT_GRACE_S + 20) == 0
    except subprocess.TimeoutExpired:
        pytest.fail(f"the drained worker did not exit; its log ends:\n{worker.log_path.read_text()[-3000:]}")
    assert worker.announcement() is None
    for media in (customer_media, agent_media):
        await media.close()
    for client in (agent, customer, other):
        await client.aclose()


def host_address() -> str | None:
    """This host's address on its default route (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))  # TEST-NET-2: routed by default, never reached
            return probe.getsockname()[0]
        except OSError:
            return None


async def test_a_media_worker_offers_only_its_configured_address_and_refuses_loopback(video_stack, emulator):
    address = host_address()
    assert address and not address.startswith("127."), "this test needs a non-loopback address"
    stack = video_stack(video_media_address=address)
    assert stack.media[0].announcement().address == address
    customer, conversation_id = await escalated_customer(stack, emulator)
    call = await request_call(customer, conversation_id)
    party = MediaParty("customer", **SMALL)
    answer = await party.negotiate(customer.http, call["id"])
    assert answer.status_code == 200, answer.text
    hosts = {line.split()[4] for line in answer.json()["sdp"].splitlines() if " typ host" in line}
    assert hosts == {address}
    await wait_until(lambda: party.pc.connectionState == "connected", 15, "the customer's media through it")
    await party.close()
    await customer.aclose()

    broken = subprocess.run(
        [sys.executable, "-m", "api.video.worker"],
        env={**stack.media[0].env, "YUNTING_VIDEO_MEDIA_ADDRESS": "127.0.0.1"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert broken.returncode != 0 and "loopback" in broken.stderr
