"""Opt-in `Server-Timing` header (`YUNTING_SERVER_TIMING`): the app's time for a request and the NLU's part.

For benchmarks: a client can then tell the app's own work from the HTTP hops and from the Rasa parse.
`app` runs from the moment the app gets the request to the moment it starts the answer (uvicorn's HTTP
parsing and writing are outside it); `nlu` sums the parses made for the request as their callers waited for
them (a cache lookup included), including those of tasks it spawned (they inherit the request's context);
`rasa` sums its requests to Rasa, from writing each to reading its answer; `ask` is the time from the
request's start to its first request to Rasa. So at one sender `app − rasa` is the app's own part of the
latency, `ask` of it before Rasa was asked and the rest after the answer. `rasa` and `ask` are 0 when no
request went to Rasa (a cached text).
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.nlu import NluTimings, nlu_timings


class ServerTiming:
    """Pure ASGI middleware adding ``Server-Timing: app;dur=<ms>, nlu;dur=<ms>`` to every HTTP answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timings = NluTimings()
        token = nlu_timings.set(timings)
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                total, nlu = (time.perf_counter() - started) * 1000, sum(timings.parses) * 1000
                rasa = sum(answered - written for written, answered in timings.asks) * 1000
                ask = (min(written for written, _ in timings.asks) - started) * 1000 if timings.asks else 0.0
                header = f"app;dur={total:.2f}, nlu;dur={nlu:.2f}, rasa;dur={rasa:.2f}, ask;dur={ask:.2f}".encode()
                message = {**message, "headers": [*message.get("headers", ()), (b"server-timing", header)]}
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            nlu_timings.reset(token)
