"""The in-process server the tests and the emulator run on stops within its bounds even when the app's
shutdown hangs: its loop's tasks are cancelled rather than left running against services already gone."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx

from api.embedded import ThreadedServer


def hanging_app(shutdown_started: threading.Event):
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    shutdown_started.set()
                    await asyncio.Event().wait()  # a shutdown step that never ends
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def test_a_server_whose_shutdown_hangs_is_stopped_within_its_bounds():
    shutdown_started = threading.Event()
    server = ThreadedServer(hanging_app(shutdown_started))
    assert httpx.get(server.start()).text == "ok"
    started = time.monotonic()
    server.stop(drain_s=0.5, lifespan_s=0.5)
    assert shutdown_started.is_set()
    assert not server.thread.is_alive(), "the server's thread outlived stop()"
    assert time.monotonic() - started < 5
