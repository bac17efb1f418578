"""The video bench's call parties on GStreamer's webrtcbin (`run.py --clients gst`): many parties in one
process, their media on GStreamer's C threads (libnice, libsrtp, RTP payloaders), so the parties cost a
fraction of what the aiortc clients do and leave the box's cores to the server.

Runs under Debian's /usr/bin/python3 (PyGObject from `python3-gi`; `make bench-video-deps` installs it and the
GStreamer plugins), not the project's venv, and imports nothing from the project:

    /usr/bin/python3 bench/video/gst_parties.py --clip clip.ivf --fps 25

Each party sends the clip (VP8 frames from an IVF file, looped, paced at `fps`, each loop starting on a
keyframe) through `rtpvp8pay`, offering VP8 only, as the aiortc clients do, and a 440 Hz Opus tone (20 ms
packets encoded once at start and looped), both pushed from one GLib timer for every party and timestamped as if
live. Asked for a keyframe (a PLI/FIR from the server reaches the clip as an upstream force-key-unit event), the
clip skips ahead to its next keyframe, as the aiortc clients' clip does. What a party receives is depayloaded and
counted by its fakesink (no Python per buffer), never decoded: one video count per depayloaded VP8 frame, one
audio count per Opus packet, the same meaning as the aiortc clients' counts. DTLS uses an ECDSA certificate made
with `openssl` at start (aiortc accepts no RSA certificate, GStreamer's default).

Driven by line-based JSON on stdin/stdout. Requests carry a "req" number that the reply repeats:
    {"req": 1, "op": "offer", "party": 3}                → {"req": 1, "sdp": "v=0…"} (all ICE candidates in it)
    {"req": 2, "op": "answer", "party": 3, "sdp": "…"}   → {"req": 2, "ok": true}
    {"req": 3, "op": "counts"}                           → {"req": 3, "parties": {"3": {...}, ...}}
    {"req": 4, "op": "close", "party": 3}                → {"req": 4, "ok": true}
    {"req": 5, "op": "quit"}                             → {"req": 5, "ok": true}, then the process exits
A failed request answers {"req": n, "error": "…"}. Unasked, it prints events:
    {"event": "connected", "party": 3} and {"event": "first_video", "party": 3} (and "failed" for a connection
    that fails).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")  # appsrc's push_buffer, cheaper than its action signal
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstApp, GstSdp, GstWebRTC  # noqa: E402, F401

VIDEO_PT, AUDIO_PT = 96, 111
OPUS_FRAME_S, OPUS_FRAME_NS = 0.02, 20_000_000
JITTER_BUFFER_MS = 50
VIDEO_CAPS = f"application/x-rtp,media=video,encoding-name=VP8,payload={VIDEO_PT},clock-rate=90000"
AUDIO_CAPS = f"application/x-rtp,media=audio,encoding-name=OPUS,payload={AUDIO_PT},clock-rate=48000"

_out_lock = threading.Lock()


def emit(message: dict) -> None:
    line = json.dumps(message) + "\n"
    with _out_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def ecdsa_pem() -> tuple[str, str]:
    """A self-signed ECDSA P-256 certificate and key for DTLS, and the certificate's SHA-256 fingerprint as SDP
    writes it. GStreamer's own certificate is RSA, and aiortc (the server, which takes the DTLS client's part,
    as with a browser's offer) accepts no RSA cipher ("no shared cipher"); browsers use ECDSA too."""
    with tempfile.TemporaryDirectory() as scratch:
        key, cert = Path(scratch, "key.pem"), Path(scratch, "cert.pem")
        command = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        command += ["-keyout", str(key), "-out", str(cert), "-days", "30", "-subj", "/CN=yunting-bench"]
        subprocess.run(command, check=True, capture_output=True)
        cert_pem = cert.read_text()
        der = base64.b64decode("".join(line for line in cert_pem.splitlines() if not line.startswith("-----")))
        fingerprint = ":".join(f"{byte:02X}" for byte in hashlib.sha256(der).digest())
        return cert_pem + key.read_text(), fingerprint  # the certificate first: GStreamer reads it, then the key


