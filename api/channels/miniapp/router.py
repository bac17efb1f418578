"""The mini-program's HTTP and WebSocket API (thin: the work is in services and flows)."""

from __future__ import annotations

import asyncio
import json
import logging

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect

from api.channels.miniapp import service
from api.channels.miniapp.schemas import History, LoginRequest, LoginResponse, Rating, SendMessage, SendResult
from api.conversations import service as conversations
from api.conversations.flows import do_receive_customer_message
from api.conversations.models import ConversationState
from api.conversations.schemas import ConversationBrief, MessagePublic, message_event
from api.customers.models import Channel
from api.db import unit_of_work
from api.deps import (
    CurrentCustomer,
    HubDep,
    RedisDep,
    SessionDep,
    SettingsDep,
    TriageDep,
    WeChatDep,
    socket_bearer,
)
from api.errors import Conflict
from api.realtime import RESYNC, SubscriberOverflow, customer_channel

router = APIRouter(prefix="/miniapp", tags=["miniapp"])
log = logging.getLogger(__name__)


@router.post("/login", response_model=LoginResponse)
async def login(body: LoginRequest, session: SessionDep, redis: RedisDep, wechat: WeChatDep, settings: SettingsDep):
    token, customer_id = await service.login(session, redis, wechat, settings, code=body.code)
    return LoginResponse(token=token, customer_id=customer_id, expires_in=settings.customer_session_ttl_s)


@router.post("/messages", response_model=SendResult)
async def send_message(
    body: SendMessage, customer: CurrentCustomer, session: SessionDep, redis: RedisDep, triage: TriageDep
):
    """Store the message and return the bot's answer (also pushed on the WebSocket)."""
    received = await do_receive_customer_message(
        session,
        redis,
        triage,
        customer_id=customer.id,
        channel=Channel.MINIAPP,
        text=body.text,
        platform_msg_id=f"{customer.id}:{body.client_msg_id}",
    )
    return SendResult(
        message=MessagePublic.of(received.message),
        replies=[MessagePublic.of(m) for m in received.replies],
        conversation=ConversationBrief.of(received.conversation),
        duplicate=received.duplicate,
    )


@router.get("/messages", response_model=History)
async def current_history(customer: CurrentCustomer, session: SessionDep, after_id: int = Query(0, ge=0)):
    """The transcript of the customer's current (or last) conversation, oldest first."""
    conversation = await conversations.get_latest(session, customer.id)
    if conversation is None:
        return History(conversation=None, messages=[])
    messages = await conversations.list_messages(session, conversation_id=conversation.id, after_id=after_id)
    return History(conversation=ConversationBrief.of(conversation), messages=[MessagePublic.of(m) for m in messages])


@router.get("/conversations/{conversation_id}/messages", response_model=History)
async def conversation_history(
    conversation_id: int, customer: CurrentCustomer, session: SessionDep, after_id: int = Query(0, ge=0)
):
    conversation = await conversations.get_for_customer(
        session, customer_id=customer.id, conversation_id=conversation_id
    )
    messages = await conversations.list_messages(session, conversation_id=conversation.id, after_id=after_id)
    return History(conversation=ConversationBrief.of(conversation), messages=[MessagePublic.of(m) for m in messages])


@router.post("/conversations/{conversation_id}/rating", response_model=ConversationBrief)
async def rate(conversation_id: int, body: Rating, customer: CurrentCustomer, session: SessionDep):
    """The customer's 1–5 rating of a closed conversation (CSAT); rating again replaces it."""
    conversation = await conversations.get_for_customer(
        session, customer_id=customer.id, conversation_id=conversation_id
    )
    if conversation.state != ConversationState.CLOSED:
        raise Conflict("a conversation can be rated once it is closed", code="not_closed")
    conversation.csat = body.score
    return ConversationBrief.of(conversation)


@router.websocket("/ws")
async def customer_socket(websocket: WebSocket, settings: SettingsDep, hub: HubDep, after_id: int = Query(0, ge=0)):
    """Pushes every new message for this customer; replays what was missed since `after_id`."""
    customer_id = await socket_bearer(websocket, settings, kind="customer")
    if customer_id is None:
        return
    await websocket.accept()
    try:
        # Listening (Redis confirmed) before replaying, so nothing falls between the two.
        async with hub.listen(customer_channel(customer_id), kind="customer") as events:
            last_id = await _replay(websocket, customer_id, after_id)
            # A TaskGroup so that a disconnect seen by one task cancels the other.
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(_forward(websocket, events, customer_id, last_id))
                tasks.create_task(_answer_pings(websocket))
    except* SubscriberOverflow:
        # Too far behind: the client reconnects with its last id and catches up from the record.
        await _close(websocket, 1013)
    except* (WebSocketDisconnect, RuntimeError, ConnectionError, TimeoutError):
        pass


async def _close(websocket: WebSocket, code: int) -> None:
    try:
        await websocket.close(code=code)
    except (RuntimeError, ConnectionError):
        pass


async def _replay(websocket: WebSocket, customer_id: int, after_id: int) -> int:
    last_id = after_id
    async with unit_of_work(websocket.app.state.engine) as session:
        for message in await conversations.list_messages(session, customer_id=customer_id, after_id=after_id):
            await websocket.send_json(message_event(message))
            last_id = message.id
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


async def _answer_pings(websocket: WebSocket) -> None:
    while True:
        frame = await websocket.receive_text()
        try:
            kind = json.loads(frame).get("type")
        except (ValueError, AttributeError):
            kind = None
        if kind == "ping":
            await websocket.send_json({"type": "pong"})
