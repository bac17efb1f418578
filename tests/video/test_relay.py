"""Relay and recording without re-encoding, through the real API with two aiortc peers: the bytes a party
sends are the bytes in their file; the call's codec is negotiated (H.264, else VP8); without a common codec
the call is transcoded and says so; a receiver's keyframe request reaches the sender; a recording with a
hole in it is `degraded`, not `complete`."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import av

from api.video import codecs, encoded
from tests.video.clients import COLOURS, MediaParty, PausingVideoTrack, ReplayVideoTrack, looks_like, make_clip
from tests.video.support import (
    decrypted,
    escalated_customer,
    request_call,
    video_agent,
    wait_for_call,
    wait_for_recordings,
    wait_until,
)

SMALL = dict(width=320, height=240, fps=15)
# The replayed clips can't answer the recorder's keyframe request, so their keyframes come every third of a
# second; with a keyframe a second, a loaded box saw the first one arrive past the recording's 1-s gap bound.
KEY_EVERY = 5


async def connect_call(stack, emulator, customer_media: MediaParty, agent_media: MediaParty):
    agent = await video_agent(stack, skills=("accounts", "general"))
    customer, conversation_id = await escalated_customer(stack, emulator, "修改预留手机号")
    call = await request_call(customer, conversation_id)
    assert (await customer_media.negotiate(customer.http, call["id"])).status_code == 200
    await wait_for_call(customer.http, call["id"], "ringing")
    assert (await agent.http.post(f"/video/calls/{call['id']}/accept")).status_code == 200
    assert (await agent_media.negotiate(agent.http, call["id"])).status_code == 200
    await wait_for_call(agent.http, call["id"], "connected")
    return customer, agent, call["id"]


async def hang_up(customer, agent, call_id, *parties) -> dict[str, dict]:
    assert (await customer.http.post(f"/video/calls/{call_id}/hangup")).status_code == 200
    for party in parties:
        await party.close()
    recordings = {r["party"]: r for r in await wait_for_recordings(agent, call_id)}
    for client in (customer, agent):
        await client.aclose()
    return recordings


def file_of(stack, recording: dict) -> Path:
    [path] = [p for p in Path(stack.recordings_dir).rglob(f"call-{recording['call_id']}-{recording['party']}-*")]
    return path


def video_packets(path: Path) -> list[av.Packet]:
    with av.open(decrypted(path)) as container:
        return [bytes(p) for p in container.demux(video=0) if p.size]


def avcc_units(data: bytes) -> list[bytes]:
    units, i = [], 0
    while i + 4 <= len(data):
        n = int.from_bytes(data[i : i + 4], "big")
        units.append(data[i + 4 : i + 4 + n])
        i += 4 + n
    return units


def assert_clip_in_file(clip: list[bytes], stored: list[bytes], same) -> None:
    """The file's frames are consecutive frames of the clip, byte for byte (as `same` compares them)."""
    start = next(k for k, packet in enumerate(clip) if same(packet, stored[0]))
    for i, packet in enumerate(stored):
        assert same(clip[(start + i) % len(clip)], packet), f"file frame {i} is not clip frame {start + i}"


