"""The media of one call in this worker: a server-side peer connection per party, the relay between them,
and a recorder per party. No SQL here: state changes are reported to a callback (the registry).

    customer ──RTP──▶ [pc customer] ── Incoming (encoded) ──▶ ForwardTrack ──▶ [pc agent] ──▶ agent
                                              └──────────▶ PartyRecorder("customer") ──▶ .mp4 / .webm
    (and the same the other way round)

Nothing is decoded or re-encoded on the normal path: each party's reassembled frames (`encoded.py`) are
handed as `av.Packet`s to the other party's sender, which packetizes them as they are, and muxed into the
party's file. Both connections are answered with the same codec (`codecs.choose`: the first offer picks
H.264 constrained baseline, else VP8; Opus for audio). Only a party that can't take the call's codec costs
a decode and an encode, for their direction only (`ForwardTrack.transcoded`, stated on the recordings).
Keyframe requests (PLI/FIR) from a receiver go to the sending party; so do the forward tracks' and the
recorders' own (a new receiver, a file's start).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription, rtp

from api.errors import BadRequest
from api.video import codecs, encoded
from api.video.recorder import PartyRecorder, RecordingResult
from api.video.relay import ForwardTrack, Incoming

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


@dataclass
class PartyLink:
    """One party's server-side peer connection: what comes in (encoded) and what goes out."""

    role: str
    pc: RTCPeerConnection
    incoming: dict[str, Incoming] = field(default_factory=dict)
    outgoing: dict[str, ForwardTrack] = field(default_factory=dict)
    codecs: dict[str, str] = field(default_factory=dict)  # kind → what the answer negotiated

    @property
    def state(self) -> str:
        return self.pc.connectionState

    async def close(self) -> None:
        for track in self.outgoing.values():
            track.stop()
        await self.pc.close()


def ice_configuration(ice_servers: list[dict]) -> RTCConfiguration:
    """Always an explicit list: with none, aiortc would ask Google's public STUN server and stall offline."""
    return RTCConfiguration(iceServers=[RTCIceServer(**server) for server in ice_servers])


