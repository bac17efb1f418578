"""Media endpoints for the video tests and the bench: aiortc clients with generated audio and video.

Each party's video is a solid colour (customer red, agent blue) with the frame number written as 12
black/white blocks across the top, big enough to survive VP8 compression; its audio is a sine tone. A
receiver can tell whose frames it gets and which ones.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time

import av
import httpx
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import AUDIO_PTIME, MediaStreamError, MediaStreamTrack, VideoStreamTrack

COLOURS = {"customer": (200, 40, 40), "agent": (40, 40, 200)}
BITS, BLOCK = 12, 32


class PatternVideoTrack(VideoStreamTrack):
    """Numbered frames in the party's colour at `fps`."""

    def __init__(self, colour: tuple[int, int, int], *, width: int = 640, height: int = 480, fps: int = 30) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self.base = np.empty((height, width, 3), dtype=np.uint8)
        self.base[:] = colour
        self.sent = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            await asyncio.sleep(max(0.0, self._start + self.sent / self.fps - time.monotonic()))
        image = self.base.copy()
        for bit in range(BITS):
            value = 255 if (self.sent >> bit) & 1 else 0
            image[0:BLOCK, bit * BLOCK : (bit + 1) * BLOCK] = value
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = round(self.sent * 90000 / self.fps), fractions.Fraction(1, 90000)
        self.sent += 1
        return frame


class ToneAudioTrack(MediaStreamTrack):
    """A sine tone, 20 ms per frame, 48 kHz mono s16."""

    kind = "audio"

    def __init__(self, hz: float = 440.0) -> None:
        super().__init__()
        self.hz = hz
        self.samples = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        rate, n = 48000, int(48000 * AUDIO_PTIME)
        if self._start is None:
            self._start = time.monotonic()
        else:
            await asyncio.sleep(max(0.0, self._start + self.samples / rate - time.monotonic()))
        t = (np.arange(n) + self.samples) / rate
        data = (np.sin(2 * math.pi * self.hz * t) * 8000).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, self.samples, fractions.Fraction(1, rate)
        self.samples += n
        return frame


def make_clip(
    codec: str,
    colour: tuple[int, int, int],
    *,
    seconds: int = 4,
    fps: int = 15,
    width: int = 320,
    height: int = 240,
    keyframe_every: int | None = None,
) -> list[bytes]:
    """Pre-encoded numbered frames in `codec` ("h264" or "vp8"), a keyframe every `keyframe_every` frames (a
    second by default): what a replayed sender sends, byte for byte, so a test can find those exact bytes in the
    recording. A replayed clip can't answer a keyframe request, so a call's test that wants its recording to
    start without a gap uses short groups, as a browser answering the request at once would."""
    encoder = av.CodecContext.create("libx264" if codec == "h264" else "libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base, encoder.gop_size = fractions.Fraction(1, fps), keyframe_every or fps
    if codec == "h264":
        encoder.profile, encoder.options = "Baseline", {"tune": "zerolatency", "preset": "veryfast"}
    else:
        encoder.options = {"deadline": "realtime", "lag-in-frames": "0"}
    packets: list[bytes] = []
    base = np.empty((height, width, 3), dtype=np.uint8)
    base[:] = colour
    for i in range(seconds * fps):
        image = base.copy()
        for bit in range(BITS):
            image[0:BLOCK, bit * BLOCK : (bit + 1) * BLOCK] = 255 if (i >> bit) & 1 else 0
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        packets += [bytes(p) for p in encoder.encode(frame)]
    packets += [bytes(p) for p in encoder.encode(None)]
    return packets[: seconds * fps]


class ReplayVideoTrack(MediaStreamTrack):
    """Sends a pre-encoded clip's packets at `fps`, looping; aiortc's sender packetizes them without encoding."""

    kind = "video"

    def __init__(self, clip: list[bytes], fps: int = 15) -> None:
        super().__init__()
        self.clip, self.fps = clip, fps
        self.sent = 0
        self._start: float | None = None

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            await asyncio.sleep(max(0.0, self._start + self.sent / self.fps - time.monotonic()))
        packet = av.Packet(self.clip[self.sent % len(self.clip)])
        packet.pts, packet.time_base = round(self.sent * 90000 / self.fps), fractions.Fraction(1, 90000)
        self.sent += 1
        return packet


class PausingVideoTrack(PatternVideoTrack):
    """A camera that freezes once (no frames at all) for `pause_s` after `after` frames, then goes on."""

    def __init__(self, colour, *, after: int, pause_s: float, **kwargs) -> None:
        super().__init__(colour, **kwargs)
        self.after, self.pause_s = after, pause_s

    async def recv(self) -> av.VideoFrame:
        if self.sent == self.after and self._start is not None:
            await asyncio.sleep(self.pause_s)
            self._start += self.pause_s
        return await super().recv()


def read_pattern(frame: av.VideoFrame) -> tuple[tuple[int, int, int], int]:
    """The dominant colour (below the number blocks) and the frame number of a received frame."""
    image = frame.to_ndarray(format="rgb24")
    scale = image.shape[1] / 640
    body = image[int(BLOCK * 2 * scale) :, :, :]
    colour = tuple(int(c) for c in body.reshape(-1, 3).mean(axis=0))
    number = 0
    for bit in range(BITS):
        x0, x1 = int((bit * BLOCK + 6) * scale), int(((bit + 1) * BLOCK - 6) * scale)
        block = image[int(6 * scale) : int((BLOCK - 6) * scale), x0:x1]
        if block.mean() > 128:
            number |= 1 << bit
    return colour, number


def looks_like(colour: tuple[int, int, int], party: str, tolerance: int = 45) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour, COLOURS[party], strict=False))


