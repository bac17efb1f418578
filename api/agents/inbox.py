"""The agent's live inbox: a WebSocket pushing queue changes, assignments and new customer messages."""

from __future__ import annotations

import asyncio
import json
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from redis.exceptions import RedisError

from api.agents.models import Agent
from api.db import unit_of_work
from api.deps import TRY_AGAIN_LATER, HubDep, RedisDep, SettingsDep, close_socket, socket_bearer
from api.realtime import AGENTS_CHANNEL, RESYNC, SubscriberOverflow, agent_channel
from api.routing.service import touch_agent

log = logging.getLogger(__name__)

router = APIRouter(prefix="/agents", tags=["agents"])


@router.websocket("/ws")
async def inbox(websocket: WebSocket, settings: SettingsDep, redis: RedisDep, hub: HubDep):
    """Events: queue_changed, assigned, conversation_removed, message (customer messages), presence."""
    agent_id = await socket_bearer(websocket, settings, kind="agent")
    if agent_id is None:
        return
    async with unit_of_work(websocket.app.state.engine) as session:
        agent = await session.get(Agent, agent_id)
    if agent is None or not agent.active:
        await websocket.accept()
        await websocket.close(code=4401, reason="unknown agent")
        return
    await websocket.accept()
    try:
        await touch_agent(redis, agent_id, settings.agent_heartbeat_ttl_s)
        async with hub.listen(AGENTS_CHANNEL, agent_channel(agent_id), kind="agent") as events:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(_forward(websocket, events))
                tasks.create_task(_heartbeat(websocket, redis, agent_id, settings.agent_heartbeat_ttl_s))
    except* SubscriberOverflow:
        await close_socket(websocket, TRY_AGAIN_LATER, "fell behind, reconnect")  # the console reloads its lists
    except* (RedisError, TimeoutError):
        # Redis went away under the socket: a close frame the console acts on, not a dropped connection.
        log.warning("agent socket closed: Redis unavailable")
        await close_socket(websocket, TRY_AGAIN_LATER, "temporarily unavailable, reconnect shortly")
    except* (WebSocketDisconnect, RuntimeError, ConnectionError):
        pass


async def _forward(websocket: WebSocket, events) -> None:
    while True:
        data = await events.next()
        if data is RESYNC:  # Redis came back: events may be missing; the console reloads its lists
            await websocket.send_text('{"type": "resync"}')
            continue
        await websocket.send_text(data)


async def _heartbeat(websocket: WebSocket, redis, agent_id: int, ttl_s: int) -> None:
    """Every frame from the console (pings every ~15 s) keeps the agent alive."""
    while True:
        frame = await websocket.receive_text()
        await touch_agent(redis, agent_id, ttl_s)
        try:
            if json.loads(frame).get("type") == "ping":
                await websocket.send_json({"type": "pong"})
        except (ValueError, AttributeError):
            continue
