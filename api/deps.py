"""The `Annotated` dependencies every router uses; everything comes from `app.state`, built in lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, WebSocketDisconnect
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import HTTPConnection

from api import proxies, tickets
from api.agents.models import Agent
from api.channels.wechat_platform import WeChatPlatform
from api.conversations.delivery import Delivery
from api.conversations.flows import Triage
from api.customers import service as customers
from api.customers.models import Customer
from api.db import unit_of_work
from api.delivery.flows import DeliveryTracker
from api.documents.storage import DocumentStore
from api.errors import NotAuthenticated, NotPermitted
from api.ratelimit import RateLimiter
from api.realtime import EventHub
from api.routing.engine import RoutingEngine
from api.routing.service import touch_agent
from api.security import read_token
from api.settings import Settings
from api.video.registry import CallRegistry


# The getters are `async def` on purpose: FastAPI runs a plain `def` dependency in its thread pool,
# a thread hop per dependency per request for what is an attribute read.
async def get_settings(conn: HTTPConnection) -> Settings:
    return conn.app.state.settings


async def get_engine(conn: HTTPConnection) -> AsyncEngine:
    return conn.app.state.engine


async def get_session(conn: HTTPConnection) -> AsyncIterator[AsyncSession]:
    async with unit_of_work(conn.app.state.engine) as session:
        yield session


async def get_redis(conn: HTTPConnection) -> Redis:
    return conn.app.state.redis


async def get_hub(conn: HTTPConnection) -> EventHub:
    return conn.app.state.hub


async def get_triage(conn: HTTPConnection) -> Triage:
    return conn.app.state.triage


async def get_delivery(conn: HTTPConnection) -> Delivery:
    return conn.app.state.triage.delivery


async def get_routing(conn: HTTPConnection) -> RoutingEngine:
    return conn.app.state.triage.routing


async def get_limiter(conn: HTTPConnection) -> RateLimiter:
    return conn.app.state.limiter


def client_address(conn: HTTPConnection) -> str:
    """The client's address for limits and records: the peer, or what trusted proxies (YUNTING_TRUSTED_PROXIES)
    say they received the request from (api/proxies.py)."""
    return proxies.client_address(conn) or "unknown"


SettingsDep = Annotated[Settings, Depends(get_settings)]
LimiterDep = Annotated[RateLimiter, Depends(get_limiter)]
ClientAddress = Annotated[str, Depends(client_address)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
# "function" scope: commit (or roll back) before the response is sent, so a 200 means it is stored.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
RedisDep = Annotated[Redis, Depends(get_redis)]
HubDep = Annotated[EventHub, Depends(get_hub)]
TriageDep = Annotated[Triage, Depends(get_triage)]
DeliveryDep = Annotated[Delivery, Depends(get_delivery)]
RoutingDep = Annotated[RoutingEngine, Depends(get_routing)]


def bearer_token(conn: HTTPConnection) -> str:
    """The bearer token from the Authorization header; never from the URL (api/tickets.py is for URLs)."""
    header = conn.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    raise NotAuthenticated("missing bearer token")


async def socket_bearer(websocket, settings: Settings, *, kind: str) -> int | None:
    """Whose WebSocket this is (a customer or agent id), or None after closing it with 4401 and the reason.
    A browser passes a single-use `?ticket=` (minted by an authenticated POST); other clients may send the
    Authorization header. Accepted first so the client sees our close code instead of a bare HTTP 403."""
    try:
        ticket = websocket.query_params.get("ticket")
        if ticket is not None:
            return await tickets.redeem(websocket.app.state.redis, ticket, kind=kind, purpose="socket")
        return read_token(settings.signing_key(), bearer_token(websocket), kind=kind)
    except NotAuthenticated as exc:
        await websocket.accept()
        await websocket.close(code=4401, reason=exc.message)
        return None
    except RedisError:  # the ticket can't be checked now: "try again later", not an HTTP 500 on the upgrade
        await websocket.accept()
        await close_socket(websocket, TRY_AGAIN_LATER, "temporarily unavailable, reconnect shortly")
        return None


# RFC 6455's "try again later": a dependency (Redis) is down or the socket fell behind; the client reconnects with
# its last id and catches up from the record.
TRY_AGAIN_LATER = 1013


async def close_socket(websocket, code: int, reason: str = "") -> None:
    """Close with a code the client acts on (a close frame, not a dropped connection); a client already gone is
    not an error."""
    try:
        await websocket.close(code=code, reason=reason)
    except (RuntimeError, OSError, WebSocketDisconnect):  # closed already, or the peer went (Starlette's word for it)
        pass


async def token_customer_id(conn: HTTPConnection, settings: SettingsDep) -> int:
    """The customer a valid bearer token names (no lookup: what limits and early work key by)."""
    return read_token(settings.signing_key(), bearer_token(conn), kind="customer")


CurrentCustomerId = Annotated[int, Depends(token_customer_id)]


async def current_customer(customer_id: CurrentCustomerId, session: SessionDep) -> Customer:
    """The token's customer row; a token for a customer that no longer exists is a 401."""
    return await customers.existing(session, customer_id)


