"""Whether each agent message reached the customer, and the subscribe messages they allowed us to send."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from api.timeutil import utcnow


class DeliveryState(StrEnum):
    """What the agent sees next to their message; it only moves forward (see `repository.advance`)."""

    PENDING = "pending"  # nowhere to send it now: shown first when the customer comes back
    FAILED = "failed"  # every try failed (WeChat unreachable, bounded retries spent); still in the transcript
    SENT = "sent"  # handed to a channel (an open page, a customer-service or subscribe message), unconfirmed
    DELIVERED = "delivered"  # the customer's page received it
    READ = "read"  # the customer's page showed it


class DeliveryRoute(StrEnum):
    MINIAPP = "miniapp"  # the mini-program page's socket
    WECHAT_OA = "wechat_oa"  # an official-account customer-service message
    SUBSCRIBE = "subscribe"  # a mini-program subscribe message (one per granted tap)


class MessageDelivery(SQLModel, table=True):
    """One agent message's way to the customer."""

    __tablename__ = "message_delivery"

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", unique=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    conversation_id: int = Field(foreign_key="conversation.id", index=True)
    agent_id: int | None = Field(default=None, foreign_key="agent.id")
    state: str = Field(default=DeliveryState.PENDING, max_length=16, index=True)
    route: str | None = Field(default=None, max_length=16)
    # Fallback rounds tried (bounded by `delivery_max_attempts`), and why the last one could not send.
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    delivered_at: datetime | None = None
    read_at: datetime | None = None


class SubscribeGrant(SQLModel, table=True):
    """Subscribe messages a customer allowed by tapping 允许 (WeChat: one message per tap)."""

    __tablename__ = "subscribe_grant"
    __table_args__ = (UniqueConstraint("customer_id", "template_id", name="uq_subscribe_grant"),)

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    template_id: str = Field(max_length=64)
    remaining: int = 0
    updated_at: datetime = Field(default_factory=utcnow)
