"""Queries about guides. No commits here."""

from __future__ import annotations

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.guides.models import Guide


async def list_for_conversation(session: AsyncSession, conversation_id: int | None) -> list[Guide]:
    statement = select(Guide).where(Guide.conversation_id == conversation_id).order_by(col(Guide.id))
    return list((await session.exec(statement)).all())
