"""Opt-in `Server-Timing` header (`YUNTING_SERVER_TIMING`): the app's time for a request and the NLU's part.

For benchmarks: a client can then tell the app's own work from the HTTP hops and from the Rasa parse.
`app` runs from the moment the app gets the request to the moment it starts the answer (uvicorn's HTTP
parsing and writing are outside it); `nlu` sums the `/model/parse` calls made for the request, including
those of tasks it spawned (they inherit the request's context).
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.nlu import nlu_timings


class ServerTiming:
    """Pure ASGI middleware adding ``Server-Timing: app;dur=<ms>, nlu;dur=<ms>`` to every HTTP answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        spans: list[float] = []
        token = nlu_timings.set(spans)
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                total, nlu = (time.perf_counter() - started) * 1000, sum(spans) * 1000
                header = f"app;dur={total:.2f}, nlu;dur={nlu:.2f}".encode()
                message = {**message, "headers": [*message.get("headers", ()), (b"server-timing", header)]}
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            nlu_timings.reset(token)
