"""Small clients the tests drive the system with: the emulator's simulator API, a customer in the
mini-program, an agent. All over real HTTP and WebSocket."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from sqlalchemy import event
from sqlalchemy.engine import Engine
from websockets.asyncio.client import connect

from api.agents import service as agents
from api.db import create_engine, unit_of_work
from api.settings import DEV_MINIAPP_APP_ID, DEV_OA_APP_ID


class EmulatorClient:
    """The WeChat side: mints wx.login codes for a simulated person."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def wx_login(self, person: str, *, appid: str = DEV_MINIAPP_APP_ID, unbound: bool = False) -> str:
        body = {"appid": appid, "person": person, **({"unbound": True} if unbound else {})}
        response = httpx.post(self.base_url + "/_sim/wx_login", json=body)
        response.raise_for_status()
        return response.json()["code"]

    def identity(self, person: str, *, appid: str = DEV_MINIAPP_APP_ID) -> dict:
        response = httpx.get(self.base_url + "/_sim/identity", params={"appid": appid, "person": person})
        response.raise_for_status()
        return response.json()


# `session.get(Customer, id)`: the statement SQLAlchemy emits for a customer's row by its key.
_CUSTOMER_BY_ID = re.compile(r"FROM customer\s+WHERE customer\.id = ")


@contextmanager
def customer_row_reads(customer_id: int | None = None) -> Iterator[list[tuple]]:
    """The reads of a customer's row by its id that this process (the in-process apps) makes meanwhile: the
    parameters of each, only those naming ``customer_id`` when given (a background loop may read others)."""
    seen: list[tuple] = []

    def record(_conn, _cursor, statement, parameters, _context, _executemany) -> None:
        if _CUSTOMER_BY_ID.search(statement):
            values = tuple(parameters.values()) if isinstance(parameters, dict) else tuple(parameters)
            if customer_id is None or customer_id in values:
                seen.append(values)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def new_person() -> str:
    return "person-" + uuid.uuid4().hex[:10]


class MiniappCustomer:
    """A customer using the mini-program chat."""

    def __init__(self, app_url: str, token: str, customer_id: int) -> None:
        self.app_url = app_url
        self.token = token
        self.customer_id = customer_id
        self.http = httpx.AsyncClient(base_url=app_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    @classmethod
    async def login(cls, app_url: str, emulator: EmulatorClient, person: str | None = None) -> MiniappCustomer:
        code = emulator.wx_login(person or new_person())
        async with httpx.AsyncClient(base_url=app_url, timeout=30) as http:
            response = await http.post("/miniapp/login", json={"code": code})
        assert response.status_code == 200, response.text
        body = response.json()
        return cls(app_url, body["token"], body["customer_id"])

    async def say(self, text: str, client_msg_id: str | None = None) -> dict:
        response = await self.http.post(
            "/miniapp/messages", json={"text": text, "client_msg_id": client_msg_id or uuid.uuid4().hex}
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def history(self) -> dict:
        response = await self.http.get("/miniapp/messages")
        assert response.status_code == 200, response.text
        return response.json()

    async def ticket(self, purpose: str) -> str:
        """A single-use ticket for a URL (the socket, the video page): tokens never go in URLs."""
        response = await self.http.post("/miniapp/tickets", json={"purpose": purpose})
        assert response.status_code == 200, response.text
        return response.json()["ticket"]

    def socket(self, after_id: int = 0):
        """`async with customer.socket() as ws`: the WebSocket, opened with a fresh ticket as the apps do."""
        return _TicketedSocket(self, after_id)

    async def aclose(self) -> None:
        await self.http.aclose()


class _TicketedSocket:
    def __init__(self, customer: MiniappCustomer, after_id: int) -> None:
        self.customer, self.after_id, self.connection = customer, after_id, None

    async def __aenter__(self):
        ticket = await self.customer.ticket("socket")
        base = self.customer.app_url.replace("http://", "ws://")
        self.connection = connect(f"{base}/miniapp/ws?ticket={ticket}&after_id={self.after_id}")
        return await self.connection.__aenter__()

    async def __aexit__(self, *exc_info):
        return await self.connection.__aexit__(*exc_info)


async def next_message(ws, *, predicate=lambda m: True, timeout: float = 10.0) -> dict:
    """The next pushed message (skipping other events) that matches."""

    async def wait() -> dict:
        while True:
            event = json.loads(await ws.recv())
            if event.get("type") == "message" and predicate(event["message"]):
                return event["message"]

    return await asyncio.wait_for(wait(), timeout)


async def create_agent(
    database_url: str,
    *,
    username: str,
    password: str,
    skills: list[str],
    role: str = "agent",
    capacity: int = 3,
    video_capable: bool = True,
) -> int:
    engine = create_engine(database_url)
    try:
        async with unit_of_work(engine) as session:
            agent = await agents.create(
                session,
                username=username,
                password=password,
                skills=skills,
                role=role,
                capacity=capacity,
                video_capable=video_capable,
            )
        return agent.id
    finally:
        await engine.dispose()


class AgentConsole:
    """An agent using the agent API."""

    def __init__(self, app_url: str, token: str) -> None:
        self.http = httpx.AsyncClient(base_url=app_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    @classmethod
    async def login(cls, app_url: str, username: str, password: str) -> AgentConsole:
        async with httpx.AsyncClient(base_url=app_url, timeout=30) as http:
            response = await http.post("/agents/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.text
        return cls(app_url, response.json()["token"])

    async def aclose(self) -> None:
        await self.http.aclose()


__all__ = [
    "DEV_OA_APP_ID",
    "AgentConsole",
    "EmulatorClient",
    "MiniappCustomer",
    "create_agent",
    "new_person",
    "next_message",
]


def oa_say(emulator_url: str, app_url: str, person: str, text: str) -> dict:
    """The simulated person writes to the official account: the emulator signs and pushes it like WeChat."""
    from api.settings import DEV_OA_TOKEN

    response = httpx.post(
        emulator_url + "/_sim/oa/say",
        json={"person": person, "text": text, "url": app_url + "/wechat/oa", "token": DEV_OA_TOKEN, "mode": "plain"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json()


def settings_environment(settings) -> dict[str, str]:
    """`settings` as the YUNTING_ variables a process of the app reads them from (secrets revealed: test values)."""
    env: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (list, dict, tuple)):
            text = json.dumps(value)
        else:
            text = str(value)
        env[f"YUNTING_{name.upper()}"] = text
    return env


class AppProcess:
    """The app in a uvicorn process of its own, as `make run` serves it (bounded request heads, no proxy headers).
    For tests whose client side must not share an interpreter with the app (see tests/hardening/test_fuzz.py)."""

    def __init__(self, settings, log_path) -> None:
        import os
        import sys

        from api.embedded import free_port
        from api.paths import ROOT

        self.port, self.log_path = free_port(), log_path
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--host", "127.0.0.1",
            "--port", str(self.port), "--no-proxy-headers", "--http", "api.http_limits:BoundedHttpToolsProtocol",
        ]  # fmt: skip
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **settings_environment(settings)}
        self.cwd = ROOT
        self.process = None

    def start(self, timeout_s: float = 120.0) -> str:
        import subprocess
        import time

        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.process.poll() is None, f"the app exited:\n{self.log_text()}"
            try:
                if httpx.get(self.url + "/livez", timeout=2).status_code == 200:
                    return self.url
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"the app did not start:\n{self.log_text()}"
            time.sleep(0.3)

    def log_text(self) -> str:
        with open(self.log_path, "rb") as log:
            return log.read()[-3000:].decode(errors="replace")

    def stop(self) -> None:
        import subprocess

        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