async def current_agent(conn: HTTPConnection, session: SessionDep, settings: SettingsDep) -> Agent:
    agent_id = read_token(settings.signing_key(), bearer_token(conn), kind="agent")
    agent = await session.get(Agent, agent_id)
    if agent is None or not agent.active:
        raise NotAuthenticated("unknown or disabled agent")
    # Any request is a sign of life; an online agent silent past the heartbeat TTL is set offline.
    assert agent.id is not None
    await touch_agent(conn.app.state.redis, agent.id, settings.agent_heartbeat_ttl_s)
    return agent


def require_role(*roles: str):
    """A dependency that admits only agents with one of these roles (admin always)."""

    async def check(agent: Annotated[Agent, Depends(current_agent)]) -> Agent:
        if agent.role not in (*roles, "admin"):
            raise NotPermitted(f"this needs the role {' or '.join(roles)}")
        return agent

    return check


CurrentCustomer = Annotated[Customer, Depends(current_customer)]
CurrentAgent = Annotated[Agent, Depends(current_agent)]


async def get_wechat(conn: HTTPConnection):
    return conn.app.state.wechat


WeChatDep = Annotated[WeChatPlatform, Depends(get_wechat)]

Supervisor = Annotated[Agent, Depends(require_role("supervisor"))]


async def get_video(conn: HTTPConnection) -> CallRegistry:
    return conn.app.state.video


VideoDep = Annotated[CallRegistry, Depends(get_video)]


# Keyed by the token's customer, before their row is read: the message path starts its parse in between.
async def limit_customer_messages(customer_id: CurrentCustomerId, limiter: LimiterDep) -> None:
    await limiter.hit("messages", customer_id)


async def limit_video_calls(customer_id: CurrentCustomerId, limiter: LimiterDep) -> None:
    await limiter.hit("video_calls", customer_id)


WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def limit_studio_writes(conn: HTTPConnection, settings: SettingsDep, limiter: LimiterDep) -> None:
    """Per agent, on every write to the studio (a router-wide dependency; reads are not counted). An invalid
    token is left to the route's own check (401)."""
    if conn.scope.get("method") not in WRITE_METHODS:
        return
    try:
        agent_id = read_token(settings.signing_key(), bearer_token(conn), kind="agent")
    except NotAuthenticated:
        return
    await limiter.hit("studio_writes", agent_id)


CustomerMessageLimit = Depends(limit_customer_messages)
VideoCallLimit = Depends(limit_video_calls)


async def get_tracker(conn: HTTPConnection) -> DeliveryTracker:
    return conn.app.state.delivery_tracker


TrackerDep = Annotated[DeliveryTracker, Depends(get_tracker)]


async def get_documents(conn: HTTPConnection) -> DocumentStore:
    return conn.app.state.documents


DocumentsDep = Annotated[DocumentStore, Depends(get_documents)]
