"""Official-account pushes: WeChat's side of ``POST <server URL>?signature=...``.

The emulator signs each push with the account's token and, in compatible or safe mode, encrypts it
(its own implementation of the scheme, independent of the backend's, so a shared mistake can't hide).
It waits ``timeout_s`` (WeChat: 5 s) for an answer and retries a push that got none, 3 tries in all,
with the same message (same MsgId). The interaction a push implies is recorded once per user action,
before the first try, so the customer-service windows open as on WeChat. The answer is checked as
WeChat checks it (reply signature, appid, addressee) and a valid passive reply is logged as sent.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import httpx
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from defusedxml.ElementTree import fromstring

from api.settings import DEV_OA_TOKEN

if TYPE_CHECKING:
    from api.wechat_emulator.state import EmulatorState

PushMode = Literal["plain", "compat", "safe"]
WECHAT_TIMEOUT_S = 5.0
WECHAT_TRIES = 3
# Message types that open the 48-hour window; events that open the 1-minute one.
MESSAGE_TYPES = ("text", "image", "voice", "video", "shortvideo", "location", "link", "file")
WINDOW_EVENTS = ("subscribe", "SCAN", "CLICK")


@dataclass(frozen=True)
class ServerConfig:
    """What an account admin enters in WeChat's console: the push URL, Token, EncodingAESKey, mode."""

    url: str
    token: str = DEV_OA_TOKEN
    encoding_aes_key: str | None = None
    mode: PushMode = "plain"


def server_from_env(environ: Mapping[str, str] | None = None) -> ServerConfig:
    """The backend `make run` starts: same variables as the app (``YUNTING_PORT``, ``YUNTING_OA_*``)."""
    env = os.environ if environ is None else environ
    key = env.get("YUNTING_OA_ENCODING_AES_KEY") or None
    return ServerConfig(
        url=env.get("YUNTING_OA_PUSH_URL") or f"http://127.0.0.1:{env.get('YUNTING_PORT') or 8000}/wechat/oa",
        token=env.get("YUNTING_OA_TOKEN") or DEV_OA_TOKEN,
        encoding_aes_key=key,
        mode="safe" if key else "plain",
    )


def sign(token: str, *parts: str) -> str:
    """sha1 over the sorted token and parts, as WeChat signs."""
    return hashlib.sha1("".join(sorted([token, *parts])).encode()).hexdigest()  # noqa: S324


class PushCipher:
    """AES-256-CBC with WeChat's framing: random16 + length (big-endian) + message + appid, PKCS#7/32."""

    def __init__(self, encoding_aes_key: str, appid: str) -> None:
        self.key = base64.b64decode(encoding_aes_key + "=")
        if len(self.key) != 32:
            raise ValueError("an EncodingAESKey decodes to 32 bytes")
        self.appid = appid.encode()

    def _cipher(self) -> Cipher:
        return Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16]))

    def encrypt(self, text: str) -> str:
        body = text.encode()
        plain = secrets.token_bytes(16) + struct.pack(">I", len(body)) + body + self.appid
        pad = 32 - len(plain) % 32
        encryptor = self._cipher().encryptor()
        return base64.b64encode(encryptor.update(plain + bytes([pad]) * pad) + encryptor.finalize()).decode()

    def decrypt(self, encrypted: str) -> str:
        decryptor = self._cipher().decryptor()
        plain = decryptor.update(base64.b64decode(encrypted)) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= 32 or plain[-pad:] != bytes([pad]) * pad:
            raise ValueError("bad padding")
        plain = plain[:-pad]
        (length,) = struct.unpack(">I", plain[16:20])
        if plain[20 + length :] != self.appid:
            raise ValueError("the reply was encrypted for another appid")
        return plain[20 : 20 + length].decode()


def _fields(document: str) -> dict[str, str]:
    root = fromstring(document, forbid_dtd=True)
    return {child.tag: (child.text or "").strip() for child in root}


def cdata(text: str) -> str:
    """A CDATA section holding ``text`` exactly."""
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


