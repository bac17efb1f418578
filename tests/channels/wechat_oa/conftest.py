"""The official account end to end: the emulator plays WeChat (signs, encrypts, pushes, retries, keeps
the customer-service quota) against app instances served over real HTTP with the real Rasa, Redis and SQL.

App instances: the session's `app_url` (plain mode, the default 4 s budget); `secure_app_url` (an
EncodingAESKey and a previous one); `slow_app_url` (a 1 ms budget: every answer is late, so it goes by
customer-service message; and a card thumbnail, so video links become mini-program cards). The extra
instances live for this package only, so they add no writers to the SQL database of later tests.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import struct
import time
import uuid
from pathlib import Path
from string import Template
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from sqlmodel import col, select

from api.channels.wechat_oa.models import OaPendingMessage
from api.conversations.models import Conversation, Message
from api.customers.models import ChannelIdentity
from api.db import create_engine, unit_of_work
from api.embedded import ThreadedServer
from api.main import create_app
from api.settings import DEV_OA_APP_ID, DEV_OA_TOKEN

FIXTURES = Path(__file__).parent / "fixtures"
KEY = base64.b64encode(bytes(range(32))).decode().rstrip("=")  # an EncodingAESKey: 43 characters
OLD_KEY = base64.b64encode(bytes(range(100, 132))).decode().rstrip("=")
OTHER_KEY = base64.b64encode(bytes(range(200, 232))).decode().rstrip("=")
GH = "gh_yuntingtest01"  # the account's original id, ToUserName of every push
CARD_THUMB = "thumb-media-video-card"
_msg_ids = itertools.count(int(time.time() * 1000) * 1000)


def fixture(name: str, **values: Any) -> str:
    """A payload from fixtures/<event>__<variant>.xml with its placeholders filled."""
    return Template((FIXTURES / f"{name}.xml").read_text()).substitute(values)


def sign(token: str, *parts: str) -> str:
    """WeChat's signature, computed here independently of the app's code."""
    return hashlib.sha1("".join(sorted([token, *parts])).encode()).hexdigest()


def encrypt_raw(key: str, plain: bytes, *, pad: bool = True) -> str:
    """AES-256-CBC under an EncodingAESKey, with (or deliberately without) WeChat's PKCS#7/32 padding."""
    aes = base64.b64decode(key + "=")
    if pad:
        count = 32 - len(plain) % 32
        plain += bytes([count]) * count
    encryptor = Cipher(algorithms.AES(aes), modes.CBC(aes[:16])).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()


def frame(message: str, appid: str = DEV_OA_APP_ID) -> bytes:
    """WeChat's plaintext framing: random16 + length + message + appid."""
    body = message.encode()
    return b"r" * 16 + struct.pack(">I", len(body)) + body + appid.encode()


def signed_query(token: str = DEV_OA_TOKEN, *, encrypt: str | None = None) -> dict[str, str]:
    """A correctly signed push query string (with msg_signature when ``encrypt`` is given)."""
    timestamp, nonce = str(int(time.time())), uuid.uuid4().hex[:10]
    query = {"signature": sign(token, timestamp, nonce), "timestamp": timestamp, "nonce": nonce}
    if encrypt is not None:
        query.update(encrypt_type="aes", msg_signature=sign(token, timestamp, nonce, encrypt))
    return query


