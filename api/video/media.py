"""The media of one call in this worker: a server-side peer connection per party, the relay between them,
and a recorder per party. No SQL here: state changes are reported to a callback (the registry).

    customer ──RTP──▶ [pc customer] ── CountingTrack ──▶ MediaRelay ──▶ ForwardTrack ──▶ [pc agent] ──▶ agent
                                                              └──────▶ PartyRecorder("customer") ──▶ .mp4
    (and the same the other way round)

Every incoming track is read from the moment its party is wired — by the recorder, which discards frames
until the call is connected — so nothing ever queues in aiortc's receive queues. What goes to the other
party is unbuffered (`buffered=False`) for video: a live picture shows the newest frame, and a slow sender
skips frames instead of falling behind; audio is buffered so bursts from the jitter buffer aren't cut.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription, rtp
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from api.errors import BadRequest
from api.video.recorder import PartyRecorder, RecordingResult

log = logging.getLogger(__name__)

ROLES = ("customer", "agent")
KINDS = ("audio", "video")
StateCallback = Callable[[int, str, str], None]


def audio_level_dbov(frame) -> int:
    """aiortc's `rtp.compute_audio_level_dbov` (RFC 6465, Appendix A), vectorized, same result.

    aiortc runs it on the event loop for every audio frame it sends, as a Python loop over the samples
    (~0.4 ms per 20 ms frame). Relaying audio both ways in several calls, that alone starved the loop
    until video frames were skipped (bench/video); with numpy it is ~20 µs.
    """
    # Integers, like the original: exact, and no BLAS (a float dot wakes OpenBLAS's spinning threads).
    samples = np.frombuffer(bytes(frame.planes[0]), dtype=np.int16).astype(np.int64)
    rms = math.sqrt(int(np.dot(samples, samples)) / (frame.samples * 32767 * 32767))
    if rms <= 0:
        return -127
    return round(min(max(20 * math.log10(rms), -127), 0))


rtp.compute_audio_level_dbov = audio_level_dbov


def other(role: str) -> str:
    return "agent" if role == "customer" else "customer"


class CountingTrack(MediaStreamTrack):
    """A party's incoming track as the relay sees it; counts frames (for the bench and the evidence row)."""

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source
        self.frames = 0

    async def recv(self):
        frame = await self.source.recv()
        self.frames += 1
        return frame

    def stop(self) -> None:
        super().stop()
        self.source.stop()


class ForwardTrack(MediaStreamTrack):
    """What the server sends one party: the other party's media once it has arrived (and again if they rejoin).

    Until then it simply waits: the connection comes up, and the picture appears when the other side does.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.origin: MediaStreamTrack | None = None
        self.frames = 0
        self._source: MediaStreamTrack | None = None
        self._ready = asyncio.Event()

    def attach(self, source: MediaStreamTrack, origin: MediaStreamTrack) -> None:
        # The previous source (if any) belongs to a connection that is closing: it ends by itself, which
        # also wakes a `recv` still waiting on it (stopping it here would leave that `recv` hanging).
        self._source, self.origin = source, origin
        self._ready.set()

    async def recv(self):
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            source = self._source
            if source is None:
                self._ready.clear()
                await self._ready.wait()
                continue
            try:
                frame = await source.recv()
            except MediaStreamError:
                if self._source is source:  # the other party left; wait for them to rejoin
                    self._source = self.origin = None
                continue
            self.frames += 1
            return frame

    def stop(self) -> None:
        super().stop()
        if self._source is not None:
            self._source.stop()
        self._ready.set()


@dataclass
class PartyLink:
    """One party's server-side peer connection and its tracks."""

    role: str
    pc: RTCPeerConnection
    incoming: dict[str, CountingTrack] = field(default_factory=dict)
    outgoing: dict[str, ForwardTrack] = field(default_factory=dict)
    extra: list[asyncio.Task] = field(default_factory=list)

    @property
    def state(self) -> str:
        return self.pc.connectionState

    async def close(self) -> None:
        for task in self.extra:
            task.cancel()
        for track in [*self.incoming.values(), *self.outgoing.values()]:
            track.stop()
        await self.pc.close()


def ice_configuration(ice_servers: list[dict]) -> RTCConfiguration:
    """Always an explicit list: with none, aiortc would ask Google's public STUN server and stall offline."""
    return RTCConfiguration(iceServers=[RTCIceServer(**server) for server in ice_servers])


async def _drain(track: MediaStreamTrack) -> None:
    """Read and drop a track we don't use (a second camera, say), so its frames don't pile up."""
    try:
        while True:
            await track.recv()
    except MediaStreamError:
        return


