"""Records one party of a call — their video and audio exactly as they sent it — into one file, no re-encoding.

H.264 goes into a fragmented MP4, VP8 into WebM; Opus audio is muxed as received in both. The server
never decodes for the recording: it asks the party's sender for a keyframe when the recording starts,
skips delta frames until it arrives (so the file starts decodable; the wait shows as a gap if it is long),
and reads the picture size from that keyframe's headers (`codecs.picture_size`).

- Muxing runs on one writer thread per recorder (file I/O never on the event loop), fed through a bounded
  queue (`MAX_BACKLOG` frames): past it frames are dropped and counted, so a saturated disk degrades the
  evidence visibly instead of growing memory. The thread ends with the recording.
- Each frame is placed by the sender's clock anchored at its arrival (`evidence.KindTimeline`): gaps are
  kept and listed, audio and video stay in step.
- `stop()` closes the file within `STOP_WITHIN_S` of the call's end: what the writer hasn't muxed by then is
  counted as not written. Then the file is measured (size, SHA-256, frames and length per kind, demuxed
  without decoding) and judged (`evidence.verdict`): `complete`, `degraded` or `failed`.
- The MP4 is fragmented (a fragment per second or keyframe) and WebM written in 1 s clusters, so a file
  whose writer died is still playable up to its last fragment: flagged, never lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import av

from api.timeutil import utcnow
from api.video import codecs, evidence
from api.video.encoded import EncodedFrame
from api.video.relay import Incoming

log = logging.getLogger(__name__)

CLOCKS = {"video": 90000, "audio": 48000}
MAX_BACKLOG = 150  # frames waiting for the writer (~2 s of a call's video and audio)
MAX_BEFORE_OPEN = 500  # audio frames held until the first video keyframe opens the file (~10 s)
STOP_WITHIN_S = 0.8
FORMAT_OPTIONS = {
    ".mp4": ("mp4", {"movflags": "frag_keyframe+empty_moov+default_base_moof", "frag_duration": "1000000"}),
    ".webm": ("webm", {"cluster_time_limit": "1000"}),
}
MP4_OPTIONS = FORMAT_OPTIONS[".mp4"][1]
_STOP = object()


@dataclass
class RecordingResult:
    """What a finished recording is, for its `Recording` row."""

    path: Path
    status: str  # "complete", "degraded" or "failed"
    started_at: datetime
    ended_at: datetime
    error: str | None = None
    duration_s: float | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    has_audio: bool = False
    has_video: bool = False
    content_type: str | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    frames_in: dict[str, int] = field(default_factory=dict)
    frames_recorded: dict[str, int] = field(default_factory=dict)
    frames_dropped: dict[str, int] = field(default_factory=dict)
    frames_in_file: dict[str, int] = field(default_factory=dict)
    durations_s: dict[str, float] = field(default_factory=dict)
    skipped_before_keyframe: int = 0
    gaps: list[dict] = field(default_factory=list)
    av_offset_s: float | None = None
    issues: list[str] = field(default_factory=list)
    transcoded: bool = False  # this party's media reached the other party transcoded (set by CallMedia)


def create_private_file(path: Path) -> None:
    """Create an empty file only the service user can read (evidence), with private parent directories."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class PartyRecorder:
    """Subscribes to one party's incoming encoded media; writes it to their file once started."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sources: dict[str, Incoming] = {}
        self.frames_in = {"audio": 0, "video": 0}
        self.frames_recorded = {"audio": 0, "video": 0}
        self.frames_dropped = {"audio": 0, "video": 0}
        self.skipped_before_keyframe = 0
        self.path: Path | None = None
        self.started_at: datetime | None = None
        self.error: str | None = None
        self.codec: dict[str, str] = {}  # per kind, fixed when the recording starts
        self._t0 = 0.0
        self._timelines: dict[str, evidence.KindTimeline] = {}
        self._waiting_keyframe = True
        self._video_started = False  # the first video keyframe has been taken into the file
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._abort = threading.Event()
        self._opened: asyncio.Future | None = None
        self._lifecycle = asyncio.Lock()  # a stop during a start waits for the file to be open, then closes it

    @property
    def kinds(self) -> set[str]:
        return set(self.sources)

    @property
    def pending(self) -> dict[str, int]:
        """Frames waiting for the writer thread (the bench reads it)."""
        return {"queued": self._queue.qsize()}

    @property
    def recording(self) -> bool:
        return self._thread is not None

    def feed(self, kind: str, source: Incoming) -> None:
        """Record `source` (the party's incoming `kind`) from now on; replaces an older one (a rejoin)."""
        old = self.sources.get(kind)
        if old is source:
            return
        if old is not None:
            old.subscribers.discard(self._on_frame)
        self.sources[kind] = source
        source.subscribers.add(self._on_frame)
        if self.recording and kind == "video":
            self._waiting_keyframe = True
            source.request_keyframe(force=True)

    def format(self) -> tuple[str, str]:
        """(suffix, content type) this party's file will have, from the codec their connection uses."""
        video = self.sources.get("video")
        return codecs.container_for(video.mime if video else None)

    async def start(self, path: Path) -> None:
        """Open the file and write from the next keyframe on; streams for the kinds fed so far."""
        async with self._lifecycle:
            if not self.sources:
                raise RuntimeError("nothing to record: the party sends no audio or video")
            suffix = path.suffix.lower()
            if suffix not in FORMAT_OPTIONS:
                raise RuntimeError(f"no container for {suffix!r}")
            self.codec = {kind: source.mime for kind, source in self.sources.items() if source.mime}
            if self.codec.get("video") not in (None, *codecs.CONTAINERS) or (
                self.codec.get("video") and codecs.container_for(self.codec["video"])[0] != suffix
            ):
                raise RuntimeError(f"{self.codec.get('video')} can't go into a {suffix} file as received")
            loop = asyncio.get_running_loop()
            self._opened = loop.create_future()
            self._t0, self.started_at = time.monotonic(), utcnow()
            self._timelines = {kind: evidence.KindTimeline(kind, CLOCKS[kind]) for kind in self.sources}
            self._waiting_keyframe = "video" in self.sources
            self._thread = threading.Thread(
                target=self._run, args=(loop, path, set(self.sources)), name=f"rec-{self.name}", daemon=True
            )
            self._thread.start()
            await self._opened  # the file exists (0600) before the first frame; raises if it couldn't be created
            self.path = path
            if "video" in self.sources:
                self.sources["video"].request_keyframe(force=True)

    # --- on the event loop: frames in ---

    def _on_frame(self, source: Incoming, frame: EncodedFrame | None) -> None:
        if frame is None or not self.recording or self._abort.is_set() or self.sources.get(frame.kind) is not source:
            return
        kind = frame.kind
        self.frames_in[kind] += 1
        if kind == "video" and self._waiting_keyframe:
            if not frame.keyframe:
                if self._video_started:
                    self.frames_dropped["video"] += 1  # mid-recording: lost evidence, counted as such
                else:
                    self.skipped_before_keyframe += 1
                source.request_keyframe()
                return
            self._waiting_keyframe, self._video_started = False, True
        if frame.mime != self.codec.get(kind):
            self.frames_dropped[kind] += 1  # a rejoin with another codec can't go into this file as is
            return
        if self._queue.qsize() >= MAX_BACKLOG:
            self.frames_dropped[kind] += 1
            if kind == "video":
                self._waiting_keyframe = True
            return
        ticks = self._timelines[kind].place(frame.timestamp, frame.arrival - self._t0)
        self._queue.put_nowait((kind, frame.data, ticks, frame.keyframe))

    # --- the writer thread ---

    def _run(self, loop: asyncio.AbstractEventLoop, path: Path, kinds: set[str]) -> None:
        container, streams, before_open = None, {}, []
        try:
            create_private_file(path)
        except Exception as exc:
            loop.call_soon_threadsafe(_settle, self._opened, exc)
            return
        loop.call_soon_threadsafe(_settle, self._opened, None)
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                if self._abort.is_set():
                    self._count_dropped(item[0])
                    continue
                if container is None:
                    if item[0] == "video" or "video" not in kinds:
                        container, streams = self._open(path, kinds, item)
                    else:  # audio before the first video keyframe: hold it (bounded) until the file opens
                        before_open.append(item)
                        if len(before_open) > MAX_BEFORE_OPEN:
                            self._count_dropped(before_open.pop(0)[0])
                        continue
                    for held in before_open:
                        self._mux(container, streams, held)
                    before_open.clear()
                self._mux(container, streams, item)
        except Exception as exc:
            self.error = self.error or f"{type(exc).__name__}: {exc}"
            log.error("recording %s: writing failed: %s", self.name, self.error)
        finally:
            for item in before_open:
                self._count_dropped(item[0])
            if container is not None:
                try:
                    container.close()
                except Exception as exc:  # the file stays: a half-written fragmented file still plays
                    self.error = self.error or f"closing failed: {type(exc).__name__}: {exc}"

    def _open(self, path: Path, kinds: set[str], first: tuple):
        fmt, options = FORMAT_OPTIONS[path.suffix.lower()]
        container = av.open(str(path), mode="w", format=fmt, options=dict(options))
        streams = {}
        if "video" in kinds:
            size = codecs.picture_size(self.codec["video"], first[1]) or (640, 480)
            name = "h264" if self.codec["video"] == codecs.H264 else "vp8"
            streams["video"] = container.add_mux_stream(name, width=size[0], height=size[1])
            streams["video"].time_base = Fraction(1, CLOCKS["video"])
        if "audio" in kinds and self.codec.get("audio") == codecs.OPUS:
            # A libopus stream (never used to encode) so the muxer gets Opus's OpusHead header.
            audio = container.add_stream("libopus", rate=48000)
            audio.codec_context.layout = "stereo"
            audio.time_base = Fraction(1, CLOCKS["audio"])
            streams["audio"] = audio
        return container, streams

    def _mux(self, container, streams: dict, item: tuple) -> None:
        kind, data, ticks, keyframe = item
        stream = streams.get(kind)
        if stream is None:
            self._count_dropped(kind)
            return
        packet = av.Packet(data)
        packet.pts = packet.dts = ticks
        packet.time_base = Fraction(1, CLOCKS[kind])
        packet.stream = stream
        packet.is_keyframe = keyframe
        container.mux(packet)
        self.frames_recorded[kind] += 1

    def _count_dropped(self, kind: str) -> None:
        self.frames_dropped[kind] += 1

    # --- stopping ---

    async def stop(self, *, ended_at: float | None = None) -> RecordingResult | None:
        """Stop taking frames, close the file (within `STOP_WITHIN_S`), measure and judge it. None if never started.
        `ended_at` (epoch seconds): when the call ended, if that was earlier than now; the silence after it (this
        stop came late: a busy worker) is not a gap in the recording."""
        async with self._lifecycle:
            for source in self.sources.values():
                source.subscribers.discard(self._on_frame)
            thread = self._thread
            if thread is None or self.path is None:
                return None
            assert self.started_at is not None  # set by start() with the writer thread
            end_s = time.monotonic() - self._t0
            if ended_at is not None:
                end_s = min(end_s, max(0.0, ended_at - self.started_at.timestamp()))
            closed_at = utcnow()
            self._queue.put(_STOP)
            await asyncio.to_thread(thread.join, STOP_WITHIN_S)
            if thread.is_alive():  # the disk is slow: what's left is counted as not written, the file closed
                self._abort.set()
                await asyncio.to_thread(thread.join)
            self._thread = None
            for timeline in self._timelines.values():
                timeline.close(end_s)
            result = await asyncio.to_thread(measure, self.path)
            result.started_at, result.ended_at = self.started_at, closed_at
            result.video_codec, result.audio_codec = self.codec.get("video"), self.codec.get("audio")
            result.content_type = codecs.container_for(result.video_codec)[1]
            result.frames_in, result.frames_recorded = dict(self.frames_in), dict(self.frames_recorded)
            result.frames_dropped = dict(self.frames_dropped)
            result.skipped_before_keyframe = self.skipped_before_keyframe
            result.gaps = sorted((g for t in self._timelines.values() for g in t.gaps), key=lambda g: g["at_s"])
            if self.error:
                result.status, result.error = "failed", self.error
            if result.status != "failed":
                result.status, result.issues = evidence.verdict(
                    gaps=result.gaps, av_offset_s=result.av_offset_s, dropped=result.frames_dropped, kinds=self.kinds
                )
            return result


def _settle(future: asyncio.Future | None, exc: Exception | None) -> None:
    if future is not None and not future.done():
        future.set_exception(exc) if exc else future.set_result(None)


def measure(path: Path) -> RecordingResult:
    """Size, SHA-256, streams, frames and length per kind of a recording file (demuxed, not decoded)."""
    now = utcnow()
    result = RecordingResult(path=path, status="complete", started_at=now, ended_at=now)
    try:
        result.size_bytes = path.stat().st_size
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        result.sha256 = digest.hexdigest()
    except OSError as exc:
        result.status, result.error = "failed", f"unreadable: {exc}"
        return result
    try:
        with av.open(str(path)) as container:
            kinds = {stream.index: stream.type for stream in container.streams}
            result.has_audio, result.has_video = "audio" in kinds.values(), "video" in kinds.values()
            spans: dict[str, list[float]] = {}
            for packet in container.demux():
                if packet.size == 0 or packet.pts is None or packet.time_base is None:
                    continue
                kind = kinds[packet.stream.index]
                result.frames_in_file[kind] = result.frames_in_file.get(kind, 0) + 1
                start = float(packet.pts * packet.time_base)
                end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                span = spans.setdefault(kind, [start, end])
                span[0], span[1] = min(span[0], start), max(span[1], end)
            result.durations_s = {kind: round(end - start, 3) for kind, (start, end) in spans.items()}
            result.duration_s = round(max((end for _, end in spans.values()), default=0.0), 3)
            if "audio" in spans and "video" in spans:
                # Video that starts after the audio waited for its first keyframe: that wait is counted as skipped
                # frames and, past GAP_S, as a gap at 0 s; the A/V difference is what remains (a kind missing later).
                lead = max(0.0, spans["video"][0] - spans["audio"][0])
                audio_s, video_s = result.durations_s["audio"] - lead, result.durations_s["video"]
                result.av_offset_s = round(audio_s - video_s, 3)
    except (av.FFmpegError, OSError, ValueError) as exc:
        result.status, result.error = "failed", f"does not demux: {exc}"
    return result
