"""Conversations, every message in them, and the escalations to a human."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Text, UniqueConstraint
from sqlmodel import Field, Relationship, SQLModel

from api.defaults import empty_dict, empty_list
from api.timeutil import utcnow


class ConversationState(StrEnum):
    BOT = "bot"
    QUEUED = "queued"
    WITH_AGENT = "with_agent"
    CLOSED = "closed"


class SenderKind(StrEnum):
    CUSTOMER = "customer"
    BOT = "bot"
    AGENT = "agent"
    SYSTEM = "system"


class Direction(StrEnum):
    IN = "in"
    OUT = "out"


class ConversationBase(SQLModel):
    """The columns an agent sees as they are (`ConversationDetail`); the table adds its id and the rest.

    A field with `sa_column` holds one Column object: only one table model may inherit it.
    """

    customer_id: int = Field(foreign_key="customer.id", index=True)
    state: str = Field(default=ConversationState.BOT, max_length=16, index=True)
    current_channel: str = Field(max_length=16)
    channel_path: list[str] = Field(default_factory=empty_list, sa_column=Column(JSON, nullable=False))
    intent: str | None = Field(default=None, max_length=64)
    intent_confidence: float | None = None
    slots: dict[str, Any] = Field(default_factory=empty_dict, sa_column=Column(JSON, nullable=False))
    agent_id: int | None = Field(default=None, foreign_key="agent.id", index=True)
    previous_conversation_id: int | None = Field(default=None, foreign_key="conversation.id")
    created_at: datetime = Field(default_factory=utcnow)


class Conversation(ConversationBase, table=True):
    """One customer's case from first message to close, across channels."""

    id: int | None = Field(default=None, primary_key=True)
    low_confidence_turns: int = 0
    disposition: str | None = Field(default=None, max_length=64)
    csat: int | None = None
    updated_at: datetime = Field(default_factory=utcnow)
    closed_at: datetime | None = None


class MessageBase(SQLModel):
    """The columns the API shows as they are (`MessagePublic`, its text masked for agents); the table adds the rest.

    A field with `sa_column` holds one Column object: only one table model may inherit it.
    """

    conversation_id: int = Field(foreign_key="conversation.id", index=True)
    channel: str = Field(max_length=16)
    direction: str = Field(max_length=4)
    sender_kind: str = Field(max_length=16)
    # An agent's internal note: kept in the record, never delivered to the customer.
    internal: bool = False
    text: str = Field(sa_column=Column(Text, nullable=False))
    # Structured content beside the text: a video invitation, an image, a mini-program card.
    payload: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, index=True)


class Message(MessageBase, table=True):
    """Every inbound and outbound message; a platform id is unique per channel (dedup of retries)."""

    __table_args__ = (UniqueConstraint("channel", "platform_msg_id", name="uq_message_platform_id"),)

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    agent_id: int | None = Field(default=None, foreign_key="agent.id")
    kind: str = Field(default="text", max_length=16)
    platform_msg_id: str | None = Field(default=None, max_length=128)
    in_reply_to: int | None = Field(default=None, foreign_key="message.id")
    intent: str | None = Field(default=None, max_length=64)
    confidence: float | None = None

    # For writing only, never loaded (reading it raises): a message added with its conversation (a new one) and a
    # reply with its question are written in one flush, in that order, their ids filled in by the unit of work.
    # Plain names, not `X | None`: SQLModel hands the annotation's text to SQLAlchemy as the class to find.
    conversation: Conversation = Relationship(sa_relationship_kwargs={"lazy": "raise"})
    reply_to: Message = Relationship(sa_relationship_kwargs={"lazy": "raise", "remote_side": "Message.id"})


class Escalation(SQLModel, table=True):
    """A hand-off from the bot to a human, with the card the agent reads instead of asking."""

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversation.id", index=True)
    reason: str = Field(max_length=32)
    intent: str | None = Field(default=None, max_length=64)
    skill_group: str = Field(default="general", max_length=32, index=True)
    priority: int = 0
    mode: str = Field(default="text", max_length=8)
    handoff_card: dict[str, Any] = Field(default_factory=empty_dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, index=True)
    claimed_by: int | None = Field(default=None, foreign_key="agent.id")
    claimed_at: datetime | None = None
    # When the agent first answered; an assignment left unanswered past the timeout goes back to the queue.
    first_response_at: datetime | None = None
    requeue_count: int = 0
    # Queue order: a requeued escalation keeps (or improves) its place through this, not created_at.
    queued_at: datetime = Field(default_factory=utcnow)