class CallMedia:
    """Peer connections, relay and recorders of one call; `on_state(call_id, role, state)` hears every change.

    Public interface (what the registry, or a media worker hosting it, uses): `answer`, `connected`,
    `both_connected`, `start_recording`, `recording_formats`, `recorders[role].kinds`, `stats`, `close`,
    `links`, `closing`, `video_codec`, `transcoding`.
    """

    def __init__(self, call_id: int, *, ice_servers: list[dict], on_state: StateCallback) -> None:
        self.call_id = call_id
        self.ice_servers = ice_servers
        self.on_state = on_state
        self.links: dict[str, PartyLink] = {}
        self.recorders = {role: PartyRecorder(f"{call_id}-{role}") for role in ROLES}
        self.closing = False
        self.video_codec: str | None = None  # the call's codec: the first offer's pick, kept for later offers

    @property
    def transcoding(self) -> bool:
        """Whether any media of this call has had to be decoded and re-encoded (no common codec)."""
        return any(track.transcoded for link in self.links.values() for track in link.outgoing.values())

    def connected(self, role: str) -> bool:
        link = self.links.get(role)
        return link is not None and link.state == "connected"

    def both_connected(self) -> bool:
        return all(self.connected(role) for role in ROLES)

    async def answer(self, role: str, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Take a party's offer (a first one, or a rejoin that replaces their old connection); return our answer."""
        if self.closing:
            raise BadRequest("this call is ending", code="call_ending")
        try:
            offered = codecs.offered_media(offer.sdp)
        except Exception as exc:  # aiortc's parser raises ValueError, IndexError, KeyError… on malformed SDP
            raise BadRequest(f"the SDP offer could not be read: {type(exc).__name__}: {exc}", code="bad_sdp") from exc
        pc = RTCPeerConnection(ice_configuration(self.ice_servers))
        link = PartyLink(role, pc)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if self.links.get(role) is link and not self.closing:
                self.on_state(self.call_id, role, pc.connectionState)

        try:
            ours: dict[str, RTCRtpTransceiver] = {}
            for kind, offered_codecs in offered:
                if kind in ours:
                    continue  # a second camera: answered by aiortc, its frames discarded
                choice = codecs.choose(kind, offered_codecs, self.video_codec if kind == "video" else None)
                link.outgoing[kind] = forward = ForwardTrack(kind, choice.mime if choice else "")
                ours[kind] = pc.addTransceiver(forward, direction="sendrecv")
                if choice is not None:
                    ours[kind].setCodecPreferences(choice.preferences())
            if not ours:
                raise BadRequest("the offer has no audio or video", code="bad_sdp")
            await pc.setRemoteDescription(offer)
            taps = {id(t): encoded.tap(t.receiver, t.kind) for t in pc.getTransceivers() if t.kind in KINDS}
            await pc.setLocalDescription(await pc.createAnswer())
            link.codecs = codecs.answered_codecs(pc.localDescription.sdp)
        except BadRequest:
            await link.close()
            raise
        except Exception as exc:  # aiortc raises ValueError, OperationError, KeyError… on SDP it can't use
            await link.close()
            raise BadRequest(f"the SDP offer could not be used: {type(exc).__name__}: {exc}", code="bad_sdp") from exc
        for kind, transceiver in ours.items():
            forward = link.outgoing[kind]
            forward.codec = link.codecs.get(kind, forward.codec)
            link.incoming[kind] = Incoming(kind, transceiver.receiver, taps[id(transceiver)], link.codecs.get(kind))
            encoded.on_keyframe_request(transceiver.sender, forward.keyframe_requested)
        if self.video_codec is None and "video" in link.codecs:
            self.video_codec = link.codecs["video"]
        other_link = self.links.get(other(role))
        if (
            other_link is not None
            and "video" in link.codecs
            and other_link.codecs.get("video")
            not in (
                None,
                link.codecs["video"],
            )
        ):
            log.warning(
                "call %s: no common video codec (%s: %s, %s: %s): transcoding",
                self.call_id,
                role,
                link.codecs["video"],
                other(role),
                other_link.codecs["video"],
            )
        previous = self.links.get(role)
        self.links[role] = link
        if previous is not None:
            await previous.close()
        self._wire()
        return pc.localDescription

    def _wire(self) -> None:
        """Connect every incoming track to its party's recorder and to the other party (idempotent)."""
        for role, link in self.links.items():
            peer = self.links.get(other(role))
            for kind, incoming in link.incoming.items():
                self.recorders[role].feed(kind, incoming)
                forward = peer.outgoing.get(kind) if peer else None
                if forward is not None and forward.origin is not incoming and not incoming.ended:
                    forward.attach(incoming)

    def recording_formats(self) -> dict[str, dict]:
        """Per party with media: the kinds, the file suffix and content type its recording will have."""
        formats = {}
        for role, recorder in self.recorders.items():
            if recorder.kinds:
                suffix, content_type = recorder.format()
                formats[role] = {"kinds": sorted(recorder.kinds), "suffix": suffix, "content_type": content_type}
        return formats

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
        """Frames in, forwarded and recorded per party and kind (what the bench reads), and how they went."""
        result: dict[str, dict[str, Any]] = {}
        for role in ROLES:
            link, peer = self.links.get(role), self.links.get(other(role))
            recorder = self.recorders[role]
            result[role] = {}
            for kind in KINDS:
                forward = peer.outgoing.get(kind) if peer else None
                result[role][kind] = {
                    "in": link.incoming[kind].frames if link and kind in link.incoming else 0,
                    "forwarded": forward.frames if forward else 0,
                    "recorded": recorder.frames_recorded[kind],
                    "dropped": recorder.frames_dropped[kind],
                    "codec": link.codecs.get(kind) if link else None,
                    "transcoded": bool(forward and forward.transcoded),
                    "forward_dropped": forward.dropped if forward else 0,
                    "keyframe_requests": link.incoming[kind].keyframe_requests if link and kind in link.incoming else 0,
                }
        return result

    async def close(self, *, ended_at: float | None = None) -> dict[str, RecordingResult | None]:
        """Stop recording (files closed within a second, then measured), then close both connections."""
        self.closing = True
        stops = (self.recorders[r].stop(ended_at=ended_at) for r in ROLES)
        results = dict(zip(ROLES, await asyncio.gather(*stops), strict=False))
        for role, result in results.items():
            peer = self.links.get(other(role))
            if result is not None and peer is not None:
                result.transcoded = any(track.transcoded for track in peer.outgoing.values())
        await asyncio.gather(*(link.close() for link in self.links.values()), return_exceptions=True)
        return results