async def test_h264_is_relayed_and_recorded_as_sent_and_a_receivers_keyframe_request_reaches_the_sender(
    video_stack, emulator
):
    stack = video_stack()
    clip = make_clip("h264", COLOURS["customer"], fps=15, keyframe_every=KEY_EVERY)
    customer_media = MediaParty("customer", video=ReplayVideoTrack(clip, fps=15))
    agent_media = MediaParty("agent", **SMALL)
    requests_heard = []
    video_sender = next(t.sender for t in customer_media.pc.getTransceivers() if t.kind == "video")
    encoded.on_keyframe_request(video_sender, lambda: requests_heard.append(True))
    customer, agent, call_id = await connect_call(stack, emulator, customer_media, agent_media)
    sent_at_connect = customer_media.video.sent

    # The agent sees the customer's picture (decoded only at the agent). Its order is checked in the file below:
    # the clip loops every 4 s, so the numbers the agent reads restart.
    await wait_until(lambda: len(agent_media.received) > 20 and len(customer_media.received) > 20, 15, "relayed")
    assert all(looks_like(colour, "customer") for colour, _ in agent_media.received[-10:])

    # A keyframe request (PLI) from the agent's side goes to the customer's sender, not into a server encoder.
    await asyncio.sleep(1.5)  # the call has settled: the recorder and the relay have their keyframes
    agent_receiver = next(t.receiver for t in agent_media.pc.getTransceivers() if t.kind == "video")
    before = len(requests_heard)
    for _ in range(3):
        assert encoded.request_keyframe(agent_receiver) >= 1
        await asyncio.sleep(0.5)
    await wait_until(lambda: len(requests_heard) >= before + 3, 5, "the PLIs at the customer's sender")

    await asyncio.sleep(1)
    # The recording started before this test saw the call connected (polling, a loaded box): received frames
    # lie between what was sent after we saw it and everything the customer ever sent.
    sent, sent_total = customer_media.video.sent - sent_at_connect, customer_media.video.sent
    recordings = await hang_up(customer, agent, call_id, customer_media, agent_media)
    mine = recordings["customer"]
    assert mine["status"] == "complete", (mine["issues"], mine["frames"], mine["av_offset_s"])
    assert (mine["video_codec"], mine["audio_codec"], mine["content_type"]) == ("video/h264", "audio/opus", "video/mp4")
    assert mine["transcoded"] is False and recordings["agent"]["transcoded"] is False
    assert mine["gaps"] == [] and abs(mine["av_offset_s"]) <= 0.5 and mine["issues"] == []
    frames = mine["frames"]
    assert mine["frames_received"] == mine["frames_written"] + frames["skipped_before_keyframe"]
    assert frames["dropped"] == {"audio": 0, "video": 0}
    assert frames["skipped_before_keyframe"] <= 2 * KEY_EVERY  # the clip's next keyframe, or the one after

    # The file holds exactly what was written, and it is the clip's H.264, NAL unit for NAL unit.
    stored = video_packets(file_of(stack, mine))
    assert len(stored) == mine["frames_written"] == frames["in_file"]["video"]
    assert sent - 3 <= mine["frames_received"] <= sent_total, (mine["frames_received"], sent, sent_total)
    assert_clip_in_file(clip, stored, lambda a, b: codecs.h264_nal_units(a) == avcc_units(b))
    with av.open(decrypted(file_of(stack, mine))) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert (container.streams.video[0].codec_context.width, container.streams.video[0].codec_context.height) == (
            320,
            240,
        )
        assert sum(1 for _ in container.decode(video=0)) == len(stored)  # every frame decodes: it starts on a key
    assert recordings["agent"]["status"] == "complete" and recordings["agent"]["video_codec"] == "video/h264"


async def test_a_party_without_h264_gets_vp8_for_the_call_recorded_as_webm_as_sent(video_stack, emulator):
    stack = video_stack()
    clip = make_clip("vp8", COLOURS["customer"], fps=15, keyframe_every=KEY_EVERY)
    customer_media = MediaParty("customer", video=ReplayVideoTrack(clip, fps=15), video_codecs=("video/VP8",))
    agent_media = MediaParty("agent", **SMALL)  # offers H.264 and VP8: answered with the call's VP8
    customer, agent, call_id = await connect_call(stack, emulator, customer_media, agent_media)
    await wait_until(lambda: len(agent_media.received) > 20 and len(customer_media.received) > 20, 15, "relayed")
    assert all(looks_like(colour, "customer") for colour, _ in agent_media.received[-10:])
    await asyncio.sleep(2)
    recordings = await hang_up(customer, agent, call_id, customer_media, agent_media)
    for party, recording in recordings.items():
        assert recording["status"] == "complete", (
            party,
            recording["issues"],
            recording["frames"],
            recording["av_offset_s"],
        )
        assert (recording["video_codec"], recording["content_type"]) == ("video/vp8", "video/webm"), party
        assert recording["transcoded"] is False
    stored = video_packets(file_of(stack, recordings["customer"]))
    assert file_of(stack, recordings["customer"]).name.endswith(".webm.sealed")
    assert len(stored) == recordings["customer"]["frames_written"]
    assert_clip_in_file(clip, stored, lambda a, b: a == b)


