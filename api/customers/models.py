"""Customers and the WeChat identities that lead to them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from api.timeutil import utcnow


class Channel(StrEnum):
    """Where a customer reaches the bank."""

    WECHAT_OA = "wechat_oa"
    MINIAPP = "miniapp"


class Customer(SQLModel, table=True):
    """A person; `unionid` is the same across the official account and the mini-program."""

    id: int | None = Field(default=None, primary_key=True)
    unionid: str | None = Field(default=None, unique=True, index=True, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class ChannelIdentity(SQLModel, table=True):
    """One openid in one app, pointing at the customer it belongs to."""

    __tablename__ = "channel_identity"
    __table_args__ = (UniqueConstraint("channel", "app_id", "openid", name="uq_channel_identity"),)

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=16)
    app_id: str = Field(max_length=64)
    openid: str = Field(max_length=64)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    reachable: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime = Field(default_factory=utcnow)
