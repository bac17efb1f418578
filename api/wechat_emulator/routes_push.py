"""``/_sim/oa/*``: play an official-account user (pushes to the backend), plus fault injection and token stats.

Tests push hand-written XML (``/oa/push``); demos use ``/oa/say`` and ``/oa/event``, which build the
XML WeChat would send for a simulated person.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import asdict
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, Field

from api.wechat_emulator.errors import SimError
from api.wechat_emulator.push import WECHAT_TIMEOUT_S, WECHAT_TRIES, PushMode, ServerConfig, cdata
from api.wechat_emulator.state import EmulatorState


class OaServer(BaseModel):
    """The server configuration in WeChat's console."""

    appid: str | None = None
    url: str = Field(min_length=1)
    token: str = Field(min_length=3, max_length=32)
    encoding_aes_key: str | None = Field(default=None, min_length=43, max_length=43)
    mode: PushMode = "plain"


class PushOptions(BaseModel):
    """How to push: defaults come from the account's server configuration; WeChat waits 5 s, tries 3 times."""

    appid: str | None = None
    mode: PushMode | None = None
    url: str | None = None
    token: str | None = None
    encoding_aes_key: str | None = Field(default=None, min_length=43, max_length=43)
    timeout_s: float = Field(default=WECHAT_TIMEOUT_S, gt=0, le=30)
    tries: int = Field(default=WECHAT_TRIES, ge=1, le=WECHAT_TRIES)


class OaPush(PushOptions):
    """A push of the given plaintext message XML, as WeChat would deliver it."""

    xml: str = Field(min_length=1, max_length=1_000_000)


class OaSay(PushOptions):
    """A simulated person writes a text message to the official account."""

    person: str = Field(min_length=1)
    text: str = Field(min_length=1, max_length=2048)


class OaImage(PushOptions):
    """A simulated person sends a picture: it becomes temporary media, and an image message is pushed."""

    person: str = Field(min_length=1)
    content_b64: str = Field(min_length=4, max_length=15_000_000)
    content_type: str = "image/jpeg"


class OaEvent(PushOptions):
    """A simulated person subscribes, unsubscribes, scans or taps a menu item."""

    person: str = Field(min_length=1)
    event: Literal["subscribe", "unsubscribe", "SCAN", "CLICK", "VIEW", "LOCATION"]
    event_key: str = ""


class Fault(BaseModel):
    """The next ``times`` calls to the WeChat API at ``path`` answer ``errcode``."""

    path: str = Field(pattern=r"^/(cgi-bin|sns)/")
    errcode: int
    times: int = Field(default=1, ge=0, le=1000)


def add_push_routes(sim: FastAPI, world: EmulatorState) -> None:
    """Register the official-account push, fault and token routes on the ``/_sim`` app."""

    def oa_appid(appid: str | None) -> str:
        if appid is not None:
            if world.app(appid).kind != "oa":
                raise SimError(400, f"{appid!r} is not an official account")
            return appid
        for app in world.apps.values():
            if app.kind == "oa":
                return app.appid
        raise SimError(404, "no official account is registered")

    async def push(options: PushOptions, xml: str) -> dict[str, Any]:
        overrides = options.model_dump(include={"mode", "url", "token", "encoding_aes_key"})
        if (overrides["mode"] or "plain") != "plain" and not (
            overrides["encoding_aes_key"] or world.pusher.server(oa_appid(options.appid)).encoding_aes_key
        ):
            raise SimError(400, "compatible and safe mode need an EncodingAESKey")
        return await world.pusher.push(
            oa_appid(options.appid), xml, overrides=overrides, timeout_s=options.timeout_s, tries=options.tries
        )

    def message_head(appid: str, person: str, msg_type: str) -> tuple[str, str]:
        openid = world.identity(appid, person)[0]
        head = (
            f"<ToUserName>{cdata(world.original_id(appid))}</ToUserName><FromUserName>{cdata(openid)}"
            f"</FromUserName><CreateTime>{int(world.now())}</CreateTime><MsgType>{cdata(msg_type)}</MsgType>"
        )
        return openid, head

    @sim.post("/oa/server")
    def set_server(req: OaServer) -> dict[str, Any]:
        """Point the account's pushes at a backend (URL, Token, EncodingAESKey, mode)."""
        appid = oa_appid(req.appid)
        try:
            world.pusher.configure(appid, ServerConfig(req.url, req.token, req.encoding_aes_key, req.mode))
        except ValueError as exc:
            raise SimError(400, str(exc)) from exc
        return {"appid": appid, **asdict(world.pusher.server(appid))}

    @sim.get("/oa/server")
    def get_server(appid: str | None = None) -> dict[str, Any]:
        """The account's current server configuration."""
        appid = oa_appid(appid)
        return {"appid": appid, **asdict(world.pusher.server(appid))}

    @sim.post("/oa/push")
    async def push_xml(req: OaPush) -> dict[str, Any]:
        """Sign, encrypt (per mode) and push this message XML; retries a push that got no answer."""
        return await push(req, req.xml)

    @sim.post("/oa/say")
    async def say(req: OaSay) -> dict[str, Any]:
        """A simulated person sends a text message."""
        appid, msg_id = oa_appid(req.appid), world.pusher.next_msg_id()
        openid, head = message_head(appid, req.person, "text")
        xml = f"<xml>{head}<Content>{cdata(req.text)}</Content><MsgId>{msg_id}</MsgId></xml>"
        return {"openid": openid, "msg_id": msg_id, **await push(req, xml)}

    @sim.post("/oa/image")
    async def image(req: OaImage) -> dict[str, Any]:
        """A simulated person sends an image message (PicUrl, MediaId); the backend fetches it by media id."""
        appid, msg_id = oa_appid(req.appid), world.pusher.next_msg_id()
        try:
            content = base64.b64decode(req.content_b64, validate=True)
            media_id = world.media.add(appid, content, req.content_type)
        except (ValueError, binascii.Error) as exc:
            raise SimError(400, f"content_b64: {exc}") from exc
        openid, head = message_head(appid, req.person, "image")
        pic_url = f"http://mmbiz.qpic.cn/emulator/{media_id}"
        xml = (
            f"<xml>{head}<PicUrl>{cdata(pic_url)}</PicUrl><MediaId>{cdata(media_id)}</MediaId>"
            f"<MsgId>{msg_id}</MsgId></xml>"
        )
        return {"openid": openid, "msg_id": msg_id, "media_id": media_id, **await push(req, xml)}

    @sim.post("/oa/event")
    async def event(req: OaEvent) -> dict[str, Any]:
        """A simulated person's event (subscribe, menu click ...)."""
        appid = oa_appid(req.appid)
        openid, head = message_head(appid, req.person, "event")
        xml = f"<xml>{head}<Event>{cdata(req.event)}</Event><EventKey>{cdata(req.event_key)}</EventKey></xml>"
        return {"openid": openid, **await push(req, xml)}

    @sim.post("/faults")
    def inject(req: Fault) -> dict[str, Any]:
        """Make the next calls to a WeChat API fail with an errcode."""
        world.inject_fault(req.path, req.errcode, req.times)
        return {"path": req.path, "left": world.faults_left(req.path)}

    @sim.get("/faults")
    def faults(path: str) -> dict[str, Any]:
        """How many injected failures are left for a path."""
        return {"path": path, "left": world.faults_left(path)}

    @sim.get("/tokens")
    def tokens() -> dict[str, Any]:
        """How many access tokens each app has fetched (a central cache keeps this low)."""
        with world.lock:
            return {"issued": dict(world.tokens.issued)}
