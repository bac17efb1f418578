"""API shapes for documents and document requests."""

from __future__ import annotations

from pydantic import BaseModel, Field

from api.defaults import PUBLIC_SHAPE
from api.documents.models import DocumentBase, DocumentRequestBase


class DocumentPublic(DocumentBase):
    model_config = PUBLIC_SHAPE

    id: int


class Uploaded(BaseModel):
    document: DocumentPublic
    message_id: int
    duplicate: bool = False


class RequestCreate(BaseModel):
    what: str = Field(min_length=1, max_length=200, description="what the customer is asked to send")


class RequestPublic(DocumentRequestBase):
    model_config = PUBLIC_SHAPE

    id: int
