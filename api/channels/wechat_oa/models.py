"""Outbound official-account messages that WeChat could not take yet."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlmodel import Field, SQLModel

from api.timeutil import utcnow


class PendingStatus(StrEnum):
    PENDING = "pending"  # waiting for the customer's next interaction
    SENT = "sent"  # delivered through the customer-service API later
    MINIAPP = "miniapp"  # the customer saw it on the mini-program instead


class OaPendingMessage(SQLModel, table=True):
    """A message for the official account kept until it can be delivered: never dropped.

    Why it waited is in ``reason`` (``quota``, ``45015``, ``45047``, ``unreachable``, ``network`` ...).
    """

    __tablename__ = "oa_pending_message"

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", unique=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    conversation_id: int = Field(foreign_key="conversation.id")
    status: str = Field(default=PendingStatus.PENDING, max_length=16, index=True)
    reason: str = Field(max_length=32)
    attempts: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    delivered_at: datetime | None = None
