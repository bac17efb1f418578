"""Which codec a call uses, and what the server needs to know about an encoded frame without decoding it
(is it a keyframe, how big is the picture). Public aiortc API only (`RTCRtpSender.getCapabilities`,
`aiortc.sdp`).

One codec per call: the first party's offer picks it (H.264 constrained baseline, packetization mode 1,
preferred; VP8 otherwise) and every later offer is answered with the same codec when it offers it, so the
server forwards frames as received. A party that doesn't offer the call's codec gets its own best one, and
only the media between the two differing connections is transcoded (`relay.ForwardTrack`).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters
from aiortc.sdp import SessionDescription, parse_h264_profile_level_id

H264, VP8, OPUS = "video/h264", "video/vp8", "audio/opus"
# In order of preference: constrained baseline is what WeChat's and Chromium's hardware/OpenH264 encoders send;
# aiortc's own H.264 entry "42001f" (baseline) is the same bitstream in practice.
VIDEO_PREFERENCE = ((H264, "42e01f"), (H264, "42001f"), (VP8, None))
CONTAINERS = {H264: (".mp4", "video/mp4"), VP8: (".webm", "video/webm")}
AUDIO_ONLY = (".webm", "audio/webm")


def _capability(mime: str, profile: str | None) -> RTCRtpCodecCapability:
    for codec in RTCRtpSender.getCapabilities(mime.split("/")[0]).codecs:
        if codec.mimeType.lower() == mime and (profile is None or codec.parameters.get("profile-level-id") == profile):
            return codec
    raise LookupError(f"aiortc does not offer {mime} {profile or ''}")


def _rtx(kind: str) -> list[RTCRtpCodecCapability]:
    return [c for c in RTCRtpSender.getCapabilities(kind).codecs if c.mimeType.lower() == f"{kind}/rtx"]


def _h264_profile(codec: RTCRtpCodecParameters):
    return parse_h264_profile_level_id(str(codec.parameters.get("profile-level-id", "42e01f")))[0]


def supports(offered: list[RTCRtpCodecParameters], mime: str, profile: str | None = None) -> bool:
    """Whether an offer's codec list has `mime` (for H.264: that profile, packetization mode 1)."""
    for codec in offered:
        if codec.mimeType.lower() != mime:
            continue
        if mime != H264:
            return True
        try:
            if (
                str(codec.parameters.get("packetization-mode", "0")) == "1"
                and _h264_profile(codec) == parse_h264_profile_level_id(profile or "42e01f")[0]
            ):
                return True
        except ValueError:
            continue
    return False


@dataclass(frozen=True)
class Choice:
    """The codec one connection of the call is answered with, per kind."""

    mime: str
    profile: str | None = None

    def preferences(self) -> list[RTCRtpCodecCapability]:
        kind = self.mime.split("/")[0]
        return [_capability(self.mime, self.profile), *(_rtx(kind) if kind == "video" else [])]


def choose(kind: str, offered: list[RTCRtpCodecParameters], call_codec: str | None) -> Choice | None:
    """The codec to answer a party's offer with: the call's codec if they offer it, else their best one."""
    if kind == "audio":
        return Choice(OPUS) if supports(offered, OPUS) else None  # None: aiortc's own pick (G.711, G.722)
    if call_codec is not None:
        for mime, profile in VIDEO_PREFERENCE:
            if mime == call_codec and supports(offered, mime, profile):
                return Choice(mime, profile)
    for mime, profile in VIDEO_PREFERENCE:
        if supports(offered, mime, profile):
            return Choice(mime, profile)
    return None


def offered_media(sdp: str) -> list[tuple[str, list[RTCRtpCodecParameters]]]:
    """(kind, codecs) of each audio/video m-line of an offer, in order; ValueError if it doesn't parse."""
    description = SessionDescription.parse(sdp)
    return [(m.kind, list(m.rtp.codecs)) for m in description.media if m.kind in ("audio", "video")]


def answered_codecs(sdp: str) -> dict[str, str]:
    """The codec each kind was answered with (the first of each kind's first m-line), as a lower-case mime."""
    result: dict[str, str] = {}
    for media in SessionDescription.parse(sdp).media:
        if media.kind in ("audio", "video") and media.kind not in result and media.rtp.codecs:
            result[media.kind] = media.rtp.codecs[0].mimeType.lower()
    return result


