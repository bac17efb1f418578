"""A party's incoming media as encoded frames, and what the server sends the other party.

    party A ──RTP──▶ receiver ──EncodedTap──▶ Incoming ──▶ ForwardTrack ──▶ sender ──RTP──▶ party B
                                                 └──────▶ PartyRecorder (A's file)

`ForwardTrack.recv()` returns `av.Packet`s (aiortc's sender packetizes them as they are, no encoder) when
both connections use the same codec, which is the normal case (`codecs.choose`). Only when they don't does
it decode the frames (aiortc's own decoders, off the event loop) and hand pictures to the sender's encoder:
`transcoded` is set and ends up on the recordings.

Keyframes. A receiver can only start (or recover) at a keyframe, and the server has no encoder to make
one: a new or rejoining receiver, the recorder at its start, and every PLI/FIR the receiving party sends
are turned into a PLI to the party that sends (throttled). Until a keyframe arrives, a forward track
skips delta frames (counted), so the receiver never gets a picture it can't decode.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from fractions import Fraction

import av
from aiortc import RTCRtpReceiver
from aiortc.codecs import get_decoder
from aiortc.codecs.base import Decoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from api.video import encoded
from api.video.encoded import EncodedFrame, EncodedTap

log = logging.getLogger(__name__)

KEYFRAME_REQUEST_EVERY_S = 0.3  # at most this often per sender (PLIs come in bursts from a struggling decoder)
MAX_QUEUE = {"video": 30, "audio": 50}  # ~1 s: beyond it the receiver is too slow; skip to a fresh keyframe


class Incoming:
    """One party's incoming track (one kind) as encoded frames, handed to subscribers as they complete."""

    def __init__(self, kind: str, receiver: RTCRtpReceiver, tap: EncodedTap, negotiated: str | None) -> None:
        self.kind = kind
        self.negotiated = negotiated  # the codec the answer named; what arrives is what counts
        self.receiver = receiver
        self.tap = tap
        self.frames = 0
        self.keyframe_requests = 0
        self.subscribers: set = set()
        self._last_request = 0.0
        tap.listeners.append(self._on_frame)

    @property
    def mime(self) -> str | None:
        return self.tap.codec.mimeType.lower() if self.tap.codec else self.negotiated

    @property
    def ended(self) -> bool:
        return self.tap.ended

    def _on_frame(self, frame: EncodedFrame | None) -> None:
        if frame is not None:
            self.frames += 1
        for subscriber in list(self.subscribers):
            subscriber(self, frame)

    def request_keyframe(self, *, force: bool = False) -> None:
        if self.kind != "video" or self.ended:
            return
        now = time.monotonic()
        if force or now - self._last_request >= KEYFRAME_REQUEST_EVERY_S:
            self._last_request = now
            if encoded.request_keyframe(self.receiver):
                self.keyframe_requests += 1


class ForwardTrack(MediaStreamTrack):
    """What the server sends one party: the other party's frames once they arrive (and again after a rejoin)."""

    def __init__(self, kind: str, codec: str) -> None:
        super().__init__()
        self.kind = kind
        self.codec = codec  # what this party's connection negotiated, lower-case mime
        self.origin: Incoming | None = None
        self.frames = 0  # sent on (packets or decoded pictures)
        self.dropped = 0  # not sent: queue over its bound (slow receiver)
        self.skipped = 0  # delta frames while waiting for a keyframe
        self.transcoded = False  # ever had to decode and re-encode
        self.keyframe_requests_heard = 0
        self._queue: deque[EncodedFrame] = deque()
        self._ready = asyncio.Event()
        self._need_keyframe = kind == "video"
        self._decoder: tuple[str, Decoder] | None = None  # (the sender's mime, its decoder) while transcoding
        self._pending: deque = deque()  # decoded pictures not yet handed to the sender
        self._offset: int | None = None  # out timestamp = source timestamp + offset (continuous across rejoins)
        self._last_out: tuple[int, float] | None = None  # (timestamp, monotonic) of the last one sent
        self._clock = 90000 if kind == "video" else 48000
        self._pulling = False  # the sender has asked for a frame: its connection is up

    @property
    def relaying(self) -> bool:
        return self.origin is not None and self.origin.mime in (None, self.codec)

    def attach(self, source: Incoming) -> None:
        if self.origin is source:
            return
        self.detach()
        self.origin = source
        source.subscribers.add(self._on_frame)
        self._offset, self._need_keyframe, self._decoder = None, self.kind == "video", None
        self._queue.clear()
        source.request_keyframe(force=True)

    def detach(self) -> None:
        if self.origin is not None:
            self.origin.subscribers.discard(self._on_frame)
            self.origin = None

    def keyframe_requested(self) -> None:
        """The party we send to asked for a keyframe (PLI/FIR): pass it on, unless our encoder makes it."""
        self.keyframe_requests_heard += 1
        if self.origin is not None and self.relaying:
            self.origin.request_keyframe()

    def _on_frame(self, source: Incoming, frame: EncodedFrame | None) -> None:
        if frame is None:  # the sending party's connection is gone; wait for their rejoin
            if self.origin is source:
                self.detach()
            return
        if self.readyState != "live" or not self._pulling:
            return  # nobody to send to yet: nothing is lost, the first pull asks for a keyframe
        if self._need_keyframe and not frame.keyframe:
            self.skipped += 1
            source.request_keyframe()
            return
        self._need_keyframe = False
        if len(self._queue) >= MAX_QUEUE[self.kind]:
            self.dropped += len(self._queue)
            self._queue.clear()
            if self.kind == "video":  # the next frames would reference dropped ones
                self._need_keyframe = True
                self.dropped += 1
                source.request_keyframe()
                return
        self._queue.append(frame)
        self._ready.set()

    async def recv(self):
        if not self._pulling:
            self._pulling = True
            if self.origin is not None:
                self.origin.request_keyframe(force=True)
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            if self._pending:
                self.frames += 1
                return self._pending.popleft()
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
                continue
            frame = self._queue.popleft()
            if frame.mime == self.codec:
                self.frames += 1
                return self._packet(frame)
            self.transcoded = True
            self._pending.extend(await self._decode(frame))

    def _packet(self, frame: EncodedFrame) -> av.Packet:
        clock = frame.codec.clockRate or self._clock
        if self._offset is None:  # first frame from this source: carry on from where the last one left off
            start = 0
            if self._last_out is not None:
                start = self._last_out[0] + max(1, round((time.monotonic() - self._last_out[1]) * clock))
            self._offset = start - frame.timestamp
        timestamp = frame.timestamp + self._offset
        if self._last_out is not None and timestamp < self._last_out[0]:
            timestamp = self._last_out[0]
        self._last_out = (timestamp, time.monotonic())
        packet = av.Packet(frame.data)
        packet.pts, packet.time_base = timestamp, Fraction(1, clock)
        return packet

    async def _decode(self, frame: EncodedFrame) -> list:
        """Transcoding: this party can't take the sender's codec; decode (off the loop) for our encoder."""
        if self._decoder is None or self._decoder[0] != frame.mime:
            log.warning("%s relay: %s → %s, transcoding this call's media", self.kind, frame.mime, self.codec)
            self._decoder = (frame.mime, get_decoder(frame.codec))
        decoder = self._decoder[1]
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, decoder.decode, JitterFrame(frame.data, frame.timestamp)
            )
        except (av.FFmpegError, ValueError):
            self.dropped += 1
            if self.origin is not None:
                self.origin.request_keyframe()
            return []

    def stop(self) -> None:
        super().stop()
        self.detach()
        self._ready.set()
