"""The WeChat-side HTTP API, on WeChat's real paths and with WeChat's answers.

Failures are ``{"errcode", "errmsg"}`` with HTTP 200, as WeChat does; bodies are parsed
by hand because WeChat ignores the media type (our client, like wechatpy, sends no Content-Type).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from api.wechat_emulator.errors import API_UNAUTHORIZED, DATA_FORMAT_ERROR, WeChatError
from api.wechat_emulator.state import EmulatorState


def _injected_fault(request: Request) -> None:
    """A fault a test injected for this API (``/_sim/faults``) answers instead of the API."""
    errcode = request.app.state.wechat.take_fault(request.url.path)
    if errcode is not None:
        raise WeChatError(errcode, "injected by the simulator")


router = APIRouter(dependencies=[Depends(_injected_fault)])

OK: dict[str, Any] = {"errcode": 0, "errmsg": "ok"}
_ANY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def _world(request: Request) -> EmulatorState:
    return request.app.state.wechat


async def _json_body(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or WeChat's 47001."""
    try:
        body = json.loads(await request.body())
    except ValueError:  # includes JSONDecodeError and UnicodeDecodeError
        raise WeChatError(DATA_FORMAT_ERROR) from None
    if not isinstance(body, dict):
        raise WeChatError(DATA_FORMAT_ERROR)
    return body


@router.get("/cgi-bin/token")
async def token(request: Request, grant_type: str = "", appid: str = "", secret: str = "") -> dict[str, Any]:
    """Issue an access_token (client_credential grant)."""
    return _world(request).tokens.issue(grant_type, appid, secret)


@router.get("/sns/jscode2session")
async def jscode2session(
    request: Request, appid: str = "", secret: str = "", js_code: str = "", grant_type: str = ""
) -> dict[str, Any]:
    """Exchange a mini-program wx.login code; any access_token parameter is ignored, as on WeChat."""
    return _world(request).logins.exchange(appid, secret, js_code, grant_type)


@router.post("/cgi-bin/message/custom/send")
async def custom_send(request: Request, access_token: str = "") -> dict[str, Any]:
    """Send a customer-service message inside the user's interaction window."""
    world = _world(request)
    appid = world.tokens.check(access_token)
    world.outbox.send_custom(appid, await _json_body(request))
    return OK


@router.post("/cgi-bin/message/custom/typing")
async def custom_typing(request: Request, access_token: str = "") -> dict[str, Any]:
    """Show or cancel "typing…" to the user."""
    world = _world(request)
    appid = world.tokens.check(access_token)
    world.outbox.typing(appid, await _json_body(request))
    return OK


@router.post("/cgi-bin/message/subscribe/send")
async def subscribe_send(request: Request, access_token: str = "") -> dict[str, Any]:
    """Send a mini-program subscribe message, spending one of the user's grants."""
    world = _world(request)
    appid = world.tokens.check(access_token)
    world.outbox.send_subscribe(appid, await _json_body(request))
    return OK


@router.get("/cgi-bin/media/get")
async def media_get(request: Request, access_token: str = "", media_id: str = "") -> Response:
    """A temporary media file (e.g. the picture of a user's image message): the bytes, or 40007."""
    world = _world(request)
    appid = world.tokens.check(access_token)
    content, content_type = world.media.get(appid, media_id)
    disposition = f'attachment; filename="{media_id}"'
    return Response(content, media_type=content_type, headers={"Content-Disposition": disposition})


@router.get("/cgi-bin/user/info")
async def user_info(request: Request, access_token: str = "", openid: str = "", lang: str = "zh_CN") -> dict[str, Any]:
    """An official-account user's profile; ``unionid`` joins them to the same person elsewhere."""
    world = _world(request)
    appid = world.tokens.check(access_token)
    if world.apps[appid].kind != "oa":
        raise WeChatError(API_UNAUTHORIZED, "user/info is an official-account API")
    return world.user_info(appid, openid)


# Registered last: routes match in order, so these only catch what nothing above serves.
@router.api_route("/cgi-bin/{rest:path}", methods=_ANY_METHOD)
@router.api_route("/sns/{rest:path}", methods=_ANY_METHOD)
async def unknown_api(rest: str) -> dict[str, Any]:
    """An API the emulator does not offer: WeChat's answer for an API the app may not use."""
    raise WeChatError(API_UNAUTHORIZED)
