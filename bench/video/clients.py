"""Cheap call parties for the bench: they send a pre-encoded VP8 clip and count what they receive without
decoding it, so nearly all the CPU the bench sees is the server's."""

from __future__ import annotations

import asyncio
import fractions
import json
import struct
import sys
import tempfile
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


def write_ivf(clip: list[bytes], path: Path, *, fps: int, width: int = 640, height: int = 480) -> Path:
    """The clip's VP8 frames as an IVF file, for the GStreamer parties (`bench/video/gst_parties.py`)."""
    with open(path, "wb") as out:
        out.write(b"DKIF" + struct.pack("<HH4sHHIIII", 0, 32, b"VP80", width, height, fps, 1, len(clip), 0))
        for index, frame in enumerate(clip):
            out.write(struct.pack("<IQ", len(frame), index) + frame)
    return path


class AiortcClients:
    """The parties as aiortc peers in this process (the default)."""

    def __init__(self, clip: list[bytes], fps: int) -> None:
        self.clip, self.fps = clip, fps

    async def __aenter__(self) -> AiortcClients:
        return self

    async def __aexit__(self, *exc) -> None:
        pass

    def party(self) -> BenchParty:
        return BenchParty(self.clip, self.fps)

    async def refresh(self) -> None:
        """The parties' counts are live attributes here: nothing to fetch."""

    def pids(self) -> list[int]:
        return []  # this process: the bench reads its own CPU time


class _Counts:
    def __init__(self) -> None:
        self.sent = 0
        self.keyframes_requested = 0


class _PartyEvent(asyncio.Event):
    """An asyncio.Event whose wait() fails at once when the party's connection has failed (rather than hang)."""

    def __init__(self, failed: asyncio.Event, what: str) -> None:
        super().__init__()
        self._failed, self._what = failed, what

    async def wait(self) -> bool:
        waiters = [asyncio.ensure_future(super().wait()), asyncio.ensure_future(self._failed.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if not self.is_set():
            raise RuntimeError(f"GStreamer party's connection failed before {self._what}")
        return True


class GstParty:
    """One side of a call, held in the GStreamer parties' process; the same face as BenchParty. Counts are as of
    the last `GstClients.refresh()`."""

    def __init__(self, clients: GstClients, number: int) -> None:
        self.clients, self.number = clients, number
        self.video = _Counts()
        self.video_received = 0
        self.audio_received = 0
        self.state = "new"
        self.failed = asyncio.Event()
        self.connected = _PartyEvent(self.failed, "it connected")
        self.first_video = _PartyEvent(self.failed, "its first frame")

    async def negotiate(self, http, call_id: int) -> None:
        offer = await self.clients.request("offer", party=self.number)
        response = await http.post(f"/video/calls/{call_id}/offer", json={"sdp": offer["sdp"], "type": "offer"})
        assert response.status_code == 200, response.text
        await self.clients.request("answer", party=self.number, sdp=response.json()["sdp"])

    def update(self, counts: dict) -> None:
        self.video.sent, self.video.keyframes_requested = counts["video_sent"], counts["keyframes_requested"]
        self.video_received, self.audio_received = counts["video_received"], counts["audio_received"]
        self.state = counts["state"]

    async def close(self) -> None:
        await self.clients.request("close", party=self.number)


class GstClients:
    """The parties on GStreamer's webrtcbin, all in one process of Debian's Python (`bench/video/gst_parties.py`),
    driven over line-based JSON; their media runs on GStreamer's C threads, not in this process."""

    PYTHON = "/usr/bin/python3"  # Debian's, with PyGObject (python3-gi): `make bench-video-deps`

    def __init__(self, clip: list[bytes], fps: int) -> None:
        self.clip, self.fps = clip, fps
        self.parties: dict[int, GstParty] = {}
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._next_req = 0
        self._dir = Path(tempfile.mkdtemp(prefix="yt-bench-gst-"))
        self._ready = asyncio.Event()

    async def __aenter__(self) -> GstClients:
        ivf = write_ivf(self.clip, self._dir / "clip.ivf", fps=self.fps)
        script = Path(__file__).resolve().parent / "gst_parties.py"
        self._stderr = open(self._dir / "gst_parties.log", "w")
        self._process = await asyncio.create_subprocess_exec(
            self.PYTHON,
            str(script),
            "--clip",
            str(ivf),
            "--fps",
            str(self.fps),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._stderr,
            limit=2**24,
        )
        self._reader = asyncio.ensure_future(self._read())
        try:
            await asyncio.wait_for(self._ready.wait(), 60)  # set by its "ready", or when it exits
        except TimeoutError:
            pass
        if self._reader.done() or not self._ready.is_set():
            if self._process.returncode is None:
                self._process.kill()
            await self._process.wait()
            self._stderr.close()
            log = (self._dir / "gst_parties.log").read_text()[-2000:]
            raise RuntimeError(
                f"GStreamer parties did not start (`make bench-video-deps` installs what they need); "
                f"{self._dir / 'gst_parties.log'}:\n{log}"
            )
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._process is not None
        if self._process.returncode is None:
            try:
                await asyncio.wait_for(self.request("quit"), 30)
                await asyncio.wait_for(self._process.wait(), 30)
            except (TimeoutError, RuntimeError, OSError):  # OSError: it had gone (a broken pipe)
                self._process.kill()
                await self._process.wait()
        if self._reader is not None:
            self._reader.cancel()
        self._stderr.close()
        (self._dir / "clip.ivf").unlink(missing_ok=True)  # the log stays, as the server's do

    async def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        while line := await self._process.stdout.readline():
            message = json.loads(line)
            if "req" in message:
                future = self._pending.pop(message["req"], None)
                if future is not None and not future.done():
                    if "error" in message:
                        future.set_exception(RuntimeError(f"GStreamer party: {message['error']}"))
                    else:
                        future.set_result(message)
            elif message.get("event") == "ready":
                self._ready.set()
            elif (party := self.parties.get(message.get("party", -1))) is not None:
                {"connected": party.connected, "first_video": party.first_video, "failed": party.failed}[
                    message["event"]
                ].set()
        self._ready.set()  # the process ended: whoever waits for it to start learns so at once
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RuntimeError(f"GStreamer parties exited; see {self._dir / 'gst_parties.log'}"))

    async def request(self, op: str, **fields) -> dict:
        assert self._process is not None and self._process.stdin is not None
        if self._process.returncode is not None or (self._reader is not None and self._reader.done()):
            raise RuntimeError(f"GStreamer parties exited; see {self._dir / 'gst_parties.log'}")
        self._next_req += 1
        future = asyncio.get_running_loop().create_future()
        self._pending[self._next_req] = future
        self._process.stdin.write((json.dumps({"req": self._next_req, "op": op, **fields}) + "\n").encode())
        await self._process.stdin.drain()
        return await future

    def party(self) -> GstParty:
        party = GstParty(self, len(self.parties))
        self.parties[party.number] = party
        return party

    async def refresh(self) -> None:
        counts = (await self.request("counts"))["parties"]
        for number, values in counts.items():
            self.parties[int(number)].update(values)

    def pids(self) -> list[int]:
        return [self._process.pid] if self._process is not None else []
