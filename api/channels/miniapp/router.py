"""The mini-program's HTTP and WebSocket API (thin: the work is in services and flows)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from fastapi import APIRouter, Response, WebSocket, WebSocketDisconnect
from pydantic import ValidationError
from redis.exceptions import RedisError

from api import tickets
from api.bounds import AfterId, RecordId
from api.channels.miniapp import service
from api.channels.miniapp.schemas import History, LoginRequest, LoginResponse, Rating, SendMessage, SendResult
from api.conversations import repository as conversation_repo
from api.conversations import service as conversations
from api.conversations.flows import do_receive_customer_message
from api.conversations.models import ConversationState
from api.conversations.schemas import ConversationBrief, MessagePublic, message_event
from api.conversations.turns import EarlyParse
from api.customers import service as customers
from api.customers.models import Channel
from api.db import saved_id, unit_of_work
from api.delivery import repository as delivery_states
from api.delivery.presence import socket_alive, socket_closed, socket_opened
from api.delivery.schemas import GrantsResult, Receipts, ReceiptsResult, SubscribeResults
from api.deps import (
    TRY_AGAIN_LATER,
    ClientAddress,
    CurrentCustomer,
    CurrentCustomerId,
    CustomerMessageLimit,
    HubDep,
    LimiterDep,
    RedisDep,
    SessionDep,
    SettingsDep,
    TrackerDep,
    TriageDep,
    WeChatDep,
    close_socket,
    socket_bearer,
)
from api.errors import BadRequest, Conflict
from api.realtime import RESYNC, SubscriberOverflow, customer_channel
from api.security import issue_token
from api.tickets import TicketPublic, TicketRedeem, TicketRequest

router = APIRouter(prefix="/miniapp", tags=["miniapp"])
log = logging.getLogger(__name__)


@router.post("/login", response_model=LoginResponse)
async def login(
    body: LoginRequest,
    session: SessionDep,
    redis: RedisDep,
    wechat: WeChatDep,
    settings: SettingsDep,
    limiter: LimiterDep,
    client: ClientAddress,
):
    """A wx.login code for a session token. Per client address: a cap on sign-ins, and once too many codes
    were bad, no more are sent to WeChat's jscode2session for a while (429)."""
    await limiter.hit("miniapp_login_client", client)
    await limiter.check("miniapp_login_failures", client)
    try:
        token, customer_id = await service.login(session, redis, wechat, settings, code=body.code)
    except BadRequest:
        await limiter.count("miniapp_login_failures", client)
        raise
    return LoginResponse(token=token, customer_id=customer_id, expires_in=settings.customer_session_ttl_s)


@router.post("/tickets", response_model=TicketPublic)
async def mint_ticket(body: TicketRequest, customer: CurrentCustomer, redis: RedisDep, settings: SettingsDep):
    """A single-use ticket (60 s) for a URL: the WebSocket (`/miniapp/ws?ticket=`), the video page
    (`/h5/video/?ticket=`) or an advisor page (`/h5/advisor/booking.html?ticket=`…); session tokens never go in URLs."""
    assert customer.id is not None
    ticket = await tickets.mint(
        redis, kind="customer", subject=customer.id, purpose=body.purpose, ttl_s=settings.ticket_ttl_s
    )
    return TicketPublic(ticket=ticket, expires_in=settings.ticket_ttl_s)


@router.post("/tickets/redeem", response_model=LoginResponse)
async def redeem_ticket(body: TicketRedeem, session: SessionDep, redis: RedisDep, settings: SettingsDep):
    """A page's sign-in: its `video_page` or `advisor_page` ticket (once, `purpose` naming the page) for a session
    token the page keeps in its tab."""
    customer_id = await tickets.redeem(redis, body.ticket, kind="customer", purpose=body.purpose)
    await customers.existing(session, customer_id)
    token = issue_token(
        settings.signing_key(), kind="customer", subject=customer_id, ttl_s=settings.customer_session_ttl_s
    )
    return LoginResponse(token=token, customer_id=customer_id, expires_in=settings.customer_session_ttl_s)


