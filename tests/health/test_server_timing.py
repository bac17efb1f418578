"""The opt-in `Server-Timing` header: the app's time, the part of it spent in NLU parses, and in requests to Rasa."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx

from api.timing import ServerTiming
from bot.nlu import NluTimings, RasaClient, nlu_timings


async def _app(scope, receive, send) -> None:
    async def parse() -> None:  # stands in for RasaClient.parse, run in a spawned task like the OA channel's
        timings = nlu_timings.get()
        timings.parses.append(0.004)
        written = time.perf_counter()
        timings.asks.append((written, written + 0.003))  # its request to Rasa: 3 ms

    await asyncio.ensure_future(parse())
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_server_timing_reports_app_and_nlu_time():
    transport = httpx.ASGITransport(app=ServerTiming(_app))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/")
    spans = dict(part.strip().split(";dur=") for part in response.headers["server-timing"].split(","))
    assert float(spans["nlu"]) == 4.0 and float(spans["rasa"]) == 3.0
    assert 0 <= float(spans["ask"]) <= float(spans["app"])
    assert nlu_timings.get() is None  # nothing leaks out of the request


async def test_a_parse_records_its_request_to_rasa_and_a_joined_one_does_not(rasa_url):
    """The real client against the real Rasa: the request's span is recorded where the request is timed."""
    client = RasaClient(rasa_url, timeout_s=30)
    timings = NluTimings()
    token = nlu_timings.set(timings)
    try:
        text = f"我的信用卡丢了（{uuid.uuid4().hex[:6]}）"
        # Two callers of one text at once: one request to Rasa (the second joins it), two parses waited for.
        await asyncio.gather(client.parse(text), client.parse(text))
        assert len(timings.parses) == 2 and len(timings.asks) == 1
        written, answered = timings.asks[0]
        assert 0 < answered - written <= max(timings.parses)
    finally:
        nlu_timings.reset(token)
        await client.aclose()
