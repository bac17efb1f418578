"""How a recording file is measured (`recorder.measure`): the A/V difference is what a kind misses, not the
video's wait for its first keyframe at the start (that wait is counted as skipped frames and, past 1 s, a gap)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from api.video import evidence
from api.video.recorder import measure
from tests.video.clients import COLOURS, make_clip

FPS = 15


def write_webm(path, *, video_from_s: float, video_s: float, audio_s: float) -> None:
    """VP8 from `video_from_s` for `video_s` seconds and Opus from 0 for `audio_s`, muxed as received."""
    clip = make_clip("vp8", COLOURS["customer"], seconds=int(video_s) + 1, fps=FPS)[: int(video_s * FPS)]
    with av.open(str(path), mode="w", format="webm") as container:
        video = container.add_mux_stream("vp8", width=320, height=240)
        video.time_base = Fraction(1, 90000)
        audio = container.add_stream("libopus", rate=48000)
        audio.codec_context.layout = "stereo"
        samples = np.zeros((2, 960), dtype=np.int16)
        audio_packets = []
        for i in range(int(audio_s * 50)):
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="stereo")
            frame.sample_rate, frame.pts = 48000, i * 960
            audio_packets += audio.encode(frame)
        audio_packets += audio.encode(None)
        video_packets = []
        for i, data in enumerate(clip):
            packet = av.Packet(data)
            packet.pts = packet.dts = round((video_from_s + i / FPS) * 90000)
            packet.time_base, packet.stream, packet.is_keyframe = Fraction(1, 90000), video, i % FPS == 0
            video_packets.append(packet)
        for packet in sorted(audio_packets + video_packets, key=lambda p: float(p.pts * p.time_base)):
            container.mux(packet)


def test_a_video_that_waited_for_its_first_keyframe_is_not_an_av_mismatch(tmp_path):
    path = tmp_path / "late-key.webm"
    write_webm(path, video_from_s=0.8, video_s=3.2, audio_s=4.0)
    result = measure(path)
    assert result.durations_s["audio"] - result.durations_s["video"] > 0.6  # the files' lengths do differ…
    assert abs(result.av_offset_s) < 0.15, result.av_offset_s  # …but both run to the end of the call
    assert evidence.verdict(gaps=[], av_offset_s=result.av_offset_s, dropped={}, kinds={"audio", "video"})[0] == (
        "complete"
    )


def test_audio_that_stops_early_is_an_av_mismatch(tmp_path):
    path = tmp_path / "short-audio.webm"
    write_webm(path, video_from_s=0.0, video_s=4.0, audio_s=3.0)
    result = measure(path)
    assert result.av_offset_s < -0.8, result.av_offset_s
    status, issues = evidence.verdict(gaps=[], av_offset_s=result.av_offset_s, dropped={}, kinds={"audio", "video"})
    assert status == "degraded" and issues == [f"audio shorter than video by {abs(result.av_offset_s):.1f} s"]


def test_video_that_starts_late_and_stops_early_is_still_a_mismatch(tmp_path):
    path = tmp_path / "late-and-short.webm"
    write_webm(path, video_from_s=0.8, video_s=2.0, audio_s=4.0)
    result = measure(path)
    assert result.av_offset_s > 1.0, result.av_offset_s
