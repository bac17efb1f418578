"""Single-use, short-lived tickets: what a URL carries instead of a session token.

A WebSocket handshake from a browser can't set an Authorization header, and the video page and the advisor
pages (booking, upload, guide) are opened by a link; a session token there ends up in access logs, proxies and
browser history. The client asks for a ticket with its token (an authenticated POST), then puts the ticket in
the URL: it names who and what for, lives `ticket_ttl_s` (60 s), and is gone once used (Redis GETDEL), so a
logged ticket is worth nothing. Only a hash of the ticket is stored.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Literal

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from api.errors import NotAuthenticated

PURPOSES = ("socket", "video_page", "advisor_page")


def _key(ticket: str) -> str:
    return "yt:ticket:" + hashlib.sha256(ticket.encode()).hexdigest()


async def mint(redis: Redis, *, kind: str, subject: int, purpose: str, ttl_s: int) -> str:
    ticket = secrets.token_urlsafe(32)
    await redis.set(_key(ticket), json.dumps({"k": kind, "s": subject, "p": purpose}), ex=ttl_s)
    return ticket


async def redeem(redis: Redis, ticket: str, *, kind: str, purpose: str) -> int:
    """The subject id the ticket was minted for; NotAuthenticated if unknown, expired, used, or for another use."""
    raw = await redis.getdel(_key(ticket)) if ticket and len(ticket) <= 128 else None
    if raw is None:
        raise NotAuthenticated("ticket invalid, expired or already used", code="bad_ticket")
    claims = json.loads(raw)
    if claims.get("k") != kind or claims.get("p") != purpose:
        raise NotAuthenticated("ticket is not valid here", code="bad_ticket")
    return int(claims["s"])


class TicketRequest(BaseModel):
    purpose: Literal["socket", "video_page", "advisor_page"] = Field(
        description="socket: open /miniapp/ws or /agents/ws with ?ticket=; video_page: open /h5/video/?ticket=; "
        "advisor_page: open /h5/advisor/booking.html, upload.html or guide.html with ?ticket="
    )


class TicketPublic(BaseModel):
    ticket: str
    expires_in: int


class TicketRedeem(BaseModel):
    ticket: str = Field(min_length=1, max_length=128)
    # The page says what it is: a ticket minted for one kind of page doesn't open another.
    purpose: Literal["video_page", "advisor_page"] = "video_page"