class CallMedia:
    """Peer connections, relay and recorders of one call; `on_state(call_id, role, state)` hears every change."""

    def __init__(self, call_id: int, *, ice_servers: list[dict], on_state: StateCallback) -> None:
        self.call_id = call_id
        self.ice_servers = ice_servers
        self.on_state = on_state
        self.relay = MediaRelay()
        self.links: dict[str, PartyLink] = {}
        self.recorders = {role: PartyRecorder(f"{call_id}-{role}") for role in ROLES}
        self.closing = False
        self._wired: set[MediaStreamTrack] = set()

    def connected(self, role: str) -> bool:
        link = self.links.get(role)
        return link is not None and link.state == "connected"

    def both_connected(self) -> bool:
        return all(self.connected(role) for role in ROLES)

    async def answer(self, role: str, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Take a party's offer (a first one, or a rejoin that replaces their old connection); return our answer."""
        if self.closing:
            raise BadRequest("this call is ending", code="call_ending")
        pc = RTCPeerConnection(ice_configuration(self.ice_servers))
        link = PartyLink(role, pc)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind in KINDS and track.kind not in link.incoming:
                link.incoming[track.kind] = CountingTrack(track)
            else:
                link.extra.append(asyncio.ensure_future(_drain(track)))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if self.links.get(role) is link and not self.closing:
                self.on_state(self.call_id, role, pc.connectionState)

        try:
            await pc.setRemoteDescription(offer)
            for transceiver in pc.getTransceivers():
                if transceiver.kind in KINDS and transceiver.kind not in link.outgoing:
                    link.outgoing[transceiver.kind] = forward = ForwardTrack(transceiver.kind)
                    pc.addTrack(forward)
            if not link.outgoing:
                raise BadRequest("the offer has no audio or video", code="bad_sdp")
            await pc.setLocalDescription(await pc.createAnswer())
        except BadRequest:
            await link.close()
            raise
        except Exception as exc:  # aiortc raises ValueError, AssertionError, KeyError… on malformed SDP
            await link.close()
            raise BadRequest(f"the SDP offer could not be used: {type(exc).__name__}: {exc}", code="bad_sdp") from exc
        previous = self.links.get(role)
        self.links[role] = link
        if previous is not None:
            await previous.close()
        self._wire()
        return pc.localDescription

    def _wire(self) -> None:
        """Connect every incoming track to its party's recorder and to the other party, once each."""
        for role, link in self.links.items():
            peer = self.links.get(other(role))
            for kind, track in link.incoming.items():
                if track not in self._wired:
                    self._wired.add(track)
                    self.recorders[role].feed(kind, self.relay.subscribe(track, buffered=True))
                forward = peer.outgoing.get(kind) if peer else None
                if forward is not None and forward.origin is not track:
                    forward.attach(self.relay.subscribe(track, buffered=(kind == "audio")), origin=track)

    async def start_recording(self, paths: dict[str, Path]) -> dict[str, str | None]:
        """Start each party's file; per role None when it started, else why not."""
        if self.closing:
            return {role: "the call is ending" for role in paths}
        outcome: dict[str, str | None] = {}
        for role, path in paths.items():
            try:
                await self.recorders[role].start(path)
                outcome[role] = None
            except Exception as exc:  # a disk error must not take the call down; the row is flagged
                log.error("call %s: %s recording did not start: %s", self.call_id, role, exc)
                outcome[role] = f"{type(exc).__name__}: {exc}"
        return outcome

    def stats(self) -> dict[str, dict]:
        """Frames in, forwarded and recorded per party and kind (what the bench reads)."""
        result = {}
        for role in ROLES:
            link, peer = self.links.get(role), self.links.get(other(role))
            recorder = self.recorders[role]
            result[role] = {
                kind: {
                    "in": link.incoming[kind].frames if link and kind in link.incoming else 0,
                    "forwarded": peer.outgoing[kind].frames if peer and kind in peer.outgoing else 0,
                    "recorded": recorder.frames_recorded[kind],
                    "dropped": recorder.frames_dropped[kind],
                }
                for kind in KINDS
            }
        return result

    async def close(self) -> dict[str, RecordingResult | None]:
        """Stop recording (files flushed and measured), then close both connections."""
        self.closing = True
        results = dict(zip(ROLES, await asyncio.gather(*(self.recorders[r].stop() for r in ROLES)), strict=False))
        await asyncio.gather(*(link.close() for link in self.links.values()), return_exceptions=True)
        return results
