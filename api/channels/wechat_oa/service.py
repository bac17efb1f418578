"""The official account's SQL side: who an openid is, and messages kept pending. No commits here."""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from sqlalchemy import exists
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.channels.wechat_oa.models import OaPendingMessage, PendingStatus
from api.channels.wechat_platform import WeChatApiError, WeChatPlatform
from api.conversations.models import Direction, Message
from api.customers import service as customers
from api.customers.models import Channel, ChannelIdentity, Customer
from api.db import saved_id
from api.timeutil import utcnow

log = logging.getLogger(__name__)

# An openid whose unionid we couldn't learn is asked again, at most hourly, for a week.
UNIONID_RETRY_S = 7 * 24 * 3600
UNIONID_RETRY_EVERY_S = 3600


async def get_identity(session: AsyncSession, *, app_id: str, openid: str) -> ChannelIdentity | None:
    statement = select(ChannelIdentity).where(
        ChannelIdentity.channel == Channel.WECHAT_OA, ChannelIdentity.app_id == app_id, ChannelIdentity.openid == openid
    )
    return (await session.exec(statement)).first()


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


async def resolve_customer(
    session: AsyncSession, redis: Redis, platform: WeChatPlatform, *, app_id: str, openid: str
) -> int:
    """The customer behind an openid; on first sight, the user-info API gives the unionid that joins
    them to the same person on the mini-program ("never repeat yourself")."""
    identity = await get_identity(session, app_id=app_id, openid=openid)
    if identity is not None:
        await retry_unionid(session, redis, platform, app_id=app_id, identity=identity)
        return identity.customer_id
    unionid = await _fetch_unionid(redis, platform, app_id=app_id, openid=openid)
    customer = await customers.link_identity(
        session, channel=Channel.WECHAT_OA, app_id=app_id, openid=openid, unionid=unionid
    )
    return saved_id(customer)


async def _fetch_unionid(redis: Redis, platform: WeChatPlatform, *, app_id: str, openid: str) -> str | None:
    try:
        info = await platform.oa_user_info(openid)
    except WeChatApiError as exc:
        log.warning("user/info failed for an openid of %s (%s); linking without unionid for now", app_id, exc.errcode)
        await redis.set(f"yt:oa:unionid_retry:{app_id}:{openid}", 1, ex=UNIONID_RETRY_S)
        return None
    return info.get("unionid") or None


async def retry_unionid(
    session: AsyncSession, redis: Redis, platform: WeChatPlatform, *, app_id: str, identity: ChannelIdentity
) -> None:
    """Ask user/info again for an openid linked without its unionid (rate-limited; a no-op otherwise)."""
    retry_key = f"yt:oa:unionid_retry:{app_id}:{identity.openid}"
    if not await redis.exists(retry_key):
        return
    if not await redis.set(retry_key + ":tried", 1, nx=True, ex=UNIONID_RETRY_EVERY_S):
        return
    unionid = await _fetch_unionid(redis, platform, app_id=app_id, openid=identity.openid)
    if unionid is None:
        return
    await redis.delete(retry_key)
    customer = await session.get(Customer, identity.customer_id)
    taken = (await session.exec(select(Customer).where(Customer.unionid == unionid))).first()
    if customer is not None and customer.unionid is None and taken is None:
        customer.unionid = unionid
    elif taken is not None and taken.id != identity.customer_id:
        # Merging two customers' records is a decision for a person, not for a push handler.
        log.warning(
            "customer %s on the official account is customer %s elsewhere; not merged", identity.customer_id, taken.id
        )


async def set_reachable(session: AsyncSession, *, app_id: str, openid: str, reachable: bool) -> ChannelIdentity | None:
    """Mark an openid (un)reachable: an unsubscribed user gets no customer-service messages."""
    identity = await get_identity(session, app_id=app_id, openid=openid)
    if identity is not None:
        identity.reachable = reachable
        identity.last_seen_at = utcnow()
    return identity


async def keep_pending(
    session: AsyncSession, message: Message, *, reason: str, status: str = PendingStatus.PENDING
) -> OaPendingMessage:
    """Record that ``message`` waits (or went elsewhere); once per message, later calls update it."""
    assert message.id is not None
    pending = await get_pending(session, message.id)
    if pending is None:
        pending = OaPendingMessage(
            message_id=message.id,
            customer_id=message.customer_id,
            conversation_id=message.conversation_id,
            status=status,
            reason=reason,
        )
        session.add(pending)
    pending.status, pending.reason, pending.updated_at = status, reason, utcnow()
    pending.attempts += 1
    if status != PendingStatus.PENDING:
        pending.delivered_at = utcnow()
    return pending


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


def mark_delivered(pending: OaPendingMessage, status: str) -> None:
    pending.status = status
    pending.updated_at = pending.delivered_at = utcnow()


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
