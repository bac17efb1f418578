"""API shapes for conversations and messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from api.conversations.models import ConversationBase, MessageBase
from api.defaults import PUBLIC_SHAPE
from api.delivery.schemas import DeliveryPublic


class MessagePublic(MessageBase):
    id: int
    created_at: datetime  # required in the API's schema (`payload`, `internal` and `delivery` are optional)
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


class ConversationDetail(ConversationBase):
    model_config = PUBLIC_SHAPE

    id: int

    @classmethod
    def of(cls, conversation) -> ConversationDetail:
        return cls.model_validate(conversation, from_attributes=True)


def message_event(message) -> dict[str, Any]:
    return {"type": "message", "message": MessagePublic.of(message).model_dump(mode="json")}


def conversation_event(conversation) -> dict[str, Any]:
    return {"type": "conversation", "conversation": ConversationBrief.of(conversation).model_dump()}
