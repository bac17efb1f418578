"""The opt-in `Server-Timing` header: the app's time and the part of it spent in NLU parses."""

from __future__ import annotations

import asyncio

import httpx

from api.timing import ServerTiming
from bot.nlu import nlu_timings


async def _app(scope, receive, send) -> None:
    async def parse() -> None:  # stands in for RasaClient.parse, run in a spawned task like the OA channel's
        nlu_timings.get().append(0.004)

    await asyncio.ensure_future(parse())
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_server_timing_reports_app_and_nlu_time():
    transport = httpx.ASGITransport(app=ServerTiming(_app))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/")
    spans = dict(part.strip().split(";dur=") for part in response.headers["server-timing"].split(","))
    assert float(spans["nlu"]) == 4.0
    assert float(spans["app"]) >= 0
    assert nlu_timings.get() is None  # nothing leaks out of the request