def encode_tone(seconds: int = 1) -> tuple[list[GLib.Bytes], Gst.Caps]:
    """A 440 Hz tone (a whole number of cycles a second, so it loops cleanly) as 20 ms Opus packets, encoded once
    and replayed by every party: an encoder per party would cost more than the rest of its audio path."""
    pipeline = Gst.parse_launch(
        f"audiotestsrc num-buffers={seconds * 50} samplesperbuffer=960 freq=440 volume=0.25 "
        "! audio/x-raw,rate=48000,channels=1 ! opusenc bitrate=32000 frame-size=20 ! appsink name=out sync=false"
    )
    sink = pipeline.get_by_name("out")
    pipeline.set_state(Gst.State.PLAYING)
    packets, caps = [], None
    while (sample := sink.emit("pull-sample")) is not None:
        caps = sample.get_caps()
        buffer = sample.get_buffer()
        packets.append(GLib.Bytes.new(buffer.extract_dup(0, buffer.get_size())))
    pipeline.set_state(Gst.State.NULL)
    if not packets or caps is None:
        raise RuntimeError("could not encode the Opus tone")
    return packets, caps


def read_ivf(path: str) -> tuple[list[bytes], int, int]:
    """The frames of an IVF file, and its width and height."""
    data = open(path, "rb").read()
    if data[:4] != b"DKIF":
        raise ValueError(f"{path} is not an IVF file")
    header_len, width, height = struct.unpack_from("<H4xHH", data, 6)
    frames, offset = [], header_len
    while offset + 12 <= len(data):
        (size,) = struct.unpack_from("<I", data, offset)
        frames.append(data[offset + 12 : offset + 12 + size])
        offset += 12 + size
    return frames, width, height


