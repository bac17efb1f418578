"""Documents and photos a customer sends (上传资料), and an agent's requests for them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Text
from sqlmodel import Field, SQLModel

from api.timeutil import utcnow


class DocumentRequestBase(SQLModel):
    """The columns the API shows as they are (`RequestPublic`); the table adds its id and who asked whom.

    A field with `sa_column` holds one Column object: only one table model may inherit it.
    """

    conversation_id: int = Field(foreign_key="conversation.id", index=True)
    what: str = Field(sa_column=Column(Text, nullable=False))
    state: str = Field(default="open", max_length=16)  # open, fulfilled
    created_at: datetime = Field(default_factory=utcnow)
    fulfilled_at: datetime | None = None


class DocumentRequest(DocumentRequestBase, table=True):
    """An agent asked for a document (a request card); the customer answers it with an upload."""

    __tablename__ = "document_request"

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    agent_id: int = Field(foreign_key="agent.id")


class DocumentBase(SQLModel):
    """The columns the API shows as they are (`DocumentPublic`); the table adds its id and where the file is kept.

    A field with `sa_column` holds one Column object: only one table model may inherit it.
    """

    conversation_id: int = Field(foreign_key="conversation.id", index=True)
    message_id: int | None = Field(default=None, foreign_key="message.id")
    request_id: int | None = Field(default=None, foreign_key="document_request.id")
    channel: str = Field(max_length=16)
    kind: str = Field(max_length=8)  # image or pdf
    content_type: str = Field(max_length=64)
    size_bytes: int = Field(sa_column=Column(BigInteger, nullable=False))
    sha256: str = Field(max_length=64, index=True)  # of the content
    created_at: datetime = Field(default_factory=utcnow)


class Document(DocumentBase, table=True):
    """One stored file: type checked by its content, its SHA-256, where it is kept (never its bytes here)."""

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    # Kept sealed by api/vault.py: the stored file's own SHA-256 and the master key wrapping its data key.
    stored_sha256: str = Field(max_length=64)
    vault_key_id: str = Field(max_length=32)
    storage_path: str = Field(max_length=512)
    # The official account's media id (a retried push stores its image once).
    platform_media_id: str | None = Field(default=None, max_length=128, unique=True)
