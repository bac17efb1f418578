"""The API in a process of its own for the video bench (so its CPU can be read from /proc), on SQLite, the
bench's Redis and WeChat emulator, in a scratch data directory. It holds no media: the bench's media
workers (`bench/video/media_worker.py`) do.

    .venv/bin/python bench/video/server.py --port 8765 --data-dir /tmp/x --redis-url unix:///… \
        --wechat-api-base http://… --database-url sqlite+aiosqlite:///… --recordings-dir /tmp/x/recordings

It adds `GET /_bench/stats`: frames in, forwarded, recorded and dropped per call, party and kind, from
every media worker.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--rasa-url", default="http://127.0.0.1:9")  # none: escalations take the NLU-down path
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--wechat-api-base", default=None)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--recordings-dir", type=Path, default=None)
    args = parser.parse_args()
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
        migrate_on_start=True,  # a scratch database; the API processes start one at a time
        # Every bench client is 127.0.0.1 and each customer's page is polled and written to many times a
        # minute: the limits would answer 429 to the bench rather than measure the API.
        limit_messages_per_customer="100000/minute",
        limit_video_calls_per_customer="100000/minute",
        limit_miniapp_login_per_client="100000/minute",
        limit_agent_login_per_client="100000/minute",
    )
    app = create_app(settings)

    @app.get("/_bench/stats", include_in_schema=False)
    async def stats() -> dict:
        return await app.state.video.stats()

    logging.basicConfig(level=logging.WARNING)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
