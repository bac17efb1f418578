"""Guided steps (同屏指导): an agent walks the customer through a mini-program page step by step."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from api.defaults import empty_list
from api.timeutil import utcnow


class GuideBase(SQLModel):
    """The columns the agent and the mini-program see as they are (`GuidePublic`); the table adds the rest.

    A field with `sa_column` holds one Column object: only one table model may inherit it.
    """

    conversation_id: int = Field(foreign_key="conversation.id", index=True)
    page: str = Field(max_length=128)  # the mini-program page path, e.g. pages/transfer/transfer
    title: str = Field(max_length=64)
    steps: list[str] = Field(default_factory=empty_list, sa_column=Column(JSON, nullable=False))
    current_step: int = 0  # 0 = not opened yet; 1..len(steps)
    state: str = Field(default="sent", max_length=16)  # sent, in_progress, done, stopped
    progress: list[dict[str, Any]] = Field(default_factory=empty_list, sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow)


class Guide(GuideBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    agent_id: int = Field(foreign_key="agent.id")
    created_at: datetime = Field(default_factory=utcnow)
