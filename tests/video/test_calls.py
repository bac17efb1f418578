"""A recorded video call end to end through the real API: two aiortc clients (customer and agent) with
generated media, relayed and recorded by the server; then the evidence, the card and the transcript."""

from __future__ import annotations

import asyncio
import hashlib
import io
import stat
import time
from datetime import datetime
from pathlib import Path

import av
import httpx
import redis
from sqlalchemy import create_engine, text

from api.conversations.models import Conversation
from api.conversations.service import rebuild_context
from api.db import create_engine as create_async_engine
from api.db import unit_of_work
from api.settings import async_database_url
from tests.video.clients import MediaParty, looks_like
from tests.video.support import (
    escalated_customer,
    request_call,
    video_agent,
    wait_for_call,
    wait_for_recordings,
    wait_until,
)

SMALL = dict(width=320, height=240, fps=15)  # enough to prove the path; keeps the test box's CPU free


def audit_actions(database_url: str, subject_prefix: str) -> list[str]:
    engine = create_engine(database_url.replace("+aiosqlite", ""))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT action FROM audit_event WHERE subject LIKE :p ORDER BY id"), {"p": subject_prefix + "%"}
            )
            return [row[0] for row in rows]
    finally:
        engine.dispose()


async def test_a_recorded_call_relays_both_ways_and_keeps_the_evidence(video_stack, emulator):
    stack = video_stack()
    agent = await video_agent(stack, skills=("accounts", "general"))  # online: the escalation is assigned to them
    customer, conversation_id = await escalated_customer(stack, emulator, "修改预留手机号")
    supervisor = await video_agent(stack, presence="away", role="supervisor")

    call = await request_call(customer, conversation_id)
    assert call["state"] == "requested" and call["conversation_id"] == conversation_id

    customer_media, agent_media = MediaParty("customer", **SMALL), MediaParty("agent", **SMALL)
    assert (await customer_media.negotiate(customer.http, call["id"])).status_code == 200
    ringing = await wait_for_call(customer.http, call["id"], "ringing")
    assert ringing["ring_deadline"] is not None
    mine = (await agent.http.get("/video/calls", params={"state": "ringing"})).json()
    assert [c["id"] for c in mine] == [call["id"]]  # rung: they hold the conversation

    accepted = await agent.http.post(f"/video/calls/{call['id']}/accept")
    assert accepted.status_code == 200, accepted.text
    started = time.monotonic()
    assert (await agent_media.negotiate(agent.http, call["id"])).status_code == 200
    connected = await wait_for_call(agent.http, call["id"], "connected")
    assert connected["agent_id"] is not None

    # Each side sees the other's numbered frames (customer red, agent blue), relayed by the server.
    await wait_until(lambda: len(agent_media.received) > 20 and len(customer_media.received) > 20, 15, "relayed frames")
    assert all(looks_like(colour, "customer") for colour, _ in agent_media.received[-10:])
    assert all(looks_like(colour, "agent") for colour, _ in customer_media.received[-10:])
    numbers = [n for _, n in agent_media.received]
    assert numbers[-1] > numbers[0] and numbers == sorted(numbers)
    await wait_until(lambda: agent_media.audio_frames > 20 and customer_media.audio_frames > 20, 10, "relayed audio")

    # In the call: identity verified on camera, a plan sent and confirmed by the customer.
    verdict = await agent.http.post(f"/video/calls/{call['id']}/identity", json={"result": "verified"})
    assert verdict.status_code == 200 and verdict.json()["call_offset_s"] >= 0
    plan = await agent.http.post(
        f"/video/calls/{call['id']}/plans",
        json={
            "total_amount": "12000.00",
            "installments": 12,
            "monthly_amount": "1000.00",
            "first_due_date": "2027-01-15",
        },
    )
    assert plan.status_code == 201, plan.text
    await asyncio.sleep(2)
    confirmed = await customer.http.post(
        f"/video/calls/{call['id']}/plans/{plan.json()['id']}/answer", json={"accept": True}
    )
    assert confirmed.status_code == 200 and confirmed.json()["state"] == "confirmed"

    hung_up = await customer.http.post(f"/video/calls/{call['id']}/hangup")
    call_length = time.monotonic() - started
    assert hung_up.status_code == 200 and hung_up.json()["state"] == "ended"
    assert hung_up.json()["end_reason"] == "customer_hangup"
    await customer_media.close()
    await agent_media.close()

    recordings = await wait_for_recordings(agent, call["id"])
    assert {r["party"] for r in recordings} == {"customer", "agent"}
    for recording in recordings:
        assert recording["status"] == "complete", recording
        assert recording["has_audio"] and recording["has_video"]
        assert abs(recording["duration_s"] - call_length) < 1.5, (recording["duration_s"], call_length)
        assert recording["frames"]["dropped"] == {"audio": 0, "video": 0}
    assert set(confirmed.json()["recording_ids"]) == {r["id"] for r in recordings}  # the plan points at its evidence

    # The files: private, and exactly what the rows say (size, SHA-256); they decode with audio and video.
    listed = await supervisor.http.get("/video/recordings", params={"call_id": call["id"]})
    assert listed.status_code == 200 and {r["id"] for r in listed.json()} == {r["id"] for r in recordings}
    # Encrypted at rest: only sealed files remain (no plain MP4), each the stored hash on record; the download
    # is the decrypted recording, matching the plaintext hash, and decodes.
    assert not list(Path(stack.recordings_dir).rglob("*.mp4")), "plain recordings left on disk"
    files = sorted(Path(stack.recordings_dir).rglob("*.mp4.sealed"))
    assert len(files) == 2
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_bytes()[:8] == b"YTVAULT1"
    for recording in recordings:
        path = next(p for p in files if f"-{recording['party']}-" in p.name)
        assert recording["key_id"] == "test-1"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == recording["sha256_stored"]
        download = await supervisor.http.get(f"/video/recordings/{recording['id']}/download")
        assert download.status_code == 200 and download.headers["content-type"] == "video/mp4"
        assert len(download.content) == recording["size_bytes"]
        assert (
            hashlib.sha256(download.content).hexdigest() == recording["sha256"] == download.headers["x-content-sha256"]
        )
        assert download.content[4:8] == b"ftyp"  # an MP4, not ciphertext
        with av.open(io.BytesIO(download.content)) as container:
            kinds = {s.type for s in container.streams}
            assert kinds == {"audio", "video"}
            frames = sum(1 for _ in container.decode(video=0))
            assert frames > 10
    # A sealed file altered on disk never downloads as a complete file.
    altered = bytearray(files[0].read_bytes())
    altered[len(altered) // 2] ^= 0x01
    files[0].write_bytes(bytes(altered))
    recording = next(r for r in recordings if f"-{r['party']}-" in files[0].name)
    try:
        broken = await supervisor.http.get(f"/video/recordings/{recording['id']}/download")
        complete = broken.status_code == 200 and len(broken.content) == recording["size_bytes"]
    except httpx.HTTPError:  # the stream stops short of its Content-Length
        complete = False
    assert not complete
    assert audit_actions(stack.database_url, "recording").count("recording_download") == 3
    assert "recording_list" in audit_actions(stack.database_url, "recordings")
    assert (await agent.http.get("/video/recordings")).status_code == 403  # supervisors only

    # The conversation shows the call and its outcome; the card says the identity was verified by video.
    view = (await agent.http.get(f"/agents/conversations/{conversation_id}")).json()
    assert view["handoff_card"]["identity_status"] == "verified_by_video"
    texts = [m["text"] for m in view["messages"] if m["sender_kind"] == "system"]
    assert any("视频已接通" in t for t in texts) and any("视频通话已结束" in t and "秒" in t for t in texts)
    assert any("已确认还款方案" in t for t in texts)
    timeline = (await agent.http.get(f"/video/calls/{call['id']}")).json()["events"]
    kinds = [e["kind"] for e in timeline]
    for kind in (
        "requested",
        "offer_customer",
        "ringing",
        "accepted",
        "offer_agent",
        "connected",
        "identity_checked",
        "plan_sent",
        "plan_confirmed",
        "ended",
        "recordings_finalized",
    ):
        assert kind in kinds, kinds

    # Redis lost: the verified identity is on record, so the context rebuilt from SQL still has it.
    with redis.Redis.from_url(stack.redis_url) as hot:
        hot.flushdb()
    assert (await rebuilt_context(stack.database_url, conversation_id)).identity_status == "verified_by_video"
    for client in (customer, agent, supervisor):
        await client.aclose()


async def rebuilt_context(database_url: str, conversation_id: int):
    engine = create_async_engine(async_database_url(database_url))
    try:
        async with unit_of_work(engine) as session:
            return await rebuild_context(session, await session.get(Conversation, conversation_id))
    finally:
        await engine.dispose()


async def test_a_call_in_a_text_agents_conversation_rings_the_video_agents_and_the_answer_takes_it_over(
    video_stack, emulator
):
    stack = video_stack()
    texter = await video_agent(
        stack, skills=("accounts", "general"), video_capable=False
    )  # online: the escalation is assigned to them
    customer, conversation_id = await escalated_customer(stack, emulator, "修改预留手机号")
    assert (await customer.history())["conversation"]["state"] == "with_agent"
    video = await video_agent(stack, skills=("accounts",))
    colleague = await video_agent(stack, skills=("accounts",), video_capable=False)
    assert (await video.http.get("/agents/me")).json()["video_capable"] is True

    call = await request_call(customer, conversation_id)
    customer_media = MediaParty("customer", **SMALL)
    await customer_media.negotiate(customer.http, call["id"])
    await wait_for_call(customer.http, call["id"], "ringing")
    # Not the holder (no video) nor their colleague without video: the group's video agents are rung.
    for agent in (texter, colleague):
        assert (await agent.http.get("/video/calls", params={"state": "ringing"})).json() == []
        refused = await agent.http.post(f"/video/calls/{call['id']}/accept")
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "not_video_agent"
    assert [c["id"] for c in (await video.http.get("/video/calls", params={"state": "ringing"})).json()] == [call["id"]]

    assert (await video.http.post(f"/video/calls/{call['id']}/accept")).status_code == 200
    assert [c["conversation_id"] for c in (await video.http.get("/agents/me/conversations")).json()] == [
        conversation_id
    ]
    assert (await texter.http.get("/agents/me/conversations")).json() == []
    assert (await texter.http.get(f"/agents/conversations/{conversation_id}")).status_code == 403
    agent_media = MediaParty("agent", **SMALL)
    assert (await agent_media.negotiate(video.http, call["id"])).status_code == 200
    await wait_for_call(video.http, call["id"], "connected")
    await video.http.post(f"/video/calls/{call['id']}/hangup")
    texts = [m["text"] for m in (await customer.history())["messages"]]
    assert any("已接手" in t for t in texts), texts
    # The text agent's capacity came back: a new customer can be assigned to them.
    other, other_id = await escalated_customer(stack, emulator, "转人工")
    held = [c["conversation_id"] for c in (await texter.http.get("/agents/me/conversations")).json()]
    assert held == [other_id]
    for client in (customer_media, agent_media):
        await client.close()
    for client in (customer, other, texter, video, colleague):
        await client.aclose()


async def test_answering_a_queued_call_claims_the_conversation_and_only_once(video_stack, emulator):
    stack = video_stack()
    first = await video_agent(stack, presence="away")  # away: nothing is assigned to them automatically
    second = await video_agent(stack, presence="away")
    outsider = await video_agent(stack, presence="away", skills=("wealth",))
    customer, conversation_id = await escalated_customer(stack, emulator)
    call = await request_call(customer, conversation_id)
    customer_media = MediaParty("customer", **SMALL)
    await customer_media.negotiate(customer.http, call["id"])
    await wait_for_call(customer.http, call["id"], "ringing")
    assert [c["id"] for c in (await first.http.get("/video/calls", params={"state": "ringing"})).json()] == [call["id"]]
    assert (await outsider.http.get("/video/calls", params={"state": "ringing"})).json() == []
    assert (await outsider.http.post(f"/video/calls/{call['id']}/accept")).status_code == 403

    answers = await asyncio.gather(*(a.http.post(f"/video/calls/{call['id']}/accept") for a in (first, second)))
    assert sorted(r.status_code for r in answers) == [200, 409]
    winner = (first, second)[[r.status_code for r in answers].index(200)]
    view = (await winner.http.get(f"/agents/conversations/{conversation_id}")).json()
    assert view["conversation"]["state"] == "with_agent"
    assert view["handoff_card"]["mode"] == "video"
    assert any("已接入" in m["text"] for m in view["messages"])  # the routing engine's claim greeting

    # The customer cancels before the media connects: cancelled, and the conversation stays with the agent.
    cancelled = await customer.http.post(f"/video/calls/{call['id']}/hangup")
    assert cancelled.json()["state"] == "cancelled"
    await customer_media.close()
    assert (await customer.history())["conversation"]["state"] == "with_agent"
    for client in (customer, first, second, outsider):
        await client.aclose()


async def test_the_video_page_is_served_and_the_notice_is_public(video_stack):
    stack = video_stack()
    page = httpx.get(stack.app_url + "/h5/video/")
    assert page.status_code == 200 and "录音录像" in page.text
    notice = httpx.get(stack.app_url + "/video/notice").json()
    assert notice["version"] and "录音录像" in notice["text"]


async def test_a_call_from_the_bot_escalates_first_and_one_call_per_conversation(video_stack, emulator):
    stack = video_stack()
    from tests.support import MiniappCustomer

    customer = await MiniappCustomer.login(stack.app_url, emulator)
    await customer.say("你好")
    call = await request_call(customer, None)  # straight from the chat's 「视频客服」 button
    history = await customer.history()
    assert history["conversation"]["state"] == "queued"
    assert any(m["sender_kind"] == "customer" and m["text"] == "视频客服" for m in history["messages"])
    again = await request_call(customer, call["conversation_id"])  # the page reopened: same call, new consent
    assert again["id"] == call["id"]
    assert isinstance(datetime.fromisoformat(again["created_at"]), datetime)
    await customer.aclose()
