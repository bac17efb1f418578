"""Fixtures: the emulator served over real HTTP by uvicorn in a background thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from api.wechat_emulator.app import create_app
from api.wechat_emulator.state import Clock

OA_APPID, OA_SECRET = "wxoatest000000001", "oa-test-secret"
MP_APPID, MP_SECRET = "wxmptest000000001", "mp-test-secret"
FROZEN_START = 1_700_000_000.0  # a frozen clock: time moves only when a test advances it


@pytest.fixture(scope="session")
def emulator_base() -> Iterator[str]:
    """Base URL of one emulator for the whole session (tests reset it, see ``sim``)."""
    app = create_app({OA_APPID: (OA_SECRET, "oa"), MP_APPID: (MP_SECRET, "miniapp")}, clock=Clock(start=FROZEN_START))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="wechat-emulator", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the WeChat emulator did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class Sim:
    """An HTTP client on the emulator with shorthands for the steps tests repeat."""

    # The registered apps, for tests (they cannot import this conftest by name).
    OA_APPID, OA_SECRET, MP_APPID, MP_SECRET = OA_APPID, OA_SECRET, MP_APPID, MP_SECRET

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        self.base = str(http.base_url).rstrip("/")

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        """GET and decode JSON, failing on any HTTP error."""
        response = self.http.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Any = None, **params: Any) -> dict[str, Any]:
        """POST JSON and decode JSON, failing on any HTTP error."""
        response = self.http.post(path, params=params, json=body)
        response.raise_for_status()
        return response.json()

    def token(self, appid: str = OA_APPID, secret: str = OA_SECRET) -> str:
        """A fresh access_token."""
        return self.get("/cgi-bin/token", grant_type="client_credential", appid=appid, secret=secret)["access_token"]

    def identity(self, person: str, appid: str = OA_APPID) -> dict[str, Any]:
        """The expected openid/unionid of a simulated person."""
        return self.get("/_sim/identity", appid=appid, person=person)

    def code(self, person: str, appid: str = MP_APPID, **extra: Any) -> str:
        """A wx.login code."""
        return self.post("/_sim/wx_login", {"appid": appid, "person": person, **extra})["code"]

    def exchange(self, code: str, appid: str = MP_APPID, secret: str = MP_SECRET) -> dict[str, Any]:
        """The jscode2session answer for a code."""
        return self.get(
            "/sns/jscode2session", appid=appid, secret=secret, js_code=code, grant_type="authorization_code"
        )

    def interact(self, openid: str, kind: str = "message", appid: str = OA_APPID) -> None:
        """Record a user interaction."""
        self.post("/_sim/interactions", {"appid": appid, "openid": openid, "kind": kind})

    def send_text(self, token: str, openid: str, content: str = "hello") -> int:
        """Send a customer-service text; returns its errcode."""
        body = {"touser": openid, "msgtype": "text", "text": {"content": content}}
        return self.post("/cgi-bin/message/custom/send", body, access_token=token)["errcode"]

    def advance(self, seconds: float) -> None:
        """Move the emulated clock forward."""
        self.post("/_sim/clock/advance", {"seconds": seconds})

    def sent(self, **filters: Any) -> list[dict[str, Any]]:
        """The sent log."""
        return self.get("/_sim/sent", **filters)["items"]


@pytest.fixture
def sim(emulator_base: str) -> Iterator[Sim]:
    """A client on a freshly reset emulator."""
    with httpx.Client(base_url=emulator_base, timeout=5) as http:
        http.post("/_sim/reset").raise_for_status()
        yield Sim(http)
