"""API shapes for documents and document requests."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class DocumentPublic(BaseModel):
    id: int
    conversation_id: int
    message_id: int | None
    request_id: int | None
    channel: str
    kind: str
    content_type: str
    size_bytes: int
    sha256: str
    created_at: datetime


class Uploaded(BaseModel):
    document: DocumentPublic
    message_id: int
    duplicate: bool = False


class RequestCreate(BaseModel):
    what: str = Field(min_length=1, max_length=200, description="what the customer is asked to send")


class RequestPublic(BaseModel):
    id: int
    conversation_id: int
    what: str
    state: str
    created_at: datetime
    fulfilled_at: datetime | None
