"""Queries about documents and document requests. No commits here."""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.documents.models import Document, DocumentRequest


async def list_for_conversation(session: AsyncSession, conversation_id: int | None) -> list[Document]:
    statement = select(Document).where(Document.conversation_id == conversation_id).order_by(col(Document.id))
    return list((await session.exec(statement)).all())


async def count_for_customer(session: AsyncSession, customer_id: int) -> int:
    statement = select(func.count()).select_from(Document).where(Document.customer_id == customer_id)
    return int((await session.exec(statement)).one())


async def sealed_under_old_keys(session: AsyncSession, current_key_id: str) -> list[int]:
    """Ids of the documents whose data key isn't wrapped under the current master key, in id order."""
    statement = select(Document.id).where(col(Document.vault_key_id) != current_key_id).order_by(col(Document.id))
    return [document_id for document_id in (await session.exec(statement)).all() if document_id is not None]


async def requests_of_conversation(session: AsyncSession, conversation_id: int | None) -> list[DocumentRequest]:
    statement = (
        select(DocumentRequest)
        .where(DocumentRequest.conversation_id == conversation_id)
        .order_by(col(DocumentRequest.id))
    )
    return list((await session.exec(statement)).all())


async def oldest_open_request(session: AsyncSession, customer_id: int) -> int | None:
    """The id of the customer's oldest document request not answered yet."""
    statement = (
        select(DocumentRequest.id)
        .where(DocumentRequest.customer_id == customer_id, DocumentRequest.state == "open")
        .order_by(col(DocumentRequest.id))
    )
    return (await session.exec(statement)).first()