@router.post("/messages", response_model=SendResult, dependencies=[CustomerMessageLimit])
async def send_message(
    body: SendMessage, customer_id: CurrentCustomerId, session: SessionDep, redis: RedisDep, triage: TriageDep
):
    """Store the message and return the bot's answer (also pushed on the WebSocket)."""
    # The token is valid and the limiter passed: the text's parse is on its way to Rasa before the turn opens (which
    # reads the customer's row only for a customer with no conversation yet: a token whose customer is gone is still
    # a 401), so nothing the turn does delays the request.
    early = await EarlyParse.start(triage.nlu, body.text)
    received = await do_receive_customer_message(
        session,
        redis,
        triage,
        customer_id=customer_id,
        channel=Channel.MINIAPP,
        text=body.text,
        platform_msg_id=f"{customer_id}:{body.client_msg_id}",
        early=early,
    )
    result = SendResult(
        message=MessagePublic.of(received.message),
        replies=[MessagePublic.of(m) for m in received.replies],
        conversation=ConversationBrief.of(received.conversation),
        duplicate=received.duplicate,
    )
    # Serialised once, here: returned as a model, FastAPI would validate it against `response_model` again and
    # encode it through `jsonable_encoder` (the schema in /openapi.json stays `SendResult`).
    return Response(result.model_dump_json(), media_type="application/json")


@router.get("/messages", response_model=History)
async def current_history(customer: CurrentCustomer, session: SessionDep, after_id: AfterId = 0):
    """The transcript of the customer's current (or last) conversation, oldest first; agent replies they
    haven't seen yet (any conversation) in `waiting`, to show first."""
    assert customer.id is not None
    waiting = [MessagePublic.of(m) for m in await delivery_states.list_unseen(session, customer.id)]
    conversation = await conversation_repo.latest_conversation(session, customer.id)
    if conversation is None:
        return History(conversation=None, messages=[], waiting=waiting)
    messages = await conversation_repo.list_messages(session, conversation_id=conversation.id, after_id=after_id)
    return History(
        conversation=ConversationBrief.of(conversation),
        messages=[MessagePublic.of(m) for m in messages],
        waiting=waiting,
    )


@router.post("/receipts", response_model=ReceiptsResult)
async def receipts(body: Receipts, customer: CurrentCustomer, session: SessionDep, tracker: TrackerDep):
    """The page received (`delivered`) or showed (`read`) these messages; repeats change nothing."""
    assert customer.id is not None
    changed = await tracker.confirmed(session, customer.id, body.message_ids, body.status)
    return ReceiptsResult(changed=changed)


@router.post("/subscriptions", response_model=GrantsResult)
async def subscriptions(body: SubscribeResults, customer: CurrentCustomer, session: SessionDep, settings: SettingsDep):
    """What the customer answered `wx.requestSubscribeMessage`: each 允许 (accept) allows one subscribe message."""
    assert customer.id is not None
    unknown = sorted(set(body.results) - {settings.miniapp_reply_template_id})
    if unknown:
        raise BadRequest(f"unknown subscribe-message template: {', '.join(unknown)}", code="unknown_template")
    grants = {}
    for template_id, answer in body.results.items():
        if answer == "accept":
            grants[template_id] = await delivery_states.add_grant(
                session, customer_id=customer.id, template_id=template_id
            )
        else:
            grant = await delivery_states.get_grant(session, customer_id=customer.id, template_id=template_id)
            grants[template_id] = grant.remaining if grant else 0
    return GrantsResult(grants=grants)


@router.get("/conversations/{conversation_id}/messages", response_model=History)
async def conversation_history(
    conversation_id: RecordId, customer: CurrentCustomer, session: SessionDep, after_id: AfterId = 0
):
    assert customer.id is not None
    conversation = await conversations.get_for_customer(
        session, customer_id=customer.id, conversation_id=conversation_id
    )
    messages = await conversation_repo.list_messages(session, conversation_id=conversation.id, after_id=after_id)
    return History(conversation=ConversationBrief.of(conversation), messages=[MessagePublic.of(m) for m in messages])


