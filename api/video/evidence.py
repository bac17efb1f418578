"""What a recording holds, stated honestly: where each frame goes in the file, every gap, and the verdict.

A frame's place in the file is the sender's clock (RTP timestamps, smooth) anchored at the frame's arrival
on the recording's clock; when the two disagree by more than `REANCHOR_S` (the sender paused, restarted or
its clock jumped) it is anchored again at its arrival, so a pause stays a pause in the file instead of
being squeezed out, and audio and video stay in step with the call.

A recording is `degraded` (kept, flagged, never `complete`) when it has a gap longer than `GAP_S` in either
kind, audio and video lengths that differ by more than `AV_MISMATCH_S`, or frames that arrived and weren't
written (writer over its bound, a codec it can't hold).
"""

from __future__ import annotations

from dataclasses import dataclass, field

GAP_S = 1.0
AV_MISMATCH_S = 0.5
REANCHOR_S = 0.5


@dataclass
class KindTimeline:
    """One kind's placement in the file and the gaps between the frames written."""

    kind: str
    clock: int  # ticks per second of the RTP timestamps and of the file's stream
    anchor: tuple[int, int] | None = None  # (RTP timestamp, file ticks) it was anchored at
    last: int | None = None  # file ticks of the last frame placed
    gaps: list[dict] = field(default_factory=list)

    def place(self, timestamp: int, arrival_s: float) -> int:
        """File ticks for a frame with RTP `timestamp` that arrived `arrival_s` after the recording started."""
        arrived = round(arrival_s * self.clock)
        if self.anchor is None or abs(self.anchor[1] + timestamp - self.anchor[0] - arrived) > REANCHOR_S * self.clock:
            self.anchor = (timestamp, arrived)
        ticks = self.anchor[1] + timestamp - self.anchor[0]
        if self.last is not None and ticks <= self.last:
            ticks = self.last + 1
        previous = self.last if self.last is not None else 0
        if (ticks - previous) / self.clock > GAP_S:
            self.gaps.append(self._gap(previous, ticks))
        self.last = ticks
        return ticks

    def close(self, end_s: float) -> None:
        """The recording ended `end_s` after it started: a silent tail is a gap too."""
        end = round(end_s * self.clock)
        previous = self.last if self.last is not None else 0
        if (end - previous) / self.clock > GAP_S:
            self.gaps.append(self._gap(previous, end))

    def _gap(self, start: int, end: int) -> dict:
        return {
            "kind": self.kind,
            "at_s": round(start / self.clock, 3),
            "length_s": round((end - start) / self.clock, 3),
        }


def verdict(
    *, gaps: list[dict], av_offset_s: float | None, dropped: dict[str, int], kinds: set[str]
) -> tuple[str, list[str]]:
    """`complete` or `degraded`, with every reason in words (for the row, the console and the log)."""
    issues = [f"{g['kind']} gap of {g['length_s']:.1f} s at {g['at_s']:.1f} s" for g in gaps]
    if av_offset_s is not None and {"audio", "video"} <= kinds and abs(av_offset_s) > AV_MISMATCH_S:
        issues.append(f"audio {'longer' if av_offset_s > 0 else 'shorter'} than video by {abs(av_offset_s):.1f} s")
    for kind, count in sorted(dropped.items()):
        if count:
            issues.append(f"{count} {kind} frames received but not written")
    return ("degraded" if issues else "complete"), issues