class Pusher:
    """Pushes to the backend's server URL, one configuration per official account."""

    def __init__(self, world: EmulatorState, default: ServerConfig | None = None) -> None:
        self._world = world
        self._servers: dict[str, ServerConfig] = {}
        self._default = default or server_from_env()
        self._seen: set[tuple[str, str]] = set()  # (appid, action key): interactions recorded once
        self._msg_id = int(time.time()) * 1_000_000_000

    def configure(self, appid: str, config: ServerConfig) -> None:
        """Set the account's server configuration (WeChat's console)."""
        self._world.app(appid)
        if config.mode != "plain" and not config.encoding_aes_key:
            raise ValueError("compatible and safe mode need an EncodingAESKey")
        with self._world.lock:
            self._servers[appid] = config

    def server(self, appid: str) -> ServerConfig:
        """The account's server configuration."""
        with self._world.lock:
            return self._servers.get(appid, self._default)

    def next_msg_id(self) -> str:
        """A new 64-bit MsgId."""
        with self._world.lock:
            self._msg_id += 1
            return str(self._msg_id)

    def reset(self) -> None:
        """Forget recorded interactions (server configurations stay, like the registered apps)."""
        with self._world.lock:
            self._seen.clear()

    async def push(
        self,
        appid: str,
        xml: str,
        *,
        overrides: Mapping[str, Any] | None = None,
        timeout_s: float = WECHAT_TIMEOUT_S,
        tries: int = WECHAT_TRIES,
    ) -> dict[str, Any]:
        """Deliver one user action to the backend like WeChat; returns the tries and the checked answer."""
        config = replace(self.server(appid), **{k: v for k, v in (overrides or {}).items() if v is not None})
        fields = self._record_interaction(appid, xml)
        openid, to_user = fields.get("FromUserName", ""), fields.get("ToUserName", "")
        params, body = self._request(appid, config, xml, openid, to_user)
        attempts: list[dict[str, Any]] = []
        response: httpx.Response | None = None
        async with httpx.AsyncClient(timeout=timeout_s) as http:
            for _ in range(tries):
                started = time.monotonic()
                try:
                    response = await http.post(
                        config.url, params=params, content=body.encode(), headers={"Content-Type": "text/xml"}
                    )
                except httpx.TransportError as exc:  # no answer in time (or no server): WeChat retries
                    attempts.append(
                        {"status": None, "elapsed_s": time.monotonic() - started, "error": exc.__class__.__name__}
                    )
                    continue
                attempts.append(
                    {"status": response.status_code, "elapsed_s": time.monotonic() - started, "error": None}
                )
                break
        result: dict[str, Any] = {"attempts": attempts, "status": None, "body": None, "reply": None, "error": None}
        if response is None:
            result["error"] = f"no answer in {timeout_s} s after {tries} tries"
            return result
        result.update(status=response.status_code, body=response.text)
        try:
            reply = self._read_reply(appid, config, response, openid, to_user)
        except ValueError as exc:  # WeChat shows "该公众号暂时无法提供服务" for these
            result["error"] = str(exc)
            return result
        if reply is not None:
            self._world.outbox.log_passive(appid, openid, reply)
        result["reply"] = reply
        return result

    def _record_interaction(self, appid: str, xml: str) -> dict[str, str]:
        try:
            fields = _fields(xml)
        except Exception:  # a deliberately broken push: nothing to record
            return {}
        openid = fields.get("FromUserName", "")
        if not openid:
            return fields
        msg_type, event = fields.get("MsgType", ""), fields.get("Event", "")
        # A retry is the same XML again; events have no MsgId, and two different events may share a second.
        key = fields.get("MsgId") or hashlib.sha1(xml.encode()).hexdigest()  # noqa: S324
        with self._world.lock:
            if (appid, key) in self._seen:
                return fields  # the same user action pushed again: one interaction
            self._seen.add((appid, key))
        if msg_type in MESSAGE_TYPES:
            self._world.follow(appid, openid)
            self._world.outbox.record_interaction(appid, openid, "message")
        elif msg_type == "event" and event == "unsubscribe":
            self._world.unfollow(appid, openid)
        elif msg_type == "event" and event in WINDOW_EVENTS:
            self._world.follow(appid, openid)
            self._world.outbox.record_interaction(appid, openid, "event")
        return fields

    def _request(
        self, appid: str, config: ServerConfig, xml: str, openid: str, to_user: str
    ) -> tuple[dict[str, str], str]:
        timestamp, nonce = str(int(self._world.now())), str(secrets.randbelow(10**9))
        params = {"signature": sign(config.token, timestamp, nonce), "timestamp": timestamp, "nonce": nonce}
        if openid:
            params["openid"] = openid
        if config.mode == "plain":
            return params, xml
        encrypt = PushCipher(config.encoding_aes_key or "", appid).encrypt(xml)
        params.update(encrypt_type="aes", msg_signature=sign(config.token, timestamp, nonce, encrypt))
        if config.mode == "safe":
            return params, f"<xml><ToUserName>{cdata(to_user)}</ToUserName><Encrypt>{cdata(encrypt)}</Encrypt></xml>"
        # Compatible mode: the plaintext fields and the ciphertext side by side.
        head, _, _ = xml.rpartition("</xml>")
        return params, f"{head}<Encrypt>{cdata(encrypt)}</Encrypt></xml>"

    def _read_reply(
        self, appid: str, config: ServerConfig, response: httpx.Response, openid: str, to_user: str
    ) -> dict[str, str] | None:
        if response.status_code != 200:
            raise ValueError(f"the server answered HTTP {response.status_code}")
        text = response.text.strip()
        if text in ("", "success"):
            return None
        try:
            outer = _fields(text)
        except Exception as exc:
            raise ValueError(f"the reply is not XML: {exc}") from exc
        if "Encrypt" in outer:
            if not config.encoding_aes_key:
                raise ValueError("an encrypted reply, but the account is in plain mode")
            expected = sign(config.token, outer.get("TimeStamp", ""), outer.get("Nonce", ""), outer["Encrypt"])
            if outer.get("MsgSignature") != expected:
                raise ValueError("the reply's MsgSignature is wrong")
            try:
                reply = _fields(PushCipher(config.encoding_aes_key, appid).decrypt(outer["Encrypt"]))
            except Exception as exc:
                raise ValueError(f"the reply can't be decrypted: {exc}") from exc
        elif config.mode == "safe":
            raise ValueError("safe mode needs an encrypted reply")
        else:
            reply = outer
        if reply.get("ToUserName") != openid or reply.get("FromUserName") != to_user:
            raise ValueError("the reply is not addressed back to the sender")
        if not reply.get("MsgType"):
            raise ValueError("the reply has no MsgType")
        return reply