class Party:
    def __init__(self, number: int, clip: Clip) -> None:
        self.number, self.clip = number, clip
        self.video_sent = self.audio_sent = 0
        self._sinks: dict[str, list[Gst.Element]] = {"video": [], "audio": []}  # what was received, counted there
        self.keyframes_requested = 0
        self.first_video_at: float | None = None
        self.connected_at: float | None = None
        self.state = "new"
        self.closed = False
        self._skip = 0
        self._keyframe_wanted = False
        self._start: float | None = None  # when the first frame was sent (pacing starts there)
        self._pts0 = 0  # the pipeline's running time then: the media's timestamps count from it
        self._offer_reply: int | None = None
        self._offer_sent = False

        self.pipeline = Gst.Pipeline.new(f"party-{number}")
        self.webrtc = Gst.ElementFactory.make("webrtcbin", "webrtc")
        self.webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
        # The receive jitter buffer holds each packet this long (200 ms by default, which would only delay the
        # first frame): aiortc's clients hand a frame on as soon as it is complete, browsers within tens of ms.
        self.webrtc.set_property("latency", JITTER_BUFFER_MS)
        self.pipeline.add(self.webrtc)
        self.pipeline.connect("deep-element-added", self._on_element_added)

        # Both sources are pre-encoded and pushed from this process's timer, timestamped as they'd be live.
        video_caps = Gst.Caps.from_string(f"video/x-vp8,width={clip.width},height={clip.height},framerate={clip.fps}/1")
        self.video_src = self._make("appsrc", **{"is-live": True, "format": Gst.Format.TIME, "caps": video_caps})
        self._send_branch([self.video_src, self._make("rtpvp8pay", pt=VIDEO_PT, **{"picture-id-mode": 2})], VIDEO_CAPS)
        # A PLI/FIR from the far end arrives as an upstream force-key-unit event.
        self.video_src.get_static_pad("src").add_probe(Gst.PadProbeType.EVENT_UPSTREAM, self._on_upstream_event)
        self.audio_src = self._make("appsrc", **{"is-live": True, "format": Gst.Format.TIME, "caps": clip.opus_caps})
        self._send_branch([self.audio_src, self._make("rtpopuspay", pt=AUDIO_PT)], AUDIO_CAPS)

        for transceiver_index in range(2):
            transceiver = self.webrtc.emit("get-transceiver", transceiver_index)
            transceiver.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDRECV)

        self.webrtc.connect("pad-added", self._on_pad_added)
        self.webrtc.connect("notify::ice-gathering-state", self._on_gathering)
        self.webrtc.connect("notify::connection-state", self._on_connection_state)
        self.pipeline.set_state(Gst.State.PLAYING)

    def _on_element_added(self, _bin, _parent, element: Gst.Element) -> None:
        # webrtcbin's DTLS transports are made on the fly: give each our ECDSA certificate as it appears (before
        # the offer, whose fingerprint is read from it).
        elements = [element]
        if isinstance(element, Gst.Bin):
            elements += list(_iterate(element.iterate_recurse()))
        for candidate in elements:
            factory = candidate.get_factory()
            if factory is not None and factory.get_name() == "dtlssrtpdec":
                candidate.set_property("pem", self.clip.pem)

    @staticmethod
    def _make(factory: str, **properties) -> Gst.Element:
        element = Gst.ElementFactory.make(factory, None)
        if element is None:
            raise RuntimeError(f"GStreamer element {factory} is missing (make bench-video-deps)")
        for key, value in properties.items():
            element.set_property(key, value)
        return element

    def _send_branch(self, elements: list[Gst.Element], rtp_caps: str) -> None:
        capsfilter = self._make("capsfilter", caps=Gst.Caps.from_string(rtp_caps))
        for element in [*elements, capsfilter]:
            self.pipeline.add(element)
        for upstream, downstream in zip([*elements, capsfilter], [*elements[1:], capsfilter], strict=False):
            if not upstream.link(downstream):
                raise RuntimeError(f"cannot link {upstream.get_name()} to {downstream.get_name()}")
        sink = self.webrtc.request_pad_simple("sink_%u")
        if capsfilter.get_static_pad("src").link(sink) != Gst.PadLinkReturn.OK:
            raise RuntimeError("cannot link to webrtcbin")

    # --- offer / answer ---------------------------------------------------------------------------------

    def offer(self, req: int) -> None:
        self._offer_reply = req
        promise = Gst.Promise.new_with_change_func(self._on_offer_created, None)
        self.webrtc.emit("create-offer", None, promise)

    def _on_offer_created(self, promise: Gst.Promise, _data) -> None:
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply else None
        if offer is None:
            self._reply_offer_error(f"create-offer failed: {reply}")
            return
        self.webrtc.emit("set-local-description", offer, Gst.Promise.new())
        self._check_gathering()

    def _on_gathering(self, *_args) -> None:
        self._check_gathering()

    def _check_gathering(self) -> None:
        # The server does no trickle ICE: the offer goes out once gathering is complete, with every candidate.
        if self._offer_sent or self._offer_reply is None:
            return
        if self.webrtc.get_property("ice-gathering-state") != GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            return
        local = self.webrtc.get_property("local-description")
        if local is None:
            return
        self._offer_sent = True
        # UDP candidates only, as aiortc gathers (libnice's TCP ones are of no use to the server).
        lines = [
            # webrtcbin 1.22 fingerprints a PEM it was given over the certificate *and* the key: put the
            # certificate's own fingerprint in (what the far end checks the DTLS handshake against).
            f"a=fingerprint:sha-256 {self.clip.fingerprint}" if line.startswith("a=fingerprint:") else line
            for line in local.sdp.as_text().split("\r\n")
            if not (line.startswith("a=candidate:") and " TCP " in line)
        ]
        sdp = "\r\n".join(lines)
        if "a=candidate" not in sdp:
            self._reply_offer_error("ICE gathering completed without a candidate in the local description")
            return
        emit({"req": self._offer_reply, "sdp": sdp})

    def _reply_offer_error(self, error: str) -> None:
        self._offer_sent = True
        emit({"req": self._offer_reply, "error": error})

    def answer(self, req: int, sdp_text: str) -> None:
        result, message = GstSdp.SDPMessage.new_from_text(sdp_text)
        if result != GstSdp.SDPResult.OK:
            emit({"req": req, "error": f"unparsable answer: {result}"})
            return
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, message)

        def done(promise: Gst.Promise, _data) -> None:
            reply = promise.get_reply()
            if reply is not None and reply.has_field("error"):
                emit({"req": req, "error": str(reply.get_value("error"))})
            else:
                emit({"req": req, "ok": True})

        self.webrtc.emit("set-remote-description", answer, Gst.Promise.new_with_change_func(done, None))

    def _on_connection_state(self, *_args) -> None:
        state = self.webrtc.get_property("connection-state")
        self.state = state.value_nick
        if state == GstWebRTC.WebRTCPeerConnectionState.CONNECTED and self.connected_at is None:
            self.connected_at = time.monotonic()
            emit({"event": "connected", "party": self.number})
        elif state == GstWebRTC.WebRTCPeerConnectionState.FAILED:
            emit({"event": "failed", "party": self.number})

    # --- receiving: depayload and count, no decoding --------------------------------------------------------

    def _on_pad_added(self, _webrtc, pad: Gst.Pad) -> None:
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        caps = pad.get_current_caps() or pad.query_caps(None)
        media = caps.get_structure(0).get_string("media")
        depay = self._make("rtpvp8depay" if media == "video" else "rtpopusdepay")
        sink = self._make("fakesink", sync=False, **{"async": False, "enable-last-sample": False})
        for element in (depay, sink):
            self.pipeline.add(element)
        depay.link(sink)
        # Counted by the sink itself (its "rendered" statistic), no Python per buffer; only the first frame is seen.
        self._sinks["video" if media == "video" else "audio"].append(sink)
        if media == "video":
            sink.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, self._on_first_video)
        for element in (depay, sink):
            element.sync_state_with_parent()
        pad.link(depay.get_static_pad("sink"))

    def _on_first_video(self, _pad, _info) -> Gst.PadProbeReturn:
        if self.first_video_at is None:
            self.first_video_at = time.monotonic()
            emit({"event": "first_video", "party": self.number})
        return Gst.PadProbeReturn.REMOVE

    def received(self, kind: str) -> int:
        """Buffers that reached the `kind` sinks: VP8 frames (a depayloaded VP8 buffer is one frame) or Opus
        packets."""
        return sum(sink.get_property("stats").get_value("rendered") for sink in self._sinks[kind])

    # --- sending the clip ------------------------------------------------------------------------------------

    def _on_upstream_event(self, _pad, info) -> Gst.PadProbeReturn:
        event = info.get_event()
        structure = event.get_structure() if event is not None else None
        if structure is not None and structure.get_name() == "GstForceKeyUnit":
            self.keyframes_requested += 1
            self._keyframe_wanted = True
        return Gst.PadProbeReturn.OK

    def push_due(self, now: float) -> None:
        """Send the video frames and audio packets due by `now` (at `fps` and every 20 ms from the first, which
        goes out once connected), timestamped exactly as if captured at their time."""
        if self.closed or self.connected_at is None:
            return
        if self._start is None:
            self._start = now
            self._pts0 = self.pipeline.get_clock().get_time() - self.pipeline.get_base_time()
        clip, elapsed = self.clip, now - self._start
        while self.video_sent <= elapsed * clip.fps:
            index = (self.video_sent + self._skip) % len(clip.frames)
            if self._keyframe_wanted:
                self._keyframe_wanted = False
                target = next((k for k in clip.keyframes if k >= index), clip.keyframes[0])
                self._skip += (target - index) % len(clip.frames)
                index = target
            buffer = Gst.Buffer.new_wrapped_bytes(clip.bytes[index])
            buffer.pts = self._pts0 + self.video_sent * Gst.SECOND // clip.fps
            buffer.duration = Gst.SECOND // clip.fps
            self.video_src.push_buffer(buffer)
            self.video_sent += 1
        while self.audio_sent * OPUS_FRAME_S <= elapsed:
            buffer = Gst.Buffer.new_wrapped_bytes(clip.opus[self.audio_sent % len(clip.opus)])
            buffer.pts, buffer.duration = self._pts0 + self.audio_sent * OPUS_FRAME_NS, OPUS_FRAME_NS
            self.audio_src.push_buffer(buffer)
            self.audio_sent += 1

    def counts(self) -> dict:
        return {
            "video_sent": self.video_sent,
            "video_received": self.received("video"),
            "audio_sent": self.audio_sent,
            "audio_received": self.received("audio"),
            "keyframes_requested": self.keyframes_requested,
            "state": self.state,
        }

    def close(self) -> None:
        self.closed = True
        self.pipeline.set_state(Gst.State.NULL)