async def test_parties_without_a_common_codec_are_transcoded_and_the_recordings_say_so(video_stack, emulator):
    stack = video_stack()
    customer_media = MediaParty("customer", **SMALL, video_codecs=("video/H264",))
    agent_media = MediaParty("agent", **SMALL, video_codecs=("video/VP8",))
    customer, agent, call_id = await connect_call(stack, emulator, customer_media, agent_media)
    await wait_until(lambda: len(agent_media.received) > 20 and len(customer_media.received) > 20, 20, "transcoded")
    assert all(looks_like(colour, "customer") for colour, _ in agent_media.received[-10:])
    assert all(looks_like(colour, "agent") for colour, _ in customer_media.received[-10:])
    recordings = await hang_up(customer, agent, call_id, customer_media, agent_media)
    assert recordings["customer"]["video_codec"] == "video/h264" and recordings["agent"]["video_codec"] == "video/vp8"
    assert recordings["customer"]["transcoded"] is True and recordings["agent"]["transcoded"] is True
    assert {r["status"] for r in recordings.values()} <= {"complete", "degraded"}  # evidence kept either way


async def test_a_recording_with_a_frozen_camera_is_degraded_with_the_gap_and_listed_so(video_stack, emulator):
    stack = video_stack()
    supervisor = await video_agent(stack, presence="away", role="supervisor")
    frozen = PausingVideoTrack(COLOURS["customer"], after=45, pause_s=1.8, width=320, height=240, fps=15)
    customer_media = MediaParty("customer", video=frozen)
    agent_media = MediaParty("agent", **SMALL)
    customer, agent, call_id = await connect_call(stack, emulator, customer_media, agent_media)
    await wait_until(lambda: frozen.sent > 45 + 30, 20, "the camera back after freezing")
    recordings = await hang_up(customer, agent, call_id, customer_media, agent_media)
    mine = recordings["customer"]
    assert mine["status"] == "degraded", mine
    video_gaps = [g for g in mine["gaps"] if g["kind"] == "video"]
    assert len(video_gaps) == 1 and 1.3 <= video_gaps[0]["length_s"] <= 2.6, mine["gaps"]
    assert any("video gap" in issue for issue in mine["issues"])
    assert recordings["agent"]["status"] == "complete", recordings["agent"]
    listed = await supervisor.http.get("/video/recordings", params={"call_id": call_id, "status": "degraded"})
    assert [r["party"] for r in listed.json()] == ["customer"]
    await supervisor.aclose()


async def test_a_media_worker_that_hears_the_hang_up_late_adds_no_silent_tail_to_the_recordings(video_stack, emulator):
    """The parties stop sending as the call ends; a busy media worker may get to the `close` seconds later. The
    silence after the hang-up is not the call's, so it is no gap (before, both files were judged degraded)."""
    stack = video_stack(video_peer_grace_s=10)  # the parties' own closing doesn't end the call first
    customer_media, agent_media = MediaParty("customer", **SMALL), MediaParty("agent", **SMALL)
    customer, agent, call_id = await connect_call(stack, emulator, customer_media, agent_media)
    await wait_until(lambda: len(agent_media.received) > 20 and len(customer_media.received) > 20, 15, "relayed")
    await asyncio.sleep(1)
    await customer_media.close()
    await agent_media.close()
    await asyncio.sleep(0.3)  # the worker has every frame sent
    worker = stack.media[0].process
    os.kill(worker.pid, signal.SIGSTOP)  # busy: it hears the hang-up only 2 s after it was made
    try:
        assert (await customer.http.post(f"/video/calls/{call_id}/hangup")).status_code == 200
        await asyncio.sleep(2)
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    recordings = {r["party"]: r for r in await wait_for_recordings(agent, call_id)}
    for party, recording in recordings.items():
        assert recording["status"] == "complete", (party, recording["issues"], recording["gaps"])
        assert recording["has_audio"] and recording["has_video"], party
    for client in (customer, agent):
        await client.aclose()
