"""Queries about customers and their WeChat identities. No commits here."""

from __future__ import annotations

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.customers.models import ChannelIdentity, Customer


async def get_identity(session: AsyncSession, *, channel: str, app_id: str, openid: str) -> ChannelIdentity | None:
    statement = select(ChannelIdentity).where(
        ChannelIdentity.channel == channel,
        ChannelIdentity.app_id == app_id,
        ChannelIdentity.openid == openid,
    )
    return (await session.exec(statement)).first()


async def get_by_unionid(session: AsyncSession, unionid: str) -> Customer | None:
    return (await session.exec(select(Customer).where(Customer.unionid == unionid))).first()