def _iterate(iterator: Gst.Iterator):
    while True:
        result, item = iterator.next()
        if result != Gst.IteratorResult.OK:
            return
        yield item


class Clip:
    def __init__(self, path: str, fps: int) -> None:
        self.frames, self.width, self.height = read_ivf(path)
        self.fps = fps
        self.keyframes = [i for i, data in enumerate(self.frames) if not data[0] & 1]  # VP8: bit 0 = 0 is key
        if not self.keyframes or self.keyframes[0] != 0:
            raise ValueError("the clip must start on a keyframe")
        # One copy of the clip in memory: each push wraps it in a new buffer (which gets its own timestamp).
        self.bytes = [GLib.Bytes.new(data) for data in self.frames]
        self.opus, self.opus_caps = encode_tone()
        self.pem, self.fingerprint = ecdsa_pem()


class Parties:
    def __init__(self, clip: Clip) -> None:
        self.clip = clip
        self.parties: dict[int, Party] = {}
        self.loop = GLib.MainLoop()
        GLib.timeout_add(10, self._tick)  # video every 40 ms, audio every 20: sent within 10 ms of their time

    def _tick(self) -> bool:
        now = time.monotonic()
        for party in self.parties.values():
            party.push_due(now)
        return True

    def handle(self, request: dict) -> bool:
        req, op = request.get("req"), request.get("op")
        try:
            if op == "offer":
                number = int(request["party"])
                if number in self.parties:
                    raise ValueError(f"party {number} exists")
                self.parties[number] = Party(number, self.clip)
                self.parties[number].offer(req)
            elif op == "answer":
                self.parties[int(request["party"])].answer(req, request["sdp"])
            elif op == "counts":
                emit({"req": req, "parties": {str(n): p.counts() for n, p in self.parties.items()}})
            elif op == "close":
                party = self.parties.pop(int(request["party"]), None)
                if party is not None:
                    party.close()
                emit({"req": req, "ok": True})
            elif op == "quit":
                for party in self.parties.values():
                    party.close()
                self.parties.clear()
                emit({"req": req, "ok": True})
                self.loop.quit()
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as error:  # reported to the driver, which fails the run
            emit({"req": req, "error": f"{type(error).__name__}: {error}"})
        return False  # GLib.idle_add: once

    def read_stdin(self) -> None:
        for line in sys.stdin:
            if line.strip():
                GLib.idle_add(self.handle, json.loads(line))
        GLib.idle_add(self.handle, {"req": None, "op": "quit"})  # the driver went away


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clip", required=True, help="VP8 frames in an IVF file (starts on a keyframe)")
    parser.add_argument("--fps", type=int, default=25)
    args = parser.parse_args()
    Gst.init(None)
    parties = Parties(Clip(args.clip, args.fps))
    threading.Thread(target=parties.read_stdin, daemon=True).start()
    emit({"event": "ready"})
    parties.loop.run()


if __name__ == "__main__":
    main()
