"""The API in a process of its own for the video bench (so its CPU can be read from /proc), on the
embedded defaults (SQLite, an embedded Redis, the bundled emulator) in a scratch data directory.

    .venv/bin/python bench/video/server.py --port 8765 --data-dir /tmp/x [--mode record|relay]
        [--redis-url unix:///… --wechat-api-base http://… --database-url sqlite+aiosqlite:///…]

Several of these on one database, Redis and emulator are several API workers (`bench/video/run.py
--workers 2`); each holds the media of the calls whose first offer it took.

`--mode relay` is the baseline: the same relay with recording switched off (the recorders still consume
every incoming frame, as they must, but never open a file). It also adds `GET /_bench/stats`: frames in,
forwarded, recorded and dropped per call, party and kind, and each recorder's backlog.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import uvicorn  # noqa: E402

from api.main import create_app  # noqa: E402
from api.settings import Settings  # noqa: E402
from api.video.media import CallMedia  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--mode", choices=("record", "relay"), default="record")
    parser.add_argument("--rasa-url", default="http://127.0.0.1:9")  # none: escalations take the NLU-down path
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--wechat-api-base", default=None)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--recordings-dir", type=Path, default=None)
    args = parser.parse_args()
    if args.mode == "relay":

        async def no_recording(self, paths):
            return {role: "recording switched off (bench baseline)" for role in paths}

        CallMedia.start_recording = no_recording
    settings = Settings(
        env="development",
        port=args.port,
        data_dir=args.data_dir,
        rasa_url=args.rasa_url,
        nlu_timeout_s=1.0,
        recordings_dir=args.recordings_dir or args.data_dir / "recordings",
        video_ring_timeout_s=300,
        secret_key="bench-" + "x" * 40,
        agent_heartbeat_ttl_s=3600,
        redis_url=args.redis_url,
        wechat_api_base=args.wechat_api_base,
        database_url=args.database_url,
    )
    app = create_app(settings)

    @app.get("/_bench/stats", include_in_schema=False)
    async def stats() -> dict:
        calls = app.state.video.calls
        return {
            str(call_id): {
                "media": media.stats(),
                "pending": {role: dict(rec.pending) for role, rec in media.recorders.items()},
            }
            for call_id, media in calls.items()
        }

    logging.basicConfig(level=logging.WARNING)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
