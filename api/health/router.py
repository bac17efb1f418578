"""`GET /healthz`: each dependency and its state; 503 naming what is down."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.db import ping
from bot.nlu import NluUnavailable

router = APIRouter(tags=["health"])
CHECK_TIMEOUT_S = 2.0


async def _check(coro) -> dict:
    try:
        detail = await asyncio.wait_for(coro, CHECK_TIMEOUT_S)
        return {"state": "up", **(detail if isinstance(detail, dict) else {})}
    except (TimeoutError, Exception) as exc:  # a health check reports, it never raises
        return {"state": "down", "error": exc.__class__.__name__}


async def _nlu(request: Request) -> dict:
    status = await request.app.state.triage.nlu.status()
    if not status.get("model_file"):
        raise NluUnavailable("no model loaded")
    replicas = [{"url": r["url"], "admitted": r["admitted"]} for r in status.get("replicas", ())]
    return {"model": status["model_file"], "replicas": replicas}


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    state = request.app.state
    database, redis, nlu = await asyncio.gather(
        _check(ping(state.engine)), _check(state.redis.ping()), _check(_nlu(request))
    )
    dependencies = {"database": database, "redis": redis, "nlu": nlu}
    down = [name for name, dep in dependencies.items() if dep["state"] != "up"]
    body = {"status": "ok" if not down else "degraded", "down": down, "dependencies": dependencies}
    return JSONResponse(body, status_code=200 if not down else 503)
