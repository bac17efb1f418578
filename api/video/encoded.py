"""The one place that reaches into aiortc: encoded frames out of a receiver, keyframe requests both ways.

Why a private hook. aiortc's `RTCRtpReceiver` does the hard part of receiving (SRTP, the jitter buffer that
reassembles frames, NACK and RTX, RTCP reports), then hands every reassembled, still-encoded frame to a decoder
thread through a private `queue.Queue` (`_RTCRtpReceiver__decoder_queue`, filled on the event loop in
`_handle_rtp_packet`). There is no public way to get that frame: the maintainers' answer to "record/forward
without decoding" has been that it isn't supported (aiortc issues #55, #420, #449, #984, still open for the
receiver in 1.16). Without it the server decodes every incoming frame and re-encodes it twice (for the other
party and for the recording): bench/video measured 0.57 server cores per recorded 640×480 call that way on
an idle box (0.7-0.8 in issue 11's trial); with it, one recorded call took 0.16 cores, all frames delivered
and recorded, on a box loaded by other jobs (docs/benchmarks.md, same command before and after).
What we touch, all of it here:

- `receiver._RTCRtpReceiver__decoder_queue` is replaced, before `receive()` starts the decoder thread, by an
  `EncodedTap`: `put((codec, frame))` hands the frame to our listeners instead; `put(None)` (the receiver
  stopping) still reaches the decoder thread, which ends and ends the receiver's track as before.
- `receiver._send_rtcp_pli(ssrc)`: ask the party's sender for a keyframe (PLI), for the SSRCs the public
  `getSynchronizationSources()` reports.
- `sender._send_keyframe`: wrapped per sender instance, so a PLI/FIR from the party we send to is heard
  (aiortc only acts on it when it encodes; when we forward packets it must go to the original sender).

`check()` runs when the module is imported: another aiortc version, or one of these names gone, fails the
server's start loudly instead of silently decoding nothing. tests/video/test_aiortc_hook.py checks the
behaviour with two real aiortc peers.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiortc
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from api.video.codecs import is_keyframe

log = logging.getLogger(__name__)

AIORTC_VERSION = "1.16.0"
QUEUE_ATTR = "_RTCRtpReceiver__decoder_queue"
STARTED_ATTR = "_RTCRtpReceiver__started"


def check() -> None:
    """Fail loudly if aiortc is not the version whose internals this module was written and measured against."""
    if aiortc.__version__ != AIORTC_VERSION:
        raise RuntimeError(
            f"api/video/encoded.py hooks aiortc {AIORTC_VERSION} internals; aiortc {aiortc.__version__} is installed: "
            "re-check rtcrtpreceiver.py/rtcrtpsender.py and tests/video/test_aiortc_hook.py, then update the pin"
        )
    for owner, name in (
        (RTCRtpReceiver, "_send_rtcp_pli"),
        (RTCRtpReceiver, "_handle_rtp_packet"),
        (RTCRtpSender, "_send_keyframe"),
    ):
        if not callable(getattr(owner, name, None)):
            raise RuntimeError(f"aiortc {aiortc.__version__}: {owner.__name__}.{name} is gone")


check()


@dataclass(slots=True)
class EncodedFrame:
    """One reassembled frame as the party sent it: codec payload bytes, RTP timestamp (unwrapped, from 0)."""

    kind: str
    codec: RTCRtpCodecParameters
    data: bytes
    timestamp: int
    keyframe: bool
    arrival: float  # time.monotonic() when it was complete

    @property
    def mime(self) -> str:
        return self.codec.mimeType.lower()


Listener = Callable[[EncodedFrame | None], None]


class EncodedTap:
    """Stands in for a receiver's decoder queue: frames go to listeners (None once, when the receiver stops)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.listeners: list[Listener] = []
        self.codec: RTCRtpCodecParameters | None = None
        self.ended = False
        self._thread_side: queue.Queue = queue.Queue()  # only the final None goes there (never blocks the loop)

    # Called by aiortc on the event loop (`_handle_rtp_packet`, and `__stop_decoder` with None).
    def put(self, item) -> None:
        if item is None:
            self._end()
            self._thread_side.put(None)
            return
        codec, jitter_frame = item
        self.codec = codec
        data = jitter_frame.data
        frame = EncodedFrame(
            self.kind, codec, data, jitter_frame.timestamp, is_keyframe(codec.mimeType.lower(), data), time.monotonic()
        )
        for listener in list(self.listeners):
            try:
                listener(frame)
            except Exception:  # one bad consumer must not stop the others or aiortc's receive path
                log.exception("encoded %s frame listener failed", self.kind)

    # Called by aiortc's decoder thread, which now only waits for the end.
    def get(self):
        return self._thread_side.get()

    def _end(self) -> None:
        if self.ended:
            return
        self.ended = True
        for listener in list(self.listeners):
            try:
                listener(None)
            except Exception:
                log.exception("encoded %s end listener failed", self.kind)


def tap(receiver: RTCRtpReceiver, kind: str) -> EncodedTap:
    """Take a receiver's encoded frames; call after setRemoteDescription, before the connection starts."""
    if getattr(receiver, STARTED_ATTR, True) or not isinstance(getattr(receiver, QUEUE_ATTR, None), queue.Queue):
        raise RuntimeError("the receiver already started (or aiortc changed): its frames can't be tapped")
    encoded = EncodedTap(kind)
    setattr(receiver, QUEUE_ATTR, encoded)
    return encoded


_sending: set[asyncio.Future] = set()  # PLIs on their way (kept so they aren't collected mid-send)


def request_keyframe(receiver: RTCRtpReceiver) -> int:
    """Send a PLI to the party's sender for every SSRC seen lately; the number of requests sent."""
    sources = receiver.getSynchronizationSources()
    for source in sources:
        task = asyncio.ensure_future(receiver._send_rtcp_pli(source.source))
        _sending.add(task)
        task.add_done_callback(_sending.discard)
    return len(sources)


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Also call `callback` when the party we send to asks for a keyframe (PLI or FIR)."""
    original = sender._send_keyframe

    def heard() -> None:
        original()
        callback()

    # A deliberate per-instance wrap of aiortc's private hook (see the module docstring); mypy forbids it.
    sender._send_keyframe = heard  # type: ignore[method-assign]
