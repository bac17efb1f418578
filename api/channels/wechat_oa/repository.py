"""Queries of the official account: who an openid is, and the messages kept pending for it. No commits here."""

from __future__ import annotations

from sqlalchemy import exists
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.channels.wechat_oa.models import OaPendingMessage, PendingStatus
from api.conversations.models import Direction, Message
from api.customers.models import Channel, ChannelIdentity, Customer


async def get_identity_and_waiting(
    session: AsyncSession, *, app_id: str, openid: str
) -> tuple[ChannelIdentity | None, bool, bool]:
    """The openid's identity, whether messages wait for its customer, and whether the customer's unionid is
    known (then there is nothing to retry): one query on every push."""
    waiting = exists().where(
        col(OaPendingMessage.customer_id) == ChannelIdentity.customer_id,
        col(OaPendingMessage.status) == PendingStatus.PENDING,
    )
    linked = exists().where(col(Customer.id) == ChannelIdentity.customer_id, col(Customer.unionid).is_not(None))
    statement = select(ChannelIdentity, waiting.label("waiting"), linked.label("linked")).where(
        ChannelIdentity.channel == Channel.WECHAT_OA, ChannelIdentity.app_id == app_id, ChannelIdentity.openid == openid
    )
    row = (await session.exec(statement)).first()
    return (None, False, False) if row is None else (row[0], bool(row[1]), bool(row[2]))


async def get_identity_of_customer(session: AsyncSession, *, app_id: str, customer_id: int) -> ChannelIdentity | None:
    """The customer's openid in this official account (the most recently seen, should there be two)."""
    statement = (
        select(ChannelIdentity)
        .where(
            ChannelIdentity.channel == Channel.WECHAT_OA,
            ChannelIdentity.app_id == app_id,
            ChannelIdentity.customer_id == customer_id,
        )
        .order_by(col(ChannelIdentity.last_seen_at).desc())
    )
    return (await session.exec(statement)).first()


async def get_pending(session: AsyncSession, message_id: int) -> OaPendingMessage | None:
    statement = select(OaPendingMessage).where(OaPendingMessage.message_id == message_id)
    return (await session.exec(statement)).first()


async def list_pending(session: AsyncSession, customer_id: int) -> list[tuple[OaPendingMessage, Message]]:
    """The customer's waiting messages, oldest first (they go out in the order they were written)."""
    statement = (
        select(OaPendingMessage, Message)
        .join(Message, col(Message.id) == OaPendingMessage.message_id)
        .where(OaPendingMessage.customer_id == customer_id, OaPendingMessage.status == PendingStatus.PENDING)
        .order_by(col(OaPendingMessage.message_id))
    )
    return list((await session.exec(statement)).all())


async def has_pending(session: AsyncSession, customer_id: int) -> bool:
    """Whether anything waits for the customer (checked at every push: an index lookup, no rows loaded)."""
    statement = (
        select(OaPendingMessage.id)
        .where(OaPendingMessage.customer_id == customer_id, OaPendingMessage.status == PendingStatus.PENDING)
        .limit(1)
    )
    return (await session.exec(statement)).first() is not None


async def seen_on_miniapp(session: AsyncSession, message: Message) -> bool:
    """Whether the customer wrote on the mini-program after ``message``: its chat page showed it to them."""
    statement = (
        select(Message.id)
        .where(
            Message.conversation_id == message.conversation_id,
            Message.channel == Channel.MINIAPP,
            Message.direction == Direction.IN,
            col(Message.id) > message.id,
        )
        .limit(1)
    )
    return (await session.exec(statement)).first() is not None