@router.post("/conversations/{conversation_id}/rating", response_model=ConversationBrief)
async def rate(conversation_id: RecordId, body: Rating, customer: CurrentCustomer, session: SessionDep):
    """The customer's 1–5 rating of a closed conversation (CSAT); rating again replaces it."""
    assert customer.id is not None
    conversation = await conversations.get_for_customer(
        session, customer_id=customer.id, conversation_id=conversation_id
    )
    if conversation.state != ConversationState.CLOSED:
        raise Conflict("a conversation can be rated once it is closed", code="not_closed")
    conversation.csat = body.score
    return ConversationBrief.of(conversation)


@router.websocket("/ws")
async def customer_socket(
    websocket: WebSocket, settings: SettingsDep, redis: RedisDep, hub: HubDep, after_id: AfterId = 0
):
    """Pushes every new message for this customer; replays what was missed since `after_id`. Authenticated by a
    single-use `?ticket=` (POST /miniapp/tickets) or the Authorization header."""
    customer_id = await socket_bearer(websocket, settings, kind="customer")
    if customer_id is None:
        return
    await websocket.accept()
    socket_id: str | None = None
    try:
        socket_id = await socket_opened(redis, customer_id)  # the customer is on the page (api/delivery/presence.py)
        # Listening (Redis confirmed) before replaying, so nothing falls between the two.
        async with hub.listen(customer_channel(customer_id), kind="customer") as events:
            last_id = await _replay(websocket, customer_id, after_id)
            # A TaskGroup so that a disconnect seen by one task cancels the other.
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(_forward(websocket, events, customer_id, last_id))
                tasks.create_task(_answer_frames(websocket, redis, customer_id, socket_id))
    except* SubscriberOverflow:
        # Too far behind: the client reconnects with its last id and catches up from the record.
        await close_socket(websocket, TRY_AGAIN_LATER, "fell behind, reconnect")
    except* (RedisError, TimeoutError):
        # Redis went away under the socket (or never confirmed its channel): a close frame the page acts on (it
        # reconnects and replays from SQL), not a dropped connection and a traceback.
        log.warning("customer socket closed: Redis unavailable")
        await close_socket(websocket, TRY_AGAIN_LATER, "temporarily unavailable, reconnect shortly")
    except* (WebSocketDisconnect, RuntimeError, ConnectionError):
        pass
    finally:
        if socket_id is not None:
            with contextlib.suppress(RedisError):  # the entry expires on its own (SOCKET_TTL_S)
                await socket_closed(redis, customer_id, socket_id)


async def _replay(websocket: WebSocket, customer_id: int, after_id: int) -> int:
    last_id = after_id
    async with unit_of_work(websocket.app.state.engine) as session:
        for message in await conversation_repo.list_messages(session, customer_id=customer_id, after_id=after_id):
            await websocket.send_json(message_event(message))
            last_id = saved_id(message)
    return last_id


async def _forward(websocket: WebSocket, events, customer_id: int, last_id: int) -> None:
    while True:
        data = await events.next()
        if data is RESYNC:  # Redis came back: what was published meanwhile is in the record
            last_id = await _replay(websocket, customer_id, last_id)
            continue
        event = json.loads(data)
        message = event.get("message")
        if message is not None:
            if message["id"] <= last_id:
                continue  # already replayed
            last_id = message["id"]
        await websocket.send_json(event)


async def _answer_frames(websocket: WebSocket, redis, customer_id: int, socket_id: str) -> None:
    """Pings (each keeps the page counted as open) and the page's receipts: `{"type": "receipt", "status":
    "delivered"|"read", "message_ids": [...]}` (the same as POST /miniapp/receipts; a bad one is ignored)."""
    while True:
        frame = await websocket.receive_text()
        await socket_alive(redis, customer_id, socket_id)
        try:
            data = json.loads(frame)
            kind = data.get("type")
        except (ValueError, AttributeError):
            continue
        if kind == "ping":
            await websocket.send_json({"type": "pong"})
        elif kind == "receipt":
            try:
                body = Receipts.model_validate({"status": data.get("status"), "message_ids": data.get("message_ids")})
            except ValidationError:
                continue
            async with unit_of_work(websocket.app.state.engine) as session:
                await websocket.app.state.delivery_tracker.confirmed(
                    session, customer_id, body.message_ids, body.status
                )
