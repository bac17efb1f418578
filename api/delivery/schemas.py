"""API shapes of delivery states, page confirmations and subscribe grants."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from api.bounds import RecordId


class DeliveryPublic(BaseModel):
    """Shown to the agent next to their message."""

    state: str
    route: str | None = None
    updated_at: datetime

    @classmethod
    def of(cls, row) -> DeliveryPublic:
        return cls(state=row.state, route=row.route, updated_at=row.updated_at)


class Receipts(BaseModel):
    """The page received (``delivered``) or showed (``read``) these messages."""

    status: Literal["delivered", "read"]
    message_ids: list[RecordId] = Field(min_length=1, max_length=100)


class ReceiptsResult(BaseModel):
    changed: int


class SubscribeResults(BaseModel):
    """What `wx.requestSubscribeMessage` answered the page: template id -> accept / reject / ban / filter."""

    results: dict[str, Literal["accept", "reject", "ban", "filter"]] = Field(min_length=1, max_length=5)


class GrantsResult(BaseModel):
    """Subscribe messages the customer has allowed now, per template."""

    grants: dict[str, int]
