"""Telling people about a call: the customer's pages, the transcript's delivery, the agents' consoles."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlmodel.ext.asyncio.session import AsyncSession

from api.conversations import repository as conversation_repo
from api.conversations.models import Conversation, ConversationState, Message
from api.conversations.schemas import message_event
from api.realtime import AGENTS_CHANNEL, agent_channel, publish, publish_to_customer
from api.video.models import VideoCall
from api.video.schemas import CallPublic

if TYPE_CHECKING:
    from api.video.registry import CallRegistry


async def queue_text(session: AsyncSession, conversation: Conversation) -> str:
    """Where a customer whose video didn't happen stands: still queued (and how far back), or still served."""
    if conversation.state != ConversationState.QUEUED:
        return "您可以继续在这里文字沟通，或稍后再点「视频客服」。"
    assert conversation.id is not None
    escalation = await conversation_repo.open_escalation(session, conversation.id)
    ahead = await conversation_repo.queue_position(session, escalation) - 1 if escalation else 0
    return (
        "您仍在排队，位置已为您保留"
        + (f"（前面还有{ahead}位）" if ahead else "（您是下一位）")
        + "。客服有空会马上联系您，您也可以稍后再点「视频客服」。"
    )


def call_payload(call: VideoCall) -> dict:
    return {"type": "video_call", "call_id": call.id}


async def show_customer(registry: CallRegistry, conversation: Conversation, message: Message) -> None:
    """Live progress of the call: to the customer's open pages only (no WeChat push, it would spend quota)."""
    await publish_to_customer(registry.redis, conversation.customer_id, message_event(message))


async def deliver_outcome(
    registry: CallRegistry, conversation: Conversation, message: Message, *, outcome: bool
) -> None:
    """How a call ended goes out like any message (the official account too); a cancel the customer did needn't."""
    if outcome:
        await registry.delivery.deliver(conversation, [message])
    else:
        await show_customer(registry, conversation, message)


async def tell_customer(registry: CallRegistry, call: VideoCall) -> None:
    event = {"type": "video_call", "call": CallPublic.of(call).model_dump(mode="json")}
    await publish_to_customer(registry.redis, call.customer_id, event)


async def tell_agents(registry: CallRegistry, call: VideoCall, kind: str, **extra) -> None:
    event = {
        "type": kind,
        "call_id": call.id,
        "conversation_id": call.conversation_id,
        "state": call.state,
        "skill_group": call.skill_group,
        "rung_agent_id": call.rung_agent_id,
        "agent_id": call.agent_id,
        **extra,
    }
    await publish(registry.redis, AGENTS_CHANNEL, event)
    for agent_id in {agent_id for agent_id in (call.rung_agent_id, call.agent_id) if agent_id is not None}:
        await publish(registry.redis, agent_channel(agent_id), event)
