"""Cheap call parties for the bench: they send a pre-encoded VP8 clip and count what they receive without
decoding it, so nearly all the CPU the bench sees is the server's."""

from __future__ import annotations

import asyncio
import fractions
import sys
import time
from pathlib import Path

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription, rtcrtpreceiver
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.video.clients import BITS, BLOCK, ToneAudioTrack

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)


def make_clip(
    *, seconds: int = 10, fps: int = 30, width: int = 640, height: int = 480, bitrate: int = 800_000
) -> list[bytes]:
    """A looping VP8 clip: a textured picture panning like a hand-held camera, numbered frames, keyframe each second."""
    rng = np.random.default_rng(7)
    small = rng.integers(40, 220, (height // 8 + 2, width // 8 + 40, 3), dtype=np.uint8)
    texture = np.kron(small, np.ones((8, 8, 1), dtype=np.uint8))  # blocky, then smoothed by the encoder's scaler
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.bit_rate, encoder.gop_size = bitrate, fps
    encoder.time_base = fractions.Fraction(1, fps)
    encoder.options = {"deadline": "good", "cpu-used": "4", "lag-in-frames": "0"}
    packets: list[bytes] = []
    frames = seconds * fps
    for i in range(frames):
        x = int(8 * 40 * (0.5 + 0.5 * np.sin(2 * np.pi * i / frames)))
        image = np.ascontiguousarray(texture[:height, x : x + width])
        for bit in range(BITS):
            image[0:BLOCK, bit * BLOCK : (bit + 1) * BLOCK] = 255 if (i >> bit) & 1 else 0
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        packets += [bytes(p) for p in encoder.encode(frame)]
    packets += [bytes(p) for p in encoder.encode(None)]
    return packets[:frames]


class ReplayVideoTrack(MediaStreamTrack):
    """Sends the clip's packets at `fps`, looping (each loop starts on a keyframe). Asked for a keyframe, it
    skips ahead to the clip's next one, as a browser's encoder answers a PLI with a keyframe at once."""

    kind = "video"

    def __init__(self, clip: list[bytes], fps: int) -> None:
        super().__init__()
        self.clip, self.fps = clip, fps
        self.sent = 0
        self.keyframes_requested = 0
        self._start: float | None = None
        self._keyframes = [i for i, data in enumerate(clip) if not data[0] & 1]  # VP8: frame type bit 0 = key
        self._skip = 0
        self._keyframe_wanted = False

    def request_keyframe(self) -> None:
        self.keyframes_requested += 1
        self._keyframe_wanted = True

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            await asyncio.sleep(max(0.0, self._start + self.sent / self.fps - time.monotonic()))
        index = (self.sent + self._skip) % len(self.clip)
        if self._keyframe_wanted:
            self._keyframe_wanted = False
            target = next((k for k in self._keyframes if k >= index), self._keyframes[0])
            self._skip += (target - index) % len(self.clip)
            index = target
        packet = av.Packet(self.clip[index])
        packet.pts, packet.time_base = round(self.sent * 90000 / self.fps), VIDEO_TIME_BASE
        self.sent += 1
        return packet


def install_counting_decoder() -> None:
    """In this process only: received media is handed on undecoded (the parties only count it)."""

    def counting_worker(loop, input_q, output_q, decode_error) -> None:
        while True:
            task = input_q.get()
            if task is None:
                asyncio.run_coroutine_threadsafe(output_q.put(None), loop)
                break
            asyncio.run_coroutine_threadsafe(output_q.put(task[1]), loop)

    rtcrtpreceiver.decoder_worker = counting_worker


class BenchParty:
    """One side of a call: the replayed clip and a tone out; frame counts in."""

    def __init__(self, clip: list[bytes], fps: int) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.video = ReplayVideoTrack(clip, fps)
        sender = self.pc.addTrack(self.video)
        # aiortc answers a PLI/FIR by calling the sender's `_send_keyframe`, which only reaches its own encoder;
        # pre-encoded packets bypass it, so the clip is told instead (a private hook, in the bench only).
        sender._send_keyframe = self.video.request_keyframe
        self.pc.addTrack(ToneAudioTrack())
        # The clip is VP8 and is sent as is: offer only VP8 (the server would otherwise pick H.264 for the call).
        vp8 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType in ("video/VP8", "video/rtx")]
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "video":
                transceiver.setCodecPreferences(vp8)
        self.video_received = 0
        self.audio_received = 0
        self.connected = asyncio.Event()
        self.first_video = asyncio.Event()
        self._readers: list[asyncio.Task] = []

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._readers.append(asyncio.ensure_future(self._count(track)))

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState == "connected":
                self.connected.set()

    async def _count(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            if track.kind == "video":
                self.video_received += 1
                self.first_video.set()
            else:
                self.audio_received += 1

    async def negotiate(self, http, call_id: int) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        response = await http.post(
            f"/video/calls/{call_id}/offer", json={"sdp": self.pc.localDescription.sdp, "type": "offer"}
        )
        assert response.status_code == 200, response.text
        await self.pc.setRemoteDescription(RTCSessionDescription(**response.json()))

    async def close(self) -> None:
        for task in self._readers:
            task.cancel()
        await self.pc.close()
