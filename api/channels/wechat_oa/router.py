"""`GET/POST /wechat/oa`: the push URL entered in WeChat's console (thin: the work is in flows.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse, Response
from starlette.requests import HTTPConnection

from api.channels.wechat_oa.envelope import PushQuery
from api.channels.wechat_oa.flows import SUCCESS, OaChannel
from api.errors import PayloadTooLarge

router = APIRouter(prefix="/wechat", tags=["wechat_oa"])


async def get_oa_channel(conn: HTTPConnection) -> OaChannel:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop on every push.
    return conn.app.state.wechat_oa


OaChannelDep = Annotated[OaChannel, Depends(get_oa_channel)]


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes (413) before reading it all; pushes are small."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"push body over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"push body over {limit} bytes")
    return bytes(body)


@router.get("/oa", response_class=PlainTextResponse)
async def verify_url(oa: OaChannelDep, signature: str = "", timestamp: str = "", nonce: str = "", echostr: str = ""):
    """WeChat's server check: answers `echostr` as is when the signature is right, else 403."""
    return PlainTextResponse(oa.verify_url(signature=signature, timestamp=timestamp, nonce=nonce, echostr=echostr))


@router.post("/oa")
async def receive_push(
    request: Request,
    oa: OaChannelDep,
    signature: str = "",
    timestamp: str = "",
    nonce: str = "",
    encrypt_type: str = "",
    msg_signature: str = "",
):
    """A message or event: a passive reply (XML, encrypted in safe mode) or `success`, within 5 s."""
    body = await read_limited(request, oa.max_body_bytes)
    query = PushQuery(
        signature=signature, timestamp=timestamp, nonce=nonce, encrypt_type=encrypt_type, msg_signature=msg_signature
    )
    answer = await oa.handle(query, body)
    if answer == SUCCESS:
        return PlainTextResponse(answer)
    return Response(answer, media_type="application/xml")
