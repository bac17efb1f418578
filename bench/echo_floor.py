"""The protocol floor for `bench/turn_speed.py`: what answering costs with no NLU, no storage, no logic.

A tiny Starlette app served by the same uvicorn as Yunting (`uvicorn --app-dir bench echo_floor:app`):
- `POST /wechat/oa`: a safe-mode official-account push, handled as WeChat requires (check `signature` and
  `msg_signature`, AES-decrypt, read the XML) and answered with a sealed passive reply echoing the text;
- `POST /miniapp/messages`: a bearer-authenticated JSON message, echoed back as JSON.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import struct
import time
from xml.etree.ElementTree import fromstring

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

TOKEN = os.environ.get("ECHO_OA_TOKEN", "yunting-dev-token")
KEY = base64.b64decode(os.environ["ECHO_OA_AES_KEY"] + "=")
APP_ID = os.environ.get("ECHO_OA_APP_ID", "wxoa0000000000dev").encode()


def _sign(*parts: str) -> str:
    return hashlib.sha1("".join(sorted([TOKEN, *parts])).encode()).hexdigest()


def _cipher() -> Cipher:
    return Cipher(algorithms.AES(KEY), modes.CBC(KEY[:16]))


def _decrypt(encrypted: str) -> str:
    dec = _cipher().decryptor()
    plain = dec.update(base64.b64decode(encrypted)) + dec.finalize()
    plain = plain[: -plain[-1]]
    (length,) = struct.unpack(">I", plain[16:20])
    if plain[20 + length :] != APP_ID:
        raise ValueError("another appid")
    return plain[20 : 20 + length].decode()


def _encrypt(text: str) -> str:
    body = text.encode()
    plain = secrets.token_bytes(16) + struct.pack(">I", len(body)) + body + APP_ID
    pad = 32 - len(plain) % 32
    enc = _cipher().encryptor()
    return base64.b64encode(enc.update(plain + bytes([pad]) * pad) + enc.finalize()).decode()


async def oa(request: Request) -> Response:
    q = request.query_params
    if q.get("signature") != _sign(q.get("timestamp", ""), q.get("nonce", "")):
        return PlainTextResponse("bad signature", status_code=403)
    outer = {c.tag: c.text or "" for c in fromstring(await request.body())}
    if q.get("msg_signature") != _sign(q.get("timestamp", ""), q.get("nonce", ""), outer["Encrypt"]):
        return PlainTextResponse("bad msg_signature", status_code=403)
    inner = {c.tag: c.text or "" for c in fromstring(_decrypt(outer["Encrypt"]))}
    reply = (
        f"<xml><ToUserName><![CDATA[{inner['FromUserName']}]]></ToUserName>"
        f"<FromUserName><![CDATA[{inner['ToUserName']}]]></FromUserName><CreateTime>{int(time.time())}</CreateTime>"
        f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{inner.get('Content', '')}]]></Content></xml>"
    )
    encrypt, timestamp, nonce = _encrypt(reply), str(int(time.time())), str(secrets.randbelow(10**9))
    sealed = (
        f"<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt><MsgSignature><![CDATA[{_sign(timestamp, nonce, encrypt)}]]>"
        f"</MsgSignature><TimeStamp>{timestamp}</TimeStamp><Nonce><![CDATA[{nonce}]]></Nonce></xml>"
    )
    return Response(sealed, media_type="application/xml")


async def miniapp(request: Request) -> Response:
    if not request.headers.get("authorization", "").startswith("Bearer "):
        return JSONResponse({"detail": "missing bearer token"}, status_code=401)
    body = json.loads(await request.body())
    return JSONResponse({"message": body, "replies": [{"text": body["text"]}], "duplicate": False})


async def health(_request: Request) -> Response:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[
        Route("/", health),
        Route("/wechat/oa", oa, methods=["POST"]),
        Route("/miniapp/messages", miniapp, methods=["POST"]),
    ]
)