def container_for(video_codec: str | None) -> tuple[str, str]:
    """(file suffix, content type) for a party's file: H.264 → MP4, VP8 (or audio only) → WebM."""
    return CONTAINERS.get(video_codec or "", AUDIO_ONLY)


# --- looking into encoded frames (headers only, never decoding) ---


def h264_nal_units(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B access unit (what aiortc's depayloader produces)."""
    units, start, i, n = [], None, 0, len(data)
    while i + 3 <= n:
        if data[i] == 0 and data[i + 1] == 0 and data[i + 2] == 1:
            if start is not None:
                units.append(data[start : i - 1 if i > 0 and data[i - 1] == 0 else i])
            i += 3
            start = i
        else:
            i += 1
    if start is not None and start < n:
        units.append(data[start:])
    return [u for u in units if u]


def is_keyframe(mime: str, data: bytes) -> bool:
    """An IDR picture (H.264) or a key frame (VP8: bit 0 of the frame tag is 0); audio frames always are."""
    if mime == H264:
        return any(unit[0] & 0x1F == 5 for unit in h264_nal_units(data))
    if mime == VP8:
        return len(data) >= 10 and not data[0] & 0x01
    return True


def picture_size(mime: str, data: bytes) -> tuple[int, int] | None:
    """Width and height from a keyframe's headers (VP8 key frame header, H.264 SPS); None if not found."""
    if mime == VP8:
        if len(data) >= 10 and not data[0] & 0x01 and data[3:6] == b"\x9d\x01\x2a":
            return (data[6] | data[7] << 8) & 0x3FFF, (data[8] | data[9] << 8) & 0x3FFF
        return None
    if mime == H264:
        for unit in h264_nal_units(data):
            if unit[0] & 0x1F == 7:
                try:
                    return _sps_size(unit[1:])
                except IndexError:
                    return None
    return None


class _Bits:
    def __init__(self, data: bytes) -> None:
        # Remove emulation prevention bytes (00 00 03 → 00 00).
        out, zeros = bytearray(), 0
        for byte in data:
            if zeros >= 2 and byte == 3:
                zeros = 0
                continue
            out.append(byte)
            zeros = zeros + 1 if byte == 0 else 0
        self.data, self.pos = bytes(out), 0

    def bit(self) -> int:
        value = self.data[self.pos >> 3] >> (7 - (self.pos & 7)) & 1
        self.pos += 1
        return value

    def bits(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = value << 1 | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        value = self.ue()
        return (value + 1) // 2 if value & 1 else -(value // 2)


def _sps_size(rbsp: bytes) -> tuple[int, int]:
    """The cropped picture size of an H.264 sequence parameter set (ITU-T H.264 §7.3.2.1.1)."""
    bits = _Bits(rbsp)
    profile = bits.bits(8)
    bits.bits(16)  # constraint flags, level
    bits.ue()  # seq_parameter_set_id
    chroma = 1
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma = bits.ue()
        if chroma == 3:
            bits.bit()
        bits.ue(), bits.ue(), bits.bit()  # bit depths, qpprime
        if bits.bit():  # scaling matrices
            for i in range(8 if chroma != 3 else 12):
                if bits.bit():
                    last = following = 8
                    for _ in range(16 if i < 6 else 64):
                        if following:
                            following = (last + bits.se() + 256) % 256
                        last = following or last
    bits.ue()  # log2_max_frame_num_minus4
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()
    elif poc_type == 1:
        bits.bit(), bits.se(), bits.se()
        for _ in range(bits.ue()):
            bits.se()
    bits.ue(), bits.bit()  # max_num_ref_frames, gaps allowed
    width_mbs, height_units = bits.ue() + 1, bits.ue() + 1
    frame_mbs_only = bits.bit()
    if not frame_mbs_only:
        bits.bit()
    bits.bit()  # direct_8x8_inference
    width, height = width_mbs * 16, (2 - frame_mbs_only) * height_units * 16
    if bits.bit():  # frame cropping
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
        unit_x, unit_y = (2, 2 * (2 - frame_mbs_only)) if chroma == 1 else (1, 2 - frame_mbs_only)
        width -= unit_x * (left + right)
        height -= unit_y * (top + bottom)
    return width, height
