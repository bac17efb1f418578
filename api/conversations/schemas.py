"""API shapes for conversations and messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from api.delivery.schemas import DeliveryPublic


class MessagePublic(BaseModel):
    id: int
    conversation_id: int
    direction: str
    sender_kind: str
    text: str
    channel: str
    created_at: datetime
    payload: dict[str, Any] | None = None
    internal: bool = False
    # An agent message's way to the customer (agent views only; see api/delivery).
    delivery: DeliveryPublic | None = None

    @classmethod
    def of(cls, message) -> MessagePublic:
        return cls.model_validate(message, from_attributes=True)


class ConversationBrief(BaseModel):
    id: int
    state: str

    @classmethod
    def of(cls, conversation) -> ConversationBrief:
        return cls(id=conversation.id, state=conversation.state)


class ConversationDetail(BaseModel):
    id: int
    customer_id: int
    state: str
    current_channel: str
    channel_path: list[str]
    intent: str | None
    intent_confidence: float | None
    slots: dict[str, Any]
    agent_id: int | None
    previous_conversation_id: int | None
    created_at: datetime

    @classmethod
    def of(cls, conversation) -> ConversationDetail:
        return cls.model_validate(conversation, from_attributes=True)


def message_event(message) -> dict[str, Any]:
    return {"type": "message", "message": MessagePublic.of(message).model_dump(mode="json")}


def conversation_event(conversation) -> dict[str, Any]:
    return {"type": "conversation", "conversation": ConversationBrief.of(conversation).model_dump()}
