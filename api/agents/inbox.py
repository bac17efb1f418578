"""The agent's live inbox: a WebSocket pushing queue changes, assignments and new customer messages."""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from api.agents.models import Agent
from api.db import unit_of_work
from api.deps import RedisDep, SettingsDep, socket_bearer
from api.realtime import AGENTS_CHANNEL, agent_channel
from api.routing.loop import touch_agent

router = APIRouter(prefix="/agents", tags=["agents"])


@router.websocket("/ws")
async def inbox(websocket: WebSocket, settings: SettingsDep, redis: RedisDep):
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
    await touch_agent(redis, agent_id, settings.agent_heartbeat_ttl_s)
    pubsub = redis.pubsub()
    await pubsub.subscribe(AGENTS_CHANNEL, agent_channel(agent_id))
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_forward(websocket, pubsub))
            tasks.create_task(_heartbeat(websocket, redis, agent_id, settings.agent_heartbeat_ttl_s))
    except* (WebSocketDisconnect, RuntimeError, ConnectionError):
        pass
    finally:
        await pubsub.unsubscribe()
        await pubsub.aclose()


async def _forward(websocket: WebSocket, pubsub) -> None:
    async for item in pubsub.listen():
        if item.get("type") == "message":
            await websocket.send_text(item["data"])


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
