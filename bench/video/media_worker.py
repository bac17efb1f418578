"""A media worker for the video bench: `api.video.worker` as is (`--mode record`), or with recording
switched off (`--mode relay`, the baseline: the recorders still consume every incoming frame, as they
must, but never open a file). Configured like any media worker, from YUNTING_* variables."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from api.video import worker
from api.video.media import CallMedia


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("record", "relay"), default="record")
    args = parser.parse_args()
    if args.mode == "relay":

        async def no_recording(self, paths):
            return {role: "recording switched off (bench baseline)" for role in paths}

        CallMedia.start_recording = no_recording
    worker.main()


if __name__ == "__main__":
    main()