class MediaParty:
    """One side of a call: an aiortc peer connection sending generated media and reading what comes back."""

    def __init__(
        self,
        role: str,
        *,
        fps: int = 30,
        width: int = 640,
        height: int = 480,
        audio: bool = True,
        video: MediaStreamTrack | None = None,
        video_codecs: tuple[str, ...] = (),
        configuration: RTCConfiguration | None = None,
    ) -> None:
        self.role = role
        self.pc = RTCPeerConnection(configuration or RTCConfiguration(iceServers=[]))
        self.video = video or PatternVideoTrack(COLOURS[role], width=width, height=height, fps=fps)
        self.audio = ToneAudioTrack(440 if role == "customer" else 660) if audio else None
        self.received: list[tuple[tuple[int, int, int], int]] = []
        self.audio_frames = 0
        self.first_video_at: float | None = None
        self.connected = asyncio.Event()
        self._readers: list[asyncio.Task] = []
        self.pc.addTrack(self.video)
        if self.audio is not None:
            self.pc.addTrack(self.audio)
        if video_codecs:  # offer only these (e.g. "video/VP8"), like a browser without H.264
            capabilities = RTCRtpSender.getCapabilities("video").codecs
            preferred = [c for c in capabilities if c.mimeType in video_codecs or c.mimeType == "video/rtx"]
            for transceiver in self.pc.getTransceivers():
                if transceiver.kind == "video":
                    transceiver.setCodecPreferences(preferred)

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._readers.append(asyncio.ensure_future(self._read(track)))

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState == "connected":
                self.connected.set()

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if track.kind == "video":
                if self.first_video_at is None:
                    self.first_video_at = time.monotonic()
                # Decoding the pattern is cheap, but keep only a sample to bound memory in long runs.
                if len(self.received) < 2000:
                    self.received.append(read_pattern(frame))
            else:
                self.audio_frames += 1

    async def offer(self) -> dict:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return {"sdp": self.pc.localDescription.sdp, "type": self.pc.localDescription.type}

    async def negotiate(self, http: httpx.AsyncClient, call_id: int) -> httpx.Response:
        """POST our offer to the call and apply the server's answer."""
        response = await http.post(f"/video/calls/{call_id}/offer", json=await self.offer())
        if response.status_code == 200:
            body = response.json()
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
        return response

    async def close(self) -> None:
        for task in self._readers:
            task.cancel()
        await self.pc.close()
