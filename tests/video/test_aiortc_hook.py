"""The private aiortc hook (api/video/encoded.py) against the installed aiortc: a version guard, and its
behaviour with two real aiortc peers on loopback. If aiortc changes underneath, this fails first and loudly."""

from __future__ import annotations

import asyncio
import threading

import aiortc
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from api.video import codecs, encoded
from tests.video.clients import PatternVideoTrack
from tests.video.support import wait_until


def test_the_hook_refuses_another_aiortc_version(monkeypatch):
    encoded.check()  # the installed one is the one it was written for
    monkeypatch.setattr(aiortc, "__version__", "1.17.0")
    with pytest.raises(RuntimeError, match=r"aiortc 1\.16\.0 internals"):
        encoded.check()


async def test_encoded_frames_come_out_undecoded_and_keyframe_requests_go_both_ways():
    sender_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiver_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    video = PatternVideoTrack((200, 40, 40), width=320, height=240, fps=15)
    transceiver = sender_pc.addTransceiver(video, direction="sendonly")
    transceiver.setCodecPreferences(codecs.Choice(codecs.H264, "42e01f").preferences())
    heard = []
    encoded.on_keyframe_request(transceiver.sender, lambda: heard.append(True))
    try:
        await sender_pc.setLocalDescription(await sender_pc.createOffer())
        await receiver_pc.setRemoteDescription(sender_pc.localDescription)
        receiver = receiver_pc.getTransceivers()[0].receiver
        tap = encoded.tap(receiver, "video")
        frames: list = []
        tap.listeners.append(frames.append)
        await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
        await sender_pc.setRemoteDescription(receiver_pc.localDescription)

        await wait_until(lambda: len(frames) >= 10, 20, "encoded frames")
        first = frames[0]
        assert first.mime == codecs.H264 and first.keyframe and first.timestamp == 0
        assert codecs.picture_size(first.mime, first.data) == (320, 240)
        assert not frames[3].keyframe  # deltas follow; nothing was decoded to get them
        assert frames[5].timestamp > frames[4].timestamp
        assert receiver.track._queue.empty()  # aiortc's decoder got nothing to decode

        # A PLI from the receiver's side reaches the sender, which then sends a keyframe.
        seen = len(frames)
        assert encoded.request_keyframe(receiver) >= 1
        await wait_until(lambda: heard, 5, "the sender hearing the PLI")
        await wait_until(lambda: any(f.keyframe for f in frames[seen:]), 5, "a keyframe after the PLI")

        with pytest.raises(RuntimeError):  # once started, a receiver can't be tapped any more
            encoded.tap(receiver, "video")
    finally:
        await sender_pc.close()
        await receiver_pc.close()
    # Closing still ends the receiver's track (the decoder thread got its None through the tap) and the tap.
    await asyncio.sleep(0.1)
    assert frames[-1] is None and tap.ended
    assert receiver.track._queue.get_nowait() is None  # what ends the track for whoever reads it
    assert not [t for t in threading.enumerate() if t.name == "video-decoder"]
