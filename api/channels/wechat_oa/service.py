"""The official account's logic around its queries (repository.py): the customer behind an openid (and its
unionid, asked again when WeChat didn't give it), whether it is reachable, and messages kept pending. No
commits here."""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from sqlmodel.ext.asyncio.session import AsyncSession

from api.channels.wechat_oa import repository
from api.channels.wechat_oa.models import OaPendingMessage, PendingStatus
from api.channels.wechat_platform import WeChatApiError, WeChatPlatform
from api.conversations.models import Message
from api.customers import repository as customer_repo
from api.customers import service as customers
from api.customers.models import Channel, ChannelIdentity, Customer
from api.timeutil import utcnow

log = logging.getLogger(__name__)

# An openid whose unionid we couldn't learn is asked again, at most hourly, for a week.
UNIONID_RETRY_S = 7 * 24 * 3600
UNIONID_RETRY_EVERY_S = 3600


async def resolve_customer(
    session: AsyncSession, redis: Redis, platform: WeChatPlatform, *, app_id: str, openid: str
) -> Customer:
    """The customer behind an openid; on first sight, the user-info API gives the unionid that joins
    them to the same person on the mini-program ("never repeat yourself")."""
    identity = await customer_repo.get_identity(session, channel=Channel.WECHAT_OA, app_id=app_id, openid=openid)
    if identity is not None:  # linked meanwhile (by another worker, while this one waited for the link's lock)
        await retry_unionid(session, redis, platform, app_id=app_id, identity=identity)
        customer = await session.get(Customer, identity.customer_id)
        assert customer is not None  # the identity's foreign key
        return customer
    unionid = await _fetch_unionid(redis, platform, app_id=app_id, openid=openid)
    return await customers.link_identity(
        session, channel=Channel.WECHAT_OA, app_id=app_id, openid=openid, unionid=unionid
    )


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
    taken = await customer_repo.get_by_unionid(session, unionid)
    if customer is not None and customer.unionid is None and taken is None:
        customer.unionid = unionid
    elif taken is not None and taken.id != identity.customer_id:
        # Merging two customers' records is a decision for a person, not for a push handler.
        log.warning(
            "customer %s on the official account is customer %s elsewhere; not merged", identity.customer_id, taken.id
        )


async def set_reachable(session: AsyncSession, *, app_id: str, openid: str, reachable: bool) -> ChannelIdentity | None:
    """Mark an openid (un)reachable: an unsubscribed user gets no customer-service messages."""
    identity = await customer_repo.get_identity(session, channel=Channel.WECHAT_OA, app_id=app_id, openid=openid)
    if identity is not None:
        identity.reachable = reachable
        identity.last_seen_at = utcnow()
    return identity


async def keep_pending(
    session: AsyncSession, message: Message, *, reason: str, status: str = PendingStatus.PENDING
) -> OaPendingMessage:
    """Record that ``message`` waits (or went elsewhere); once per message, later calls update it."""
    assert message.id is not None
    pending = await repository.get_pending(session, message.id)
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


def mark_delivered(pending: OaPendingMessage, status: str) -> None:
    pending.status = status
    pending.updated_at = pending.delivered_at = utcnow()