class WeChat:
    """WeChat's side of the official account, played by the emulator over HTTP."""

    def __init__(
        self,
        emulator_url: str,
        push_url: str,
        *,
        token: str = DEV_OA_TOKEN,
        key: str | None = None,
        mode: str = "plain",
    ) -> None:
        self.emulator_url = emulator_url
        self.push_url = push_url
        self.defaults = {"url": push_url, "token": token, "encoding_aes_key": key, "mode": mode}
        self.http = httpx.AsyncClient(base_url=emulator_url, timeout=60)

    async def person(self, name: str | None = None) -> OaPerson:
        """A simulated person who follows the account."""
        name = name or "person-" + uuid.uuid4().hex[:10]
        response = await self.http.get("/_sim/identity", params={"appid": DEV_OA_APP_ID, "person": name})
        response.raise_for_status()
        return OaPerson(self, name, response.json()["openid"])

    async def push(self, xml: str, **options: Any) -> dict[str, Any]:
        """Push like WeChat (sign, encrypt per mode, retry unanswered tries); the checked result."""
        body = {**self.defaults, **{k: v for k, v in options.items() if k != "key"}, "xml": xml, "appid": DEV_OA_APP_ID}
        if "key" in options:
            body["encoding_aes_key"] = options["key"]
        response = await self.http.post("/_sim/oa/push", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    async def sent(self, openid: str, api: str | None = None) -> list[dict[str, Any]]:
        params = {"openid": openid, **({"api": api} if api else {})}
        response = await self.http.get("/_sim/sent", params=params)
        response.raise_for_status()
        return response.json()["items"]

    async def wait_sent(
        self, openid: str, count: int, api: str = "custom", timeout: float = 20
    ) -> list[dict[str, Any]]:
        """The first ``count`` messages WeChat accepted for this user, waiting for late ones."""
        deadline = time.monotonic() + timeout
        while True:
            items = await self.sent(openid, api)
            if len(items) >= count or time.monotonic() > deadline:
                return items
            await asyncio.sleep(0.05)

    async def aclose(self) -> None:
        await self.http.aclose()


class OaPerson:
    """One simulated follower: builds payloads from the fixture files and pushes them."""

    def __init__(self, wechat: WeChat, name: str, openid: str) -> None:
        self.wechat, self.name, self.openid = wechat, name, openid

    def xml(self, name: str, **values: Any) -> tuple[str, dict[str, Any]]:
        filled = {
            "to": GH,
            "openid": self.openid,
            "create_time": int(time.time()),
            "msg_id": next(_msg_ids),
            "content": "你好",
            **values,
        }
        return fixture(name, **filled), filled

    async def send(self, name: str, push: dict[str, Any] | None = None, **values: Any) -> dict[str, Any]:
        xml, filled = self.xml(name, **values)
        result = await self.wechat.push(xml, **(push or {}))
        return {**result, "values": filled}

    async def say(self, text: str, **push: Any) -> dict[str, Any]:
        return await self.send("text__plain", push, content=text)

    def reply_text(self, result: dict[str, Any]) -> str | None:
        reply = result["reply"]
        assert result["error"] is None, result
        return None if reply is None else reply["Content"]


def serve(settings) -> ThreadedServer:
    server = ThreadedServer(create_app(settings))
    server.start()
    return server


@pytest.fixture(scope="session")
def oa_server(app_url, emulator_url) -> str:
    """The account's server configuration in the emulator points at the session's app."""
    push_url = app_url + "/wechat/oa"
    body = {"appid": DEV_OA_APP_ID, "url": push_url, "token": DEV_OA_TOKEN, "mode": "plain"}
    httpx.post(emulator_url + "/_sim/oa/server", json=body).raise_for_status()
    return push_url


@pytest.fixture(scope="package")
def secure_app_url(settings_for) -> str:
    server = serve(settings_for(oa_encoding_aes_key=KEY, oa_previous_encoding_aes_key=OLD_KEY))
    yield server.url
    server.stop()


@pytest.fixture(scope="package")
def slow_app_url(settings_for) -> str:
    server = serve(settings_for(oa_reply_budget_ms=1, oa_card_thumb_media_id=CARD_THUMB))
    yield server.url
    server.stop()


@pytest.fixture
async def wechat(emulator_url, oa_server):
    client = WeChat(emulator_url, oa_server)
    yield client
    await client.aclose()


@pytest.fixture
async def secure_wechat(emulator_url, secure_app_url):
    client = WeChat(emulator_url, secure_app_url + "/wechat/oa", key=KEY, mode="safe")
    yield client
    await client.aclose()


@pytest.fixture
async def slow_wechat(emulator_url, slow_app_url):
    client = WeChat(emulator_url, slow_app_url + "/wechat/oa")
    yield client
    await client.aclose()


@pytest.fixture
async def db(database_url):
    """The test's own connection to the app's database, to check what was (not) written."""
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def identity_of(engine, openid: str) -> ChannelIdentity | None:
    async with unit_of_work(engine) as session:
        return (await session.exec(select(ChannelIdentity).where(ChannelIdentity.openid == openid))).first()


async def transcript(engine, openid: str) -> list[Message]:
    """Every message of the customer behind this openid, oldest first ([] if unknown)."""
    ident = await identity_of(engine, openid)
    if ident is None:
        return []
    async with unit_of_work(engine) as session:
        statement = select(Message).where(Message.customer_id == ident.customer_id).order_by(col(Message.id))
        return list((await session.exec(statement)).all())


async def conversation_of(engine, conversation_id: int) -> Conversation:
    async with unit_of_work(engine) as session:
        return await session.get(Conversation, conversation_id)


async def pending_of(engine, customer_id: int) -> list[OaPendingMessage]:
    async with unit_of_work(engine) as session:
        statement = (
            select(OaPendingMessage)
            .where(OaPendingMessage.customer_id == customer_id)
            .order_by(col(OaPendingMessage.message_id))
        )
        return list((await session.exec(statement)).all())
