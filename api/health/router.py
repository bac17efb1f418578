"""Probes and figures: `/livez` (the process), `/readyz` (can serve: database and Redis), `/healthz` (every
dependency, as before) and `/metrics` (Prometheus, protected)."""

from __future__ import annotations

import asyncio
import hmac

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.db import ping
from api.errors import NotPermitted
from api.health.metrics import exposition
from api.proxies import in_networks, parse_networks, peer_address
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


async def _dependencies(request: Request) -> dict[str, dict]:
    state = request.app.state
    database, redis, nlu = await asyncio.gather(
        _check(ping(state.engine)), _check(state.redis.ping()), _check(_nlu(request))
    )
    return {"database": database, "redis": redis, "nlu": nlu}


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    """Every dependency; 503 naming what is down (NLU included: a dashboard's view, not a readiness probe)."""
    dependencies = await _dependencies(request)
    down = [name for name, dep in dependencies.items() if dep["state"] != "up"]
    body = {"status": "ok" if not down else "degraded", "down": down, "dependencies": dependencies}
    return JSONResponse(body, status_code=200 if not down else 503)


@router.get("/livez")
async def livez() -> dict:
    """The process answers (its event loop runs): restart it when this fails, nothing more."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Send traffic here? Only the database and Redis decide: without NLU the worker still stores every
    message and hands customers to agents, so taking it out of the balancer would only make things worse.
    The NLU's state is reported, never failing."""
    dependencies = await _dependencies(request)
    down = [name for name in ("database", "redis") if dependencies[name]["state"] != "up"]
    degraded = [name for name, dep in dependencies.items() if dep["state"] != "up" and name not in down]
    status = "not_ready" if down else ("degraded" if degraded else "ok")
    body = {"status": status, "down": down, "degraded": degraded, "dependencies": dependencies}
    return JSONResponse(body, status_code=503 if down else 200)


def _may_scrape(request: Request) -> bool:
    settings = request.app.state.settings
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if settings.metrics_token is not None and scheme.lower() == "bearer" and token:
        return hmac.compare_digest(token.strip().encode(), settings.metrics_token.get_secret_value().encode())
    # The socket's peer, never X-Forwarded-For: a proxy in the allowed network must not open it to the world.
    return in_networks(peer_address(request), parse_networks(settings.metrics_networks))


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text format; for `YUNTING_METRICS_TOKEN` (bearer) or peers in `YUNTING_METRICS_NETWORKS`."""
    if not _may_scrape(request):
        raise NotPermitted("metrics are for the monitoring system", code="metrics_forbidden")
    state = request.app.state
    body = await exposition(state.engine, state.redis, deployment=state.settings.nlu_deployment, local=[])
    return Response(body, media_type=CONTENT_TYPE_LATEST)
