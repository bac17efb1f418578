"""`python -m api.studio.trainer`: the studio's job worker (training and activation), out of the API workers.

Training a model takes both cores for minutes; in an API worker it would slow every customer that worker
serves. The API queues jobs in SQL (`studio_job`); this process claims them (one of each kind at a time
deployment-wide, a Redis lock per kind), runs them and writes their progress where every API worker reads
it. Run one or more wherever training should happen (`make run` starts one): they need the same database,
Redis, `YUNTING_NLU_DATA_DIR` and `YUNTING_MODELS_DIR` (shared storage, which the Rasa hosts read too) as
the API, and the Rasa replicas' URLs.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from api.db import check_schema, create_engine, migrate
from api.masking import install_log_masking
from api.realtime import DeploymentRedis
from api.settings import Settings
from api.studio.service import Studio
from bot.nlu import RasaClient

log = logging.getLogger("yunting.trainer")


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    if settings.redis_url is None:
        raise SystemExit("the studio trainer needs YUNTING_REDIS_URL (the API's Redis)")
    await asyncio.to_thread(migrate if settings.migrates_on_start else check_schema, settings.resolved_database_url)
    engine = create_engine(settings.resolved_database_url)
    redis = DeploymentRedis.from_url(settings.redis_url, decode_responses=True)
    nlu = RasaClient(settings.rasa_url, timeout_s=settings.nlu_timeout_s)
    studio = Studio(settings, engine, redis, nlu)
    try:
        await studio.start(run_jobs=True)
        log.info("studio trainer for deployment %r: waiting for jobs", settings.nlu_deployment)
        await stop.wait()
    finally:
        await studio.stop()
        await nlu.aclose()
        await redis.aclose()
        await engine.dispose()


def main() -> int:
    settings = Settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_masking()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
