"""Records one party of a call — their audio and their video — to one fragmented MP4 (H.264 + AAC).

Why not aiortc's `MediaRecorder`: it encodes libx264 at the default preset (several times the CPU of
`veryfast`, which decides how many calls a box can hold), it lets PyAV rewrite the timestamps of the frames
it encodes in place (PyAV's `encode` rebases `frame.pts`; with `MediaRelay` the same frame object is also
being encoded for the other party in another thread), its queue grows without bound when the encoder falls
behind, and a crash before `stop()` leaves an MP4 without its index. Here:

- frames are copied before encoding; video is stamped with its arrival time, audio with the sender's
  clock anchored at its first arrival, so the two stay in sync and the file lasts as long as the call;
- encoding and muxing run on one thread per recorder (PyAV releases the GIL while encoding), in order;
- the backlog is bounded: past `MAX_BACKLOG_S` of unencoded media a frame is dropped and counted, so a
  saturated server degrades the evidence visibly (`frames_dropped`) instead of running out of memory;
- the MP4 is fragmented (`empty_moov`, a fragment per keyframe, a keyframe every 2 s), so a file whose
  writer died is still playable up to its last fragment: flagged, never lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from api.timeutil import utcnow

log = logging.getLogger(__name__)

VIDEO_TIME_BASE = Fraction(1, 90000)
VIDEO_FPS = 30
KEYFRAME_EVERY_S = 2
MAX_BACKLOG_S = 1.5
MP4_OPTIONS = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}
X264_OPTIONS = {"preset": "veryfast", "crf": "23"}
DEFAULT_SIZE = (640, 480)
AUDIO_RATE = 48000


@dataclass
class RecordingResult:
    """What a finished recording is, for its `Recording` row."""

    path: Path
    status: str  # "complete" or "failed"
    started_at: datetime
    ended_at: datetime
    error: str | None = None
    duration_s: float | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    has_audio: bool = False
    has_video: bool = False
    frames_in: dict[str, int] = field(default_factory=dict)
    frames_recorded: dict[str, int] = field(default_factory=dict)
    frames_dropped: dict[str, int] = field(default_factory=dict)


def create_private_file(path: Path) -> None:
    """Create an empty file only the service user can read (evidence), with private parent directories."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class PartyRecorder:
    """Consumes one party's incoming tracks from the start of their connection; writes them once started."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.readers: dict[str, asyncio.Task] = {}
        self.tracks: dict[str, MediaStreamTrack] = {}
        self.frames_in = {"audio": 0, "video": 0}
        self.frames_recorded = {"audio": 0, "video": 0}
        self.frames_dropped = {"audio": 0, "video": 0}
        self.last_size: tuple[int, int] | None = None
        self.pending = {"audio": 0, "video": 0}
        self.path: Path | None = None
        self.started_at: datetime | None = None
        self.error: str | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._container = None
        self._streams: dict[str, av.stream.Stream] = {}
        self._t0 = 0.0
        self._last_video_pts = -1
        self._next_audio_pts: int | None = None
        self._futures: set[asyncio.Future] = set()
        self._lifecycle = asyncio.Lock()  # a stop during a start waits for the file to be open, then closes it

    @property
    def kinds(self) -> set[str]:
        return set(self.readers)

    @property
    def recording(self) -> bool:
        return self._container is not None

    def feed(self, kind: str, track: MediaStreamTrack) -> None:
        """Read `track` (a relay proxy of the party's incoming track) from now on; replaces an older one."""
        old, old_track = self.readers.pop(kind, None), self.tracks.pop(kind, None)
        if old is not None:
            old.cancel()
        if old_track is not None:
            old_track.stop()  # leave the relay, or a still-live source would keep queueing for it
        self.tracks[kind] = track
        self.readers[kind] = asyncio.ensure_future(self._read(kind, track))

    async def start(self, path: Path) -> None:
        """Open the file and write from the next frame on; streams for the kinds fed so far."""
        async with self._lifecycle:
            await self._start(path)

    async def _start(self, path: Path) -> None:
        kinds = self.kinds
        if not kinds:
            raise RuntimeError("nothing to record: the party sends no audio or video")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rec-{self.name}")
        loop = asyncio.get_running_loop()
        self._t0, self.started_at = time.monotonic(), utcnow()  # before the file opens: frames are stamped from it
        await loop.run_in_executor(self._executor, self._open, path, kinds, self.last_size or DEFAULT_SIZE)
        self.path = path

    def _open(self, path: Path, kinds: set[str], size: tuple[int, int]) -> None:
        create_private_file(path)
        container = av.open(str(path), mode="w", format="mp4", options=dict(MP4_OPTIONS))
        if "video" in kinds:
            video = container.add_stream("libx264", rate=VIDEO_FPS, options=dict(X264_OPTIONS))
            video.width, video.height = size
            video.pix_fmt = "yuv420p"
            video.time_base = video.codec_context.time_base = VIDEO_TIME_BASE
            video.codec_context.gop_size = VIDEO_FPS * KEYFRAME_EVERY_S
            # One thread per encoder: with many calls, calls are the parallelism; frame threads only add latency.
            video.codec_context.thread_count = 1
            self._streams["video"] = video
        if "audio" in kinds:
            audio = container.add_stream("aac", rate=AUDIO_RATE)
            audio.codec_context.layout = "stereo"
            audio.codec_context.bit_rate = 64000
            audio.time_base = audio.codec_context.time_base = Fraction(1, AUDIO_RATE)
            self._streams["audio"] = audio
        self._container = container

    async def _read(self, kind: str, track: MediaStreamTrack) -> None:
        """Consume every frame (nothing may queue in memory); hand the ones to record to the writer thread."""
        loop = asyncio.get_running_loop()
        limit = int(MAX_BACKLOG_S * (VIDEO_FPS if kind == "video" else 50))
        origin: tuple[int, int] | None = None  # this track's first recorded (frame pts, file pts)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.frames_in[kind] += 1
            if kind == "video":
                self.last_size = (frame.width, frame.height)
            if self._container is None or kind not in self._streams or self.error:
                continue
            if self.pending[kind] >= limit:
                self.frames_dropped[kind] += 1
                continue
            elapsed = time.monotonic() - self._t0
            if kind == "video":
                # Arrival time: never ahead of real time, and it keeps the picture in step with the audio.
                pts = self._last_video_pts = max(self._last_video_pts + 1, round(elapsed / VIDEO_TIME_BASE))
            else:
                # The sender's clock (RTP timestamps, unwrapped by aiortc), anchored where this track's
                # first frame arrived: a late burst after a stall lands where it belongs, a muted stretch
                # stays a gap, and the audio never drifts past the call's length.
                rate = frame.sample_rate
                if origin is None or frame.pts is None:
                    origin = (frame.pts or 0, max(round(elapsed * rate) - frame.samples, self._next_audio_pts or 0))
                time_base = frame.time_base or Fraction(1, rate)
                offset = round((frame.pts - origin[0]) * time_base * rate) if frame.pts is not None else 0
                pts = max(origin[1] + offset, self._next_audio_pts or 0)
                self._next_audio_pts = pts + frame.samples
            self.pending[kind] += 1
            future = loop.run_in_executor(self._executor, self._write, kind, frame, pts)
            self._futures.add(future)
            future.add_done_callback(lambda f, k=kind: self._written(k, f))

    def _written(self, kind: str, future: asyncio.Future) -> None:
        self._futures.discard(future)
        self.pending[kind] -= 1
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None and self.error is None:
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("recording %s: writing failed: %s", self.name, self.error)

    # --- the writer thread ---

    def _write(self, kind: str, frame, pts: int) -> None:
        copy = _copy_video(frame) if kind == "video" else _copy_audio(frame)
        copy.pts = pts
        copy.time_base = VIDEO_TIME_BASE if kind == "video" else Fraction(1, copy.sample_rate)
        for packet in self._streams[kind].encode(copy):
            self._container.mux(packet)
        self.frames_recorded[kind] += 1

    def _close(self) -> None:
        container, self._container = self._container, None
        try:
            for stream in self._streams.values():
                for packet in stream.encode(None):
                    container.mux(packet)
        finally:
            container.close()

    # --- stopping ---

    async def stop(self) -> RecordingResult | None:
        """Stop reading, flush the encoders, close the file; then measure it. None when never started."""
        async with self._lifecycle:
            return await self._stop()

    async def _stop(self) -> RecordingResult | None:
        for task in self.readers.values():
            task.cancel()
        await asyncio.gather(*self.readers.values(), return_exceptions=True)
        for track in self.tracks.values():
            track.stop()
        if self.path is None or self._executor is None:
            return None
        loop = asyncio.get_running_loop()
        if self._futures:
            await asyncio.wait(set(self._futures), timeout=10)
        ended_at = utcnow()
        try:
            await loop.run_in_executor(self._executor, self._close)
        except Exception as exc:  # the file stays: a half-written fragmented MP4 still plays
            self.error = self.error or f"closing failed: {type(exc).__name__}: {exc}"
        finally:
            self._executor.shutdown(wait=False)
        result = await asyncio.to_thread(measure, self.path)
        result.started_at, result.ended_at = self.started_at, ended_at
        if self.error:
            result.status, result.error = "failed", self.error
        result.frames_in, result.frames_recorded = dict(self.frames_in), dict(self.frames_recorded)
        result.frames_dropped = dict(self.frames_dropped)
        return result


def _copy_video(frame) -> av.VideoFrame:
    """A private copy of the picture (PyAV's encode rewrites a frame's timestamps; this one is shared)."""
    if frame.format.name != "yuv420p":
        return frame.reformat(format="yuv420p")  # a new frame already
    copy = av.VideoFrame(frame.width, frame.height, "yuv420p")
    if [p.line_size for p in copy.planes] == [p.line_size for p in frame.planes]:
        for source, target in zip(frame.planes, copy.planes, strict=False):
            target.update(source)
        return copy
    return av.VideoFrame.from_ndarray(frame.to_ndarray(format="yuv420p"), format="yuv420p")


def _copy_audio(frame) -> av.AudioFrame:
    copy = av.AudioFrame.from_ndarray(frame.to_ndarray(), format=frame.format.name, layout=frame.layout.name)
    copy.sample_rate = frame.sample_rate
    return copy


def measure(path: Path) -> RecordingResult:
    """Size, SHA-256, duration and streams of a recording file; a file that won't demux is `failed`."""
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
            kinds = {stream.type for stream in container.streams}
            result.has_audio, result.has_video = "audio" in kinds, "video" in kinds
            end = 0.0
            for packet in container.demux():
                if packet.pts is not None and packet.time_base is not None:
                    end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
            result.duration_s = round(end, 3)
    except (av.FFmpegError, OSError, ValueError) as exc:
        result.status, result.error = "failed", f"does not demux: {exc}"
    return result
